"""The life of a set's folder: which shards a process owns, and refusing, resuming or replacing what is there.

A folder holds one set (shards and ``manifest.json``) or a mix of sets (``mix.json`` and a
sub-folder per part). Starting a set in a folder either resumes the set already there,
refuses it (its content would differ), or, when asked, deletes it first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from dflowgen.data.preview import PREVIEW_FOLDER
from dflowgen.data.manifest import (
    MANIFEST_NAME,
    manifest_lock,
    read_manifest,
    read_mix,
    remove_damaged_shards_locked,
    sync_manifest_locked,
)
from dflowgen.data.shard_check import read_shard_header, shard_files
from dflowgen.data.shards import ShardSetHeader, parse_shard_name
from dflowgen.data.statistics import PLOT_NAME
from dflowgen.errors import DflowgenError, option
from dflowgen.files import check_output_path, removed_on_error

Differences = Callable[[ShardSetHeader, ShardSetHeader], list[str]]


@dataclasses.dataclass(frozen=True)
class ShardSplit:
    """The shards one process of ``count`` writes: ``index``, ``index + count``, ...

    Processes with indices 0..count-1 cover every shard exactly once.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise DflowgenError(f"shard split {self.index} of {self.count}: need 0 <= {option('shard_index')} < {option('num_shards')}")

    def shards(self, num_shards: int) -> range:
        return range(self.index, num_shards, self.count)

    @classmethod
    def resolve(cls, index: int | None, count: int | None, environ: Mapping[str, str] = os.environ) -> ShardSplit:
        """The split from ``--shard-index/--num-shards``, else torchrun's RANK/WORLD_SIZE, else one process."""
        if (index is None) != (count is None):
            raise DflowgenError(f"{option('shard_index')} and {option('num_shards')} must be given together")
        if index is not None:
            return cls(index, count)
        if "RANK" in environ:
            try:
                return cls(int(environ["RANK"]), int(environ.get("WORLD_SIZE", "1")))
            except ValueError:
                raise DflowgenError(
                    f"RANK={environ['RANK']!r} / WORLD_SIZE={environ.get('WORLD_SIZE')!r} must be integers"
                ) from None
        return cls()


def existing_header(folder: Path) -> ShardSetHeader | None:
    """The header of the set already in ``folder`` (manifest, else its first shard), or None."""
    if not folder.is_dir():
        return None
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest.header
    shards = shard_files(folder)
    return read_shard_header(next(iter(shards.values()))) if shards else None


def remove_set(folder: Path) -> None:
    """Delete the files of a generated set in ``folder`` (shards, manifest, previews, plot), nothing else."""
    for path in folder.iterdir():
        stem = path.name.removeprefix(".").removesuffix(".tmp")
        if parse_shard_name(stem) is not None or stem in (MANIFEST_NAME, PLOT_NAME):
            path.unlink()
    shutil.rmtree(folder / PREVIEW_FOLDER, ignore_errors=True)


def prepare_output(out: Path, header: ShardSetHeader, overwrite: bool, differences: Differences,
                   verify_existing: bool = False) -> int:
    """Make ``out`` ready for ``header``'s set: create it, or check (or replace) the set in it; returns the
    number of damaged shards removed.

    ``differences(old, new)`` lists what makes the set in the folder differ in content
    from the new one (the caller knows which recipe keys matter); an empty list resumes.
    Shards of a matching set are kept only when they pass :func:`remove_damaged_shards_locked`
    (size and header; the sha256 too with ``verify_existing`` or for a small set); the others
    are removed, to be written again. The check and the replacement hold the manifest lock, so
    the processes of a split run starting together replace an old set once. A refused or
    failed call leaves no folder it created behind.
    """
    check_output_path(out)
    try:
        with removed_on_error(out):
            out.mkdir(parents=True, exist_ok=True)
            with manifest_lock(out):
                _replace_if_different(out, header, overwrite, differences)
                removed = remove_damaged_shards_locked(out, header, hash_all=verify_existing)
                sync_manifest_locked(out, header)
    except OSError as error:
        raise DflowgenError(f"cannot write to output folder {out}: {error.strerror or error}") from None
    return len(removed)


def _replace_if_different(out: Path, header: ShardSetHeader, overwrite: bool, differences: Differences) -> None:
    """Refuse, or (with ``overwrite``) delete, a set in ``out`` whose contents would differ from ``header``'s."""
    try:
        old = existing_header(out)
        changes = differences(old, header) if old else []
    except DflowgenError as error:
        if not overwrite:
            raise DflowgenError(f"{error} (pass {option('overwrite', True)} to replace the set in {out})") from None
        changes = [str(error)]
    if changes and not overwrite:
        shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
        raise DflowgenError(f"{out} holds a set made with different settings ({shown}); pass {option('overwrite', True)} to replace it")
    if changes:
        remove_set(out)


def replace_if_other_mix(out: Path, parts: Mapping[str, int], overwrite: bool) -> None:
    """Refuse, or (with ``overwrite``) delete, a single set or a mix of other parts in ``out``."""
    old_parts = read_mix(out)
    single = old_parts is None and (shard_files(out) or (out / MANIFEST_NAME).exists())
    stale = [] if old_parts is None else [name for name in old_parts if old_parts[name] != parts.get(name)]
    if not single and not stale:
        return
    if not overwrite:
        what = "a single set" if single else f"a mix with other parts ({', '.join(stale)})"
        raise DflowgenError(f"{out} holds {what}; pass {option('overwrite', True)} to replace it")
    if single:
        remove_set(out)
    if single:
        remove_set(out)
    for name in stale:
        shutil.rmtree(out / name, ignore_errors=True)
