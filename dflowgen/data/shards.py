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

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import h5py
import numpy as np
from tqdm import tqdm

from dflowgen import __version__
from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_write_bytes, file_sha256

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
# Bounds a reader checks before it trusts a manifest or shard: every loop over shards is at
# most MAX_SHARDS long, and no header can make a reader allocate more than its real data.
MAX_SHARDS = 1_000_000
MAX_SAMPLES = 1 << 32
MAX_SIDE = 1 << 14
_MAX_MANIFEST_BYTES = 256 << 20
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What h5py raises on damaged files: the C library's errors surface as any of these.
H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError)
_LOCK_NAME = ".manifest.lock"
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
_DROPPED_PREFIX = "dropped_"


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
            _require(values, name, str)
        for name, (lo, hi) in _HEADER_BOUNDS.items():
            _require(values, name, int, lo, hi)
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


def _require(values: Mapping[str, Any], name: str, kind: type, lo: int | None = None, hi: int | None = None) -> Any:
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
            _require(data, name, str)
        index = _require(data, "index", int, 0, header.num_shards - 1)
        planned = header.shard_samples(index)
        bounds = {"first_sample": (planned.start, planned.start), "num_planned": (len(planned), len(planned)),
                  "num_samples": (0, len(planned)), "bytes": (0, 2**63 - 1)}
        for name, (lo, hi) in bounds.items():
            _require(data, name, int, lo, hi)
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
            self._file.attrs[f"{_DROPPED_PREFIX}{reason}"] = count
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


def h5_reason(error: BaseException) -> str:
    """An h5py error as one short line (HDF5's messages can span lines)."""
    return " ".join(str(error).split())[:200] or type(error).__name__


def open_shard(path: Path, header: ShardSetHeader | None = None, expected_bytes: int | None = None) -> h5py.File:
    """Open shard ``path`` for reading, after checking everything a reader relies on.

    Checks, cheapest first: the size (``expected_bytes``, from the manifest), the HDF5
    signature, the set header in the root attributes (equal to ``header`` when given), the
    shard's place in the set, and the shapes and types of its sample arrays. So a reader
    never decodes a truncated or foreign file, and a damaged header cannot make it loop
    over or allocate more than the file holds.

    Raises:
        DflowgenError: naming the file and what is wrong (and how to find every damaged shard).
    """
    path = Path(path)
    hint = f"run `dflowgen verify {path.parent}`"
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            signature = stream.read(len(HDF5_SIGNATURE))
    except OSError as error:
        raise DflowgenError(f"cannot read shard {path}: {error.strerror}") from None
    if expected_bytes is not None and size != expected_bytes:
        what = "truncated" if size < expected_bytes else "damaged"
        raise DflowgenError(f"shard {path} is {what}: {size} bytes, the manifest says {expected_bytes}; {hint}")
    if signature != HDF5_SIGNATURE:
        raise DflowgenError(f"shard {path} is not an HDF5 file (bad signature); {hint}")
    with contextlib.ExitStack() as opened:  # closes the file unless every check passes
        try:
            shard = opened.enter_context(h5py.File(path, "r"))
            _check_shard(shard, path, header)
        except H5_ERRORS as error:
            raise DflowgenError(f"shard {path} is damaged: {h5_reason(error)}; {hint}") from None
        opened.pop_all()
    return shard


