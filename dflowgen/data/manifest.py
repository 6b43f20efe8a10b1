"""A set's manifest: ``manifest.json`` (the header and the complete shards), its lock, mixes, and verification.

Processes that write shards of one set record them in the manifest under a file lock, so a
split run ends with one manifest listing every shard. The manifest is checked field by field
before use. A mix (``mix.json``) names the sets that make up a mixed set. :func:`verify_shards`
checks a set against its manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

from tqdm import tqdm

from dflowgen.data.shard_check import open_shard, shard_entry_from_file, shard_files
from dflowgen.data.shards import ShardEntry, ShardSetHeader, shard_name
from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_write_bytes, file_sha256


MANIFEST_NAME = "manifest.json"


_MAX_MANIFEST_BYTES = 256 << 20


_LOCK_NAME = ".manifest.lock"


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
