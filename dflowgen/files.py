"""File helpers shared by every writer: content hashes and atomic writes (nothing half-written is ever visible)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

_HASH_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and an atomic rename."""
    temp_path = path.with_name(f".{path.name}.tmp")
    with open(temp_path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temp_path, path)


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``; a failed write leaves nothing behind.

    For writers that only take a file name (flow files, PNG encoders). The temporary name keeps
    ``path``'s suffix, since some encoders pick the format from it.
    """
    temp_path = path.with_name(f".tmp-{path.name}")
    try:
        write(temp_path)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
