"""Opening shard files safely: the HDF5 signature, the header and the arrays are checked before any read.

A damaged shard is a one-line error that names the file (and the sample, where a chunk is
damaged) instead of an HDF5 traceback, and no read is bounded only by what the file claims.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np

from dflowgen.data.shards import DROPPED_PREFIX, ShardEntry, ShardSetHeader, parse_shard_name, require_field
from dflowgen.errors import DflowgenError
from dflowgen.files import file_sha256


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError)


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
    index = require_field(attrs, "shard_index", int, 0, header.num_shards - 1)
    if parse_shard_name(path.name) not in (None, index):
        raise ValueError(f"the file holds shard {index}")
    planned = header.shard_samples(index)
    require_field(attrs, "first_sample", int, planned.start, planned.start)
    require_field(attrs, "num_planned", int, len(planned), len(planned))
    count = require_field(attrs, "num_samples", int, 0, len(planned))
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
                key.removeprefix(DROPPED_PREFIX): int(value)
                for key, value in shard.attrs.items()
                if key.startswith(DROPPED_PREFIX)
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
