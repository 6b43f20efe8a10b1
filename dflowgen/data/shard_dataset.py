"""A torch Dataset over a folder of dflowgen shards, read sample by sample."""

from __future__ import annotations

import bisect
import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch.utils.data import Dataset

from dflowgen.data.sample import FlowPair
from dflowgen.data.manifest import read_manifest
from dflowgen.data.shard_check import H5_ERRORS, h5_reason, open_shard, shard_files
from dflowgen.data.shards import ShardSetHeader
from dflowgen.errors import DflowgenError

# Open shard files kept per process; random access over many shards reopens the rest.
_MAX_OPEN_FILES = 16


def _shard_sizes(folder: Path) -> list[tuple[Path, int]]:
    """(path, sample count) of every complete shard in ``folder``, in shard order.

    Every shard is checked before use (:func:`open_shard`: its size against the manifest, its
    header against the set's (the first shard's without a manifest), its arrays' shapes), so a damaged
    one is named here, not mid-training.
    """
    manifest = read_manifest(folder)
    header = manifest.header if manifest else None
    listed = {entry.index: entry for entry in manifest.shards} if manifest else {}
    sizes = []
    for index, path in shard_files(folder).items():
        entry = listed.get(index)
        with open_shard(path, header, entry.bytes if entry else None) as shard:
            count = int(shard.attrs["num_samples"])
            header = header or ShardSetHeader.from_mapping(shard.attrs)
        if entry is not None and count != entry.num_samples:
            raise DflowgenError(f"shard {path} holds {count} samples, the manifest says {entry.num_samples}; "
                                f"run `dflowgen verify {folder}`")
        sizes.append((path, count))
    return sizes


def read_pair(shard: h5py.File, row: int) -> FlowPair:
    """Sample ``row`` of an open shard (reads one chunk of each array).

    ``occ`` is None for format-1 shards, which had none (their ``valid`` excludes occluded points).
    """
    occ = shard.get("occ")
    return FlowPair(
        img1=shard["img1"][row],
        img2=shard["img2"][row],
        flow=shard["flow"][row].astype(np.float32, copy=False),
        valid=shard["valid"][row].astype(bool),
        name=f"sample-{int(shard['meta/index'][row]):07d}",
        occ=None if occ is None else occ[row].astype(bool),
    )


class ShardDataset(Dataset):
    """The samples of every complete shard in ``folder`` as :class:`FlowPair` s.

    Reads one sample (one HDF5 chunk per array) per item; no shard is loaded whole.
    Files are opened lazily in the process that reads them and reopened after a fork,
    so the dataset works with ``DataLoader(num_workers > 0)``. Samples are ordered by
    shard, then by position in the shard (global index order for complete sets);
    ``name`` is ``sample-<global index>``. ``dflowgen verify`` tells whether the set is whole.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DflowgenError(f"shard folder not found: {self.folder}")
        sizes = _shard_sizes(self.folder)
        if not sizes:
            raise DflowgenError(f"no shards (shard-*.h5) in {self.folder}")
        self.shard_paths = [path for path, _ in sizes]
        self._starts = np.cumsum([0] + [count for _, count in sizes]).tolist()
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getstate__(self) -> dict[str, Any]:
        # Open HDF5 handles cannot be pickled (spawned workers) and must not be shared.
        return {**self.__dict__, "_files": OrderedDict()}

    def locate(self, index: int) -> tuple[int, int]:
        """(shard position, row in that shard) of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def _open(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():
            # A forked worker inherited the parent's handles: forget them, open its own.
            self._files = OrderedDict()
            self._pid = os.getpid()
        handle = self._files.get(shard)
        if handle is None:
            handle = h5py.File(self.shard_paths[shard], "r")
            self._files[shard] = handle
            if len(self._files) > _MAX_OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(shard)
        return handle

    @contextlib.contextmanager
    def _reading(self, index: int) -> Iterator[tuple[h5py.File, int]]:
        """(open shard, row) of sample ``index``; a damaged chunk is a one-line error naming both."""
        shard, row = self.locate(index)
        try:
            yield self._open(shard), row
        except H5_ERRORS as error:
            raise DflowgenError(f"shard {self.shard_paths[shard]}: sample {row} is unreadable ({h5_reason(error)}); "
                                f"run `dflowgen verify {self.folder}`") from None

    def __getitem__(self, index: int) -> FlowPair:
        with self._reading(index) as (shard, row):
            return read_pair(shard, row)

    def params(self, index: int) -> dict[str, np.ndarray]:
        """The scene parameters θ of sample ``index`` (leading dim 1), for ``SceneParams.from_numpy``."""
        with self._reading(index) as (shard, row):
            group = shard.get("params")
            if group is None:
                raise DflowgenError(
                    f"{shard.filename} holds no scene parameters (generated with generate.store_params = false); "
                    "re-draw them with dflowgen.render.sample_params from the stored recipe, seed and meta/index"
                )
            return {name: group[name][row : row + 1] for name in group}

    def meta(self, index: int) -> dict[str, Any]:
        """The per-sample metadata columns of sample ``index`` as Python scalars."""
        with self._reading(index) as (shard, row):
            group = shard["meta"]
            return {name: group[name][row].tolist() for name in group}
