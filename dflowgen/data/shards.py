"""HDF5 shards: a generated set stored as numbered files plus a JSON manifest.

A set of ``N`` samples with shard size ``K`` is split into shards
``shard-00000.h5``, ``shard-00001.h5``, ...; shard ``k`` holds the samples with global
indices ``[k·K, min((k+1)·K, N))`` (fewer when samples were dropped). Each shard is
written under a hidden temporary name and renamed when complete, so a file with a
shard's name is always whole. ``manifest.json`` describes the set (recipe, seed, sizes)
and lists the complete shards with their sample counts, byte sizes and sha256.

Layout of one shard (``n`` samples of H×W; plain h5py reads it):

- ``img1``, ``img2``: n×H×W×3 uint8; ``flow``: n×H×W×2 float32 or float16 (img1→img2,
  pixels); ``valid``: n×H×W uint8 (1 where the flow is defined); ``occ``: n×H×W uint8 (1
  where the point is hidden in img2 or leaves it). One chunk per sample, gzip (level 1)
  with shuffle.

Format versions: 2 labels every pixel a layer holds (``valid`` ≈ all, ``occ`` says which
points img2 does not show). Version 1 had no ``occ`` and marked occluded and outgoing
points invalid; such shards still read, with that meaning and ``occ`` None.
- ``params/<name>``: the sample's scene parameters θ (``SceneParams.to_numpy()``).
- ``meta/<name>``: per-sample columns: ``index`` (global sample index), ``seed`` (its
  generator's seed), ``effect_<name>`` (1 where the effect was applied), ...
- root attributes: the set header (:class:`ShardSetHeader`) plus ``shard_index``,
  ``first_sample``, ``num_planned``, ``num_samples`` and ``dropped_<reason>`` (samples an
  optimised set did not keep: ``nonfinite`` loss, or target loss over the ``threshold``).

Files are written byte-for-byte deterministically (fixed HDF5 format version, no
timestamps, no creation-order tracking): the same samples give the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import h5py
import numpy as np

from dflowgen import __version__
from dflowgen.files import file_sha256

FORMAT_VERSION = 2
# Bounds a reader checks before it trusts a manifest or shard: every loop over shards is at
# most MAX_SHARDS long, and no header can make a reader allocate more than its real data.
MAX_SHARDS = 1_000_000
MAX_SAMPLES = 1 << 32
MAX_SIDE = 1 << 14
# What h5py raises on damaged files: the C library's errors surface as any of these.
_SHARD_NAME = re.compile(r"^shard-(\d{5,})\.h5$")
# The HDF5 file format is pinned (oldest readers, 1.10 features) so that a newer HDF5
# library writes the same bytes; together with track_times=False this makes shards reproducible.
_LIBVER = ("earliest", "v110")
# The images, flow, valid and occlusion masks get one compressed chunk per sample, so a
# reader touches only the samples it reads. gzip level 1 with byte shuffling: lzf is faster but
# its output depends on uninitialised memory, which would break reproducible shards.
_SAMPLE_ARRAYS = ("img1", "img2", "flow", "valid", "occ")
_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
# Other per-sample arrays (θ) at least this large get an uncompressed chunk per sample
# (the largest, texture noise, is random and does not compress); smaller columns
# (indices, flags, scalars) are one uncompressed chunk per shard.
_PER_SAMPLE_CHUNK_BYTES = 4096
DROPPED_PREFIX = "dropped_"


def shard_name(index: int) -> str:
    """The file name of shard ``index`` (``shard-00003.h5``)."""
    return f"shard-{index:05d}.h5"


def parse_shard_name(name: str) -> int | None:
    """The shard index in a shard file name, or None for any other name."""
    match = _SHARD_NAME.match(name)
    return int(match.group(1)) if match else None


@dataclasses.dataclass(frozen=True)
class ShardSetHeader:
    """What a set is: stored in the manifest and as root attributes of every shard.

    ``recipe`` is the complete resolved recipe as TOML (``recipes.recipe_to_toml``); the
    other fields repeat the parts of it a reader needs most, so plain h5py users do not
    have to parse TOML. ``total_samples`` counts the samples planned for the whole set.
    """

    recipe: str
    seed: int
    total_samples: int
    shard_size: int
    width: int
    height: int
    flow_dtype: Literal["float32", "float16"]
    asset_fingerprint: str
    format_version: int = FORMAT_VERSION
    dflowgen_version: str = __version__

    @property
    def num_shards(self) -> int:
        return -(-self.total_samples // self.shard_size)

    def content_differences(self, other: ShardSetHeader) -> list[str]:
        """The fields that make the samples of ``other``'s set differ from this one's ("width: 64 != 32").

        The recipe text is left out: it also holds settings that change how a set is made, not what it holds,
        and a resumed run records its own (see ``generate.header_differences`` for the recipe).
        """
        names = ("seed", "total_samples", "shard_size", "width", "height", "flow_dtype", "asset_fingerprint",
                 "format_version")
        return [f"{name}: {getattr(self, name)} != {getattr(other, name)}"
                for name in names if getattr(self, name) != getattr(other, name)]

    def shard_samples(self, shard_index: int) -> range:
        """Global indices of the samples planned for shard ``shard_index``."""
        start = shard_index * self.shard_size
        return range(start, min(start + self.shard_size, self.total_samples))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ShardSetHeader:
        """A header from a manifest dict or shard attributes (extra keys ignored), checked field by field.

        Raises:
            ValueError: a field is missing, of the wrong type or out of bounds (the message names it).
        """
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                raise ValueError(f"no '{field.name}' field")
            value = data[field.name]
            values[field.name] = value.item() if isinstance(value, np.generic) else value
        return cls(**values)

    def __post_init__(self) -> None:
        """Raise ValueError, naming the field, for a wrong type or a value out of bounds (readers loop and
        allocate by these numbers)."""
        values = vars(self)
        for name in ("recipe", "asset_fingerprint", "dflowgen_version"):
            require_field(values, name, str)
        for name, (lo, hi) in _HEADER_BOUNDS.items():
            require_field(values, name, int, lo, hi)
        if self.flow_dtype not in ("float32", "float16"):
            raise ValueError(f"flow_dtype must be float32 or float16, got {self.flow_dtype!r:.40}")
        if self.num_shards > MAX_SHARDS:
            raise ValueError(f"{self.total_samples} samples in shards of {self.shard_size} make "
                             f"{self.num_shards} shards (at most {MAX_SHARDS})")


_HEADER_BOUNDS = {
    "seed": (-(2**63), 2**63 - 1),
    "total_samples": (1, MAX_SAMPLES),
    "shard_size": (1, MAX_SAMPLES),
    "width": (1, MAX_SIDE),
    "height": (1, MAX_SIDE),
    "format_version": (1, FORMAT_VERSION),
}


def require_field(values: Mapping[str, Any], name: str, kind: type, lo: int | None = None, hi: int | None = None) -> Any:
    """``values[name]`` when it is a ``kind`` (an int within [lo, hi]), else a ValueError naming the field."""
    value = values[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"'{name}' must be {'an integer' if kind is int else 'a string'}, got {value!r:.40}")
    if lo is not None and not lo <= value <= hi:
        raise ValueError(f"'{name}' must be in [{lo}, {hi}], got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One complete shard as the manifest lists it."""

    file: str
    index: int
    first_sample: int
    num_planned: int
    num_samples: int
    bytes: int
    sha256: str
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    """Samples rendered but not written, by reason (``nonfinite``, ``threshold``)."""

    @classmethod
    def from_mapping(cls, data: Any, header: ShardSetHeader) -> ShardEntry:
        """An entry of the manifest's ``shards`` list, checked against ``header``'s plan.

        Raises:
            ValueError: a field is missing, of the wrong type, or disagrees with the plan.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a shard entry must be an object, got {data!r:.40}")
        names = {field.name for field in dataclasses.fields(cls)}
        if unknown := data.keys() - names:
            raise ValueError(f"unknown shard entry field(s) {sorted(unknown)}")
        if missing := names - data.keys() - {"dropped"}:
            raise ValueError(f"shard entry without {sorted(missing)}")
        for name in ("file", "sha256"):
            require_field(data, name, str)
        index = require_field(data, "index", int, 0, header.num_shards - 1)
        planned = header.shard_samples(index)
        bounds = {"first_sample": (planned.start, planned.start), "num_planned": (len(planned), len(planned)),
                  "num_samples": (0, len(planned)), "bytes": (0, 2**63 - 1)}
        for name, (lo, hi) in bounds.items():
            require_field(data, name, int, lo, hi)
        dropped = data.get("dropped", {})
        if not isinstance(dropped, dict) or not all(
            isinstance(count, int) and not isinstance(count, bool) for count in dropped.values()
        ):
            raise ValueError(f"shard {index}: 'dropped' must map reasons to counts, got {dropped!r:.40}")
        if data["file"] != shard_name(index):
            raise ValueError(f"shard {index} is listed as file {data['file']!r:.40}, expected {shard_name(index)}")
        return cls(**data)


class SampleBatch(NamedTuple):
    """B samples ready to store (numpy, file conventions).

    img1, img2: B×H×W×3 uint8. flow: B×H×W×2 float. valid, occ: B×H×W uint8/bool.
    params: θ arrays with leading dim B. meta: per-sample columns with leading dim B.
    """

    img1: np.ndarray
    img2: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    occ: np.ndarray
    params: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]


class ShardWriter:
    """Writes one shard batch by batch into a hidden temporary file; ``commit`` renames it.

    Use as a context manager: leaving the block by an exception (Ctrl-C included)
    removes the temporary file, so only complete shards are ever visible.
    """

    def __init__(self, folder: Path, header: ShardSetHeader, shard_index: int) -> None:
        self.header = header
        self.shard_index = shard_index
        self.samples = header.shard_samples(shard_index)
        self.path = Path(folder) / shard_name(shard_index)
        self.temp_path = self.path.with_name(f".{self.path.name}.tmp")
        self._count = 0
        self._file = h5py.File(self.temp_path, "w", libver=_LIBVER, track_order=False)
        for key, value in dataclasses.asdict(header).items():
            self._file.attrs[key] = value
        self._file.attrs["shard_index"] = shard_index
        self._file.attrs["first_sample"] = self.samples.start
        self._file.attrs["num_planned"] = len(self.samples)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is not None:
            self.abort()

    def append(self, batch: SampleBatch) -> None:
        """Store B more samples after those already written."""
        size = len(batch.img1)
        if self._count + size > len(self.samples):
            raise ValueError(f"shard {self.shard_index} holds {len(self.samples)} samples, got {self._count + size}")
        columns = {
            "img1": batch.img1,
            "img2": batch.img2,
            "flow": batch.flow.astype(self.header.flow_dtype, copy=False),
            "valid": batch.valid.astype(np.uint8, copy=False),
            "occ": batch.occ.astype(np.uint8, copy=False),
            **{f"params/{name}": value for name, value in batch.params.items()},
            **{f"meta/{name}": value for name, value in batch.meta.items()},
        }
        for name, values in columns.items():
            if len(values) != size:
                raise ValueError(f"column {name} has {len(values)} samples, expected {size}")
            dataset = self._file.get(name)
            if dataset is None:
                dataset = self._create(name, values)
            dataset[self._count : self._count + size] = values
        self._count += size

    def _create(self, name: str, values: np.ndarray) -> h5py.Dataset:
        capacity = len(self.samples)
        sample_shape = values.shape[1:]
        sample_bytes = values.itemsize * int(np.prod(sample_shape, dtype=np.int64))
        per_sample = name in _SAMPLE_ARRAYS or sample_bytes >= _PER_SAMPLE_CHUNK_BYTES
        return self._file.create_dataset(
            name,
            shape=(capacity, *sample_shape),
            maxshape=(capacity, *sample_shape),
            dtype=values.dtype,
            chunks=(1 if per_sample else capacity, *sample_shape),
            track_times=False,
            **(_COMPRESSION if name in _SAMPLE_ARRAYS else {}),
        )

    def commit(self, dropped: Mapping[str, int] | None = None) -> ShardEntry:
        """Close the file, rename it to its shard name, and describe it for the manifest.

        Fewer samples than planned shrink every dataset to those written; ``dropped``
        counts the missing ones by reason.
        """
        dropped = {reason: int(count) for reason, count in (dropped or {}).items() if count}
        if self._count + sum(dropped.values()) != len(self.samples):
            raise ValueError(
                f"shard {self.shard_index}: {self._count} written + {sum(dropped.values())} dropped "
                f"!= {len(self.samples)} planned"
            )
        if self._count < len(self.samples):
            for name in _dataset_names(self._file):
                self._file[name].resize(self._count, axis=0)
        self._file.attrs["num_samples"] = self._count
        for reason, count in dropped.items():
            self._file.attrs[f"{DROPPED_PREFIX}{reason}"] = count
        self._file.close()
        with open(self.temp_path, "rb+") as stream:
            os.fsync(stream.fileno())
        entry = ShardEntry(
            file=self.path.name,
            index=self.shard_index,
            first_sample=self.samples.start,
            num_planned=len(self.samples),
            num_samples=self._count,
            bytes=self.temp_path.stat().st_size,
            sha256=file_sha256(self.temp_path),
            dropped=dropped,
        )
        os.replace(self.temp_path, self.path)
        return entry

    def abort(self) -> None:
        """Drop the unfinished shard."""
        if self._file.id.valid:
            self._file.close()
        self.temp_path.unlink(missing_ok=True)


def _dataset_names(group: h5py.Group) -> list[str]:
    """Paths of every dataset under ``group``."""
    names: list[str] = []
    group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


