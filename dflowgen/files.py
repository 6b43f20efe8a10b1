"""File helpers shared by every writer: content hashes, atomic writes and output folders (nothing half-written
or left over from a refused command is ever visible)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from pathlib import Path
from typing import BinaryIO

from dflowgen.errors import DflowgenError

_HASH_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary stream whose bytes appear at ``path`` all at once, when the block ends without an error.

    The stream is a hidden temporary file beside ``path`` with a name of its own (so concurrent
    writers never share one); it is flushed and fsynced, then renamed over ``path``. A reader sees
    the old file or the new one, never half of one; a failure (or interrupt) removes the temporary file.
    """
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as stream:
        stream.write(data)


def atomic_copy(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` atomically: a hard link where the filesystem allows, else a copy."""
    temp_name = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        os.link(source, temp_name)
    except OSError:
        with open(source, "rb") as reader, atomic_writer(target) as writer:
            shutil.copyfileobj(reader, writer)
        return
    try:
        os.replace(temp_name, target)
    except BaseException:
        temp_name.unlink(missing_ok=True)
        raise


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``; a failed write leaves nothing behind.

    For writers that only take a file name (flow files, PNG encoders). The temporary name is
    unique and keeps ``path``'s suffix, since some encoders pick the format from it.
    """
    temp_path = path.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}-{path.name}")
    try:
        write(temp_path)
        with open(temp_path, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


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
