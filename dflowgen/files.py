"""File helpers shared by every writer: content hashes, atomic writes and output folders (nothing half-written
or left over from a refused command is ever visible)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from dflowgen.errors import DflowgenError

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


def check_output_path(out: Path) -> None:
    """Fail early, before any work, when ``out`` cannot be a folder we write into (nothing is created)."""
    nearest = next(path for path in [out, *out.parents] if path.exists())
    if not nearest.is_dir():
        what = "exists and is not a folder" if nearest == out else f"cannot be created: {nearest} is not a folder"
        raise DflowgenError(f"output folder {out} {what}")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise DflowgenError(f"output folder {out} is not writable ({nearest}: permission denied)")


@contextlib.contextmanager
def removed_on_error(out: Path, errors: tuple[type[BaseException], ...] = (BaseException,),
                     keep: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Remove the folders of ``out`` that did not exist before the block when it raises one of ``errors``.

    Wrap the creation of an output folder and the checks that follow it, so a refused command
    leaves no empty (or half-set-up) folder behind; ``keep()`` spares one that holds real results.
    """
    created = next((path for path in reversed([out, *out.parents]) if not path.exists()), None)
    try:
        yield
    except errors:
        if created is not None and not keep():
            shutil.rmtree(created, ignore_errors=True)
        raise