def _check_shard(shard: h5py.File, path: Path, expected: ShardSetHeader | None) -> None:
    """Raise ValueError unless ``shard``'s header, place in the set and arrays are consistent."""
    header = ShardSetHeader.from_mapping(shard.attrs)
    if expected is not None and (different := header.content_differences(expected)):
        raise ValueError(f"it belongs to another set ({different[0]})")
    attrs = {name: shard.attrs.get(name) for name in ("shard_index", "first_sample", "num_planned", "num_samples")}
    attrs = {name: value.item() if isinstance(value, np.generic) else value for name, value in attrs.items()}
    index = _require(attrs, "shard_index", int, 0, header.num_shards - 1)
    if parse_shard_name(path.name) not in (None, index):
        raise ValueError(f"the file holds shard {index}")
    planned = header.shard_samples(index)
    _require(attrs, "first_sample", int, planned.start, planned.start)
    _require(attrs, "num_planned", int, len(planned), len(planned))
    count = _require(attrs, "num_samples", int, 0, len(planned))
    if count == 0:  # every sample was dropped: the shard holds no datasets
        return
    size = (header.height, header.width)
    shapes = {"img1": (*size, 3), "img2": (*size, 3), "flow": (*size, 2), "valid": size, "occ": size, "meta/index": ()}
    dtypes = {"img1": ("uint8",), "img2": ("uint8",), "flow": ("float32", "float16"), "valid": ("uint8", "bool"),
              "occ": ("uint8", "bool"), "meta/index": ("int64",)}
    for name, shape in shapes.items():
        dataset = shard.get(name)
        if dataset is None and name == "occ" and header.format_version == 1:
            continue
        if not isinstance(dataset, h5py.Dataset):
            raise ValueError(f"no '{name}' array")
        if dataset.shape != (count, *shape) or dataset.dtype.name not in dtypes[name]:
            raise ValueError(f"'{name}' is {dataset.dtype.name} {dataset.shape}, expected {(count, *shape)}")


def read_shard_header(path: Path) -> ShardSetHeader:
    """The set header stored in a shard's root attributes (after :func:`open_shard`'s checks)."""
    with open_shard(path) as shard:
        return ShardSetHeader.from_mapping(shard.attrs)


def shard_entry_from_file(path: Path, header: ShardSetHeader | None = None) -> ShardEntry:
    """Describe a complete shard that the manifest does not list (checks it, then hashes the file)."""
    with open_shard(path, header) as shard:
        attrs = {key: int(shard.attrs[key]) for key in ("shard_index", "first_sample", "num_planned", "num_samples")}
        try:
            dropped = {
                key.removeprefix(_DROPPED_PREFIX): int(value)
                for key, value in shard.attrs.items()
                if key.startswith(_DROPPED_PREFIX)
            }
        except H5_ERRORS as error:
            raise DflowgenError(f"shard {path} is damaged: {h5_reason(error)}") from None
    return ShardEntry(
        file=path.name,
        index=attrs["shard_index"],
        first_sample=attrs["first_sample"],
        num_planned=attrs["num_planned"],
        num_samples=attrs["num_samples"],
        bytes=path.stat().st_size,
        sha256=file_sha256(path),
        dropped=dict(sorted(dropped.items())),
    )


def shard_files(folder: Path) -> dict[int, Path]:
    """The complete shard files in ``folder`` by index (temporary files excluded)."""
    found = {}
    for path in Path(folder).iterdir():
        index = parse_shard_name(path.name)
        if index is not None:
            found[index] = path
    return dict(sorted(found.items()))


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The set header and its complete shards, as stored in ``manifest.json``."""

    header: ShardSetHeader
    shards: tuple[ShardEntry, ...] = ()

    @property
    def samples_written(self) -> int:
        return sum(entry.num_samples for entry in self.shards)

    @property
    def samples_dropped(self) -> int:
        """Samples of complete shards that were rendered but not kept."""
        return sum(entry.num_planned - entry.num_samples for entry in self.shards)

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """:attr:`samples_dropped` split by reason."""
        totals: dict[str, int] = {}
        for entry in self.shards:
            for reason, count in entry.dropped.items():
                totals[reason] = totals.get(reason, 0) + count
        return dict(sorted(totals.items()))

    @property
    def samples_not_written(self) -> int:
        """Samples planned for shards that are not complete yet."""
        return self.header.total_samples - sum(entry.num_planned for entry in self.shards)

    @property
    def complete(self) -> bool:
        return len(self.shards) == self.header.num_shards

    def with_shards(self, entries: Mapping[int, ShardEntry]) -> Manifest:
        return dataclasses.replace(self, shards=tuple(entries[index] for index in sorted(entries)))

    def to_json(self) -> str:
        data = {
            **dataclasses.asdict(self.header),
            "num_shards": self.header.num_shards,
            "samples_written": self.samples_written,
            "samples_dropped": self.samples_dropped,
            "samples_dropped_by_reason": self.dropped_by_reason,
            "samples_not_written": self.samples_not_written,
            "complete": self.complete,
            "shards": [dataclasses.asdict(entry) for entry in self.shards],
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """A manifest from its JSON text, every field checked.

        Raises:
            ValueError: not JSON, or a field is missing, mistyped, out of bounds or listed twice.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        header = ShardSetHeader.from_mapping(data)
        shards = data.get("shards")
        if not isinstance(shards, list) or len(shards) > header.num_shards:
            raise ValueError(f"'shards' must be a list of at most {header.num_shards} entries")
        entries = {}
        for item in shards:
            entry = ShardEntry.from_mapping(item, header)
            if entry.index in entries:
                raise ValueError(f"shard {entry.index} is listed twice")
            entries[entry.index] = entry
        return cls(header).with_shards(entries)


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of ``folder``, or None when there is none.

    Raises:
        DflowgenError: the manifest is unreadable, too large, not UTF-8 JSON, or any field is wrong.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise DflowgenError(f"{path} is not a dflowgen manifest: larger than {_MAX_MANIFEST_BYTES >> 20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DflowgenError(f"cannot read {path}: {error.strerror}") from None
    try:
        return Manifest.from_json(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = " ".join(str(error).split())[:200]
        raise DflowgenError(f"{path} is not a dflowgen manifest: {reason}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically."""
    atomic_write_bytes(Path(folder) / MANIFEST_NAME, manifest.to_json().encode())


@contextlib.contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock for read-modify-write of the manifest by concurrent processes.

    An advisory ``flock`` on a hidden lock file: it serialises the processes of a split
    run on one machine and on file systems that support locks (local disks, NFSv4).
    Not re-entrant: code holding it calls the ``*_locked`` variants.
    """
    with open(Path(folder) / _LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sync_manifest(folder: Path, header: ShardSetHeader) -> Manifest:
    """Make the manifest list exactly the complete shards present, and return it.

    Shards present but unlisted (a process killed between renaming a shard and
    recording it) are hashed and added; listed shards whose file is gone are dropped.
    The header is ``header`` (the caller has checked that it matches the folder's).
    """
    with manifest_lock(folder):
        return sync_manifest_locked(folder, header)


def sync_manifest_locked(folder: Path, header: ShardSetHeader) -> Manifest:
    """:func:`sync_manifest` for a caller already holding :func:`manifest_lock`."""
    folder = Path(folder)
    existing = read_manifest(folder)
    listed = {entry.index: entry for entry in existing.shards} if existing else {}
    present = {index: path for index, path in shard_files(folder).items() if index < header.num_shards}
    entries = {index: listed.get(index) or shard_entry_from_file(path, header) for index, path in present.items()}
    manifest = Manifest(header).with_shards(entries)
    write_manifest(folder, manifest)
    return manifest


FULL_HASH_BYTES = 1 << 30
"""Sets whose listed shards hold at most this many bytes have every shard hashed before a resumed run keeps it."""


def remove_damaged_shards_locked(folder: Path, header: ShardSetHeader, hash_all: bool = False) -> list[ShardProblem]:
    """Delete the shards of ``folder`` a resumed run of ``header``'s set must not keep, and say why.

    Every shard is checked as :func:`open_shard` does (size, signature, header, arrays); listed
    shards are also hashed when ``hash_all`` or when the set is small (:data:`FULL_HASH_BYTES`).
    The caller holds :func:`manifest_lock` and then syncs the manifest (which forgets the removed).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = {entry.index: entry for entry in manifest.shards} if manifest else {}
    hash_all = hash_all or sum(entry.bytes for entry in listed.values()) <= FULL_HASH_BYTES
    removed = []
    for index, path in shard_files(folder).items():
        if index >= header.num_shards:
            continue
        entry = listed.get(index)
        try:
            with open_shard(path, header, entry.bytes if entry else None):
                pass
            if entry is not None and hash_all and file_sha256(path) != entry.sha256:
                raise DflowgenError(f"shard {path}: sha256 differs from the manifest")
        except DflowgenError as error:
            path.unlink()
            removed.append(ShardProblem(path.name, "corrupt", str(error)))
    return removed


def record_shard(folder: Path, entry: ShardEntry) -> None:
    """Add a just-committed shard to the manifest (safe against concurrent writers)."""
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        if manifest is None:
            raise DflowgenError(f"{Path(folder) / MANIFEST_NAME} disappeared while shards were being written")
        entries = {existing.index: existing for existing in manifest.shards}
        entries[entry.index] = entry
        write_manifest(folder, manifest.with_shards(entries))


class ShardProblem(NamedTuple):
    """Something wrong with one file of a set, as :func:`verify_shards` reports it."""

    file: str
    kind: Literal["missing", "truncated", "corrupt", "unlisted", "unexpected", "manifest"]
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind} ({self.detail})"


def verify_shards(folder: str | Path, quiet: bool = True) -> list[ShardProblem]:
    """Recompute every shard's checksum and list what is missing, truncated or corrupt.

    An empty list means the set is whole: every planned shard is present, listed in
    the manifest, and has its recorded size and sha256. Shows a progress bar unless
    ``quiet`` (or not on a terminal).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DflowgenError(f"shard folder not found: {folder}")
    manifest = read_manifest(folder)
    if manifest is None:
        return [ShardProblem(MANIFEST_NAME, "missing", "not a complete dflowgen set, or the manifest was deleted")]
    listed = {entry.index: entry for entry in manifest.shards}
    present = shard_files(folder)
    problems = []
    for index in tqdm(range(manifest.header.num_shards), desc="verify", unit="shard", disable=True if quiet else None):
        name = shard_name(index)
        entry, path = listed.get(index), present.get(index)
        if path is None:
            problems.append(ShardProblem(name, "missing", "not generated yet, or deleted"))
        elif entry is None:
            problems.append(ShardProblem(name, "unlisted", "present but not in the manifest; run generate again"))
        elif (size := path.stat().st_size) < entry.bytes:
            problems.append(ShardProblem(name, "truncated", f"{size} of {entry.bytes} bytes"))
        elif size != entry.bytes or file_sha256(path) != entry.sha256:
            problems.append(ShardProblem(name, "corrupt", "sha256 differs from the manifest"))
    for index in sorted(present.keys() - range(manifest.header.num_shards)):
        problems.append(ShardProblem(shard_name(index), "unexpected", f"the set has {manifest.header.num_shards} shards"))
    return problems


MIX_NAME = "mix.json"
"""A folder of several sets made from different recipes (``generate --recipe A --recipe B``) lists them here."""


def write_mix(folder: Path, parts: Mapping[str, int]) -> None:
    """Record that ``folder`` holds the sets ``parts`` (sub-folder name → planned samples)."""
    atomic_write_bytes(Path(folder) / MIX_NAME, (json.dumps({"parts": dict(parts)}, indent=2) + "\n").encode())


def read_mix(folder: Path) -> dict[str, int] | None:
    """The parts of a mixed set in ``folder`` (sub-folder name → planned samples), or None if it is not one."""
    path = Path(folder) / MIX_NAME
    try:
        data = json.loads(path.read_text())
        return {str(name): int(count) for name, count in data["parts"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DflowgenError(f"{path} is not a dflowgen mix description: {error}") from None


def set_folders(folder: str | Path) -> list[Path]:
    """The set folders behind ``folder``: its parts when it is a mix, else ``folder`` itself."""
    folder = Path(folder)
    parts = read_mix(folder)
    return [folder / name for name in parts] if parts is not None else [folder]
