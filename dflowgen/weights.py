"""A local store of RAFT checkpoints: the official releases (fetched with a sha256 check) and the user's own.

Two checkpoints ship inside the package for ``dflowgen generate --target demo`` (``PACKAGED``):
``demo-base`` is the released RAFT-small, ``demo-target`` that network fine-tuned on Sintel pairs
(``recipes/train-demo-proxy.toml``); their licence notice is ``dflowgen/proxies/NOTICE``.

The store is a folder (``$DFLOWGEN_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/dflowgen/weights``, else
``~/.cache/dflowgen/weights``) holding ``<name>.pth`` files and ``index.json`` (name → file, model, sha256).
Offline machines register a copy they already have with :func:`add_weights`.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_copy, atomic_write_bytes, file_sha256

OFFICIAL_ARCHIVE_URL = "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip"
OFFICIAL_ARCHIVE_SHA256 = "4be6101b271f58ec49866da5cf609fd17e86e9cae2483f70630ef4a295dc66bd"


@dataclass(frozen=True)
class Release:
    """One officially released checkpoint inside the release archive."""

    model: str
    sha256: str
    member: str


# princeton-vl/RAFT's models.zip. The sintel, kitti and small hashes equal the SHA256SUMS shipped
# with the project's sample data; chairs and things are from a public record of the same archive.
OFFICIAL_RELEASES: dict[str, Release] = {
    "raft-chairs": Release("raft", "c6c75465cf995d137f89ca2e2d08594ed390befbb8859f7f65c48bcc8feb0fd7", "models/raft-chairs.pth"),
    "raft-things": Release("raft", "fcfa4125d6418f4de95d84aec20a3c5f4e205101715a79f193243c186ac9a7e1", "models/raft-things.pth"),
    "raft-sintel": Release("raft", "90630d2e7d488a0d3ccb5e8194524850c4c05c732ea4ff99799822c7fa5c5cbf", "models/raft-sintel.pth"),
    "raft-kitti": Release("raft", "b9d170362415e1a27bd8402ee966a3ddf0d60df9b2df2c0b4949f5ced490a9e6", "models/raft-kitti.pth"),
    "raft-small": Release("raft-small", "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332", "models/raft-small.pth"),
}


PACKAGED_DIR = Path(__file__).resolve().parent / "proxies"
PACKAGED: dict[str, Release] = {
    "demo-base": Release("raft-small", OFFICIAL_RELEASES["raft-small"].sha256, "demo-base.pth"),
    "demo-target": Release(
        "raft-small", "a219862edefe1983606be3d5e38f98ea0757301d8eeabb0158385bbed9c10ecc", "demo-target.pth"
    ),
}
"""Checkpoints shipped in ``dflowgen/proxies/`` (``member`` is the file name there)."""


@dataclass(frozen=True)
class StoredWeights:
    """A checkpoint registered in the store."""

    name: str
    path: Path
    model: str | None
    sha256: str


def weights_dir() -> Path:
    """The store's folder (not created here)."""
    if "DFLOWGEN_WEIGHTS_DIR" in os.environ:
        return Path(os.environ["DFLOWGEN_WEIGHTS_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "dflowgen" / "weights"


def _read_index(store: Path) -> dict[str, dict]:
    """The store's ``index.json`` (name → {file, model, sha256}), every entry checked."""
    index_path = store / "index.json"
    if not index_path.is_file():
        return {}
    fix = "delete it and add the weights again"
    try:
        index = json.loads(index_path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise DflowgenError(f"weights index {index_path} is unreadable ({error.strerror}); {fix}") from None
    except ValueError as error:  # not UTF-8, or not JSON
        raise DflowgenError(f"weights index {index_path} is not JSON ({' '.join(str(error).split())}); {fix}") from None
    if not isinstance(index, dict):
        raise DflowgenError(f"weights index {index_path} must map names to entries; {fix}")
    for name, entry in index.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
                and Path(entry["file"]).name == entry["file"] and isinstance(entry.get("model"), (str, type(None)))):
            raise DflowgenError(f"weights index {index_path}: entry '{name}' must be {{file, model, sha256}} with a "
                                f"file name in the store, got {json.dumps(entry)[:80]}; {fix}")
    return index


def _write_index(store: Path, index: dict[str, dict]) -> None:
    atomic_write_bytes(store / "index.json", (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())


def _ensure_store(store: Path) -> Path:
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DflowgenError(f"cannot create the weights store {store}: {error.strerror}") from None
    return store


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise DflowgenError(f"bad weights name '{name}': use letters, digits, '-', '_' and '.'")


def list_weights(store: Path | None = None) -> list[StoredWeights]:
    """Every checkpoint registered in the store, by name."""
    store = store or weights_dir()
    entries = []
    for name, entry in sorted(_read_index(store).items()):
        entries.append(StoredWeights(name, store / entry["file"], entry.get("model"), entry["sha256"]))
    return entries


def add_weights(name: str, source: str | Path, model: str | None = None, store: Path | None = None) -> StoredWeights:
    """Copy a local checkpoint into the store under ``name``.

    For an official release name the file's sha256 must match the release's. The file is not
    loaded here: :func:`dflowgen.models.registry.register_weights` loads it safely and checks its
    architecture first (what ``dflowgen weights add`` does).
    """
    _check_name(name)
    source = Path(source)
    if not source.is_file():
        raise DflowgenError(f"checkpoint file not found: {source}")
    sha256 = file_sha256(source)
    release = OFFICIAL_RELEASES.get(name)
    if release is not None:
        if sha256 != release.sha256:
            raise DflowgenError(
                f"{source} is not the official {name} (sha256 {sha256[:12]}…, expected {release.sha256[:12]}…); "
                "register it under another name"
            )
        model = release.model
    store = _ensure_store(store or weights_dir())
    target = store / f"{name}.pth"
    atomic_copy(source, target)
    index = _read_index(store)
    index[name] = {"file": target.name, "model": model, "sha256": sha256}
    _write_index(store, index)
    return StoredWeights(name, target, model, sha256)


def _download(url: str, destination: Path, quiet: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=quiet) as bar:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DflowgenError(
            f"cannot download {url}: {reason}. On an offline machine, copy the file here and run "
            "`dflowgen weights add NAME FILE`"
        ) from None


def fetch_weights(
    names: list[str],
    url: str = OFFICIAL_ARCHIVE_URL,
    archive_sha256: str | None = OFFICIAL_ARCHIVE_SHA256,
    store: Path | None = None,
    quiet: bool = False,
) -> list[StoredWeights]:
    """Download the official release archive once and register the named checkpoints from it.

    The archive's sha256 (when given) and each member's sha256 are checked before anything
    is registered; a failed check leaves the store as it was.
    """
    unknown = [n for n in names if n not in OFFICIAL_RELEASES]
    if unknown:
        raise DflowgenError(f"no official release named {', '.join(unknown)} (known: {', '.join(OFFICIAL_RELEASES)})")
    store = _ensure_store(store or weights_dir())
    fetched = []
    with tempfile.TemporaryDirectory(dir=store, prefix=".fetch-") as scratch:
        archive = Path(scratch) / "models.zip"
        _download(url, archive, quiet)
        if archive_sha256 is not None and file_sha256(archive) != archive_sha256:
            raise DflowgenError(f"the archive from {url} failed its sha256 check; nothing was registered")
        try:
            with zipfile.ZipFile(archive) as bundle:
                for name in names:
                    member = OFFICIAL_RELEASES[name].member
                    try:
                        bundle.extract(member, scratch)
                    except KeyError:
                        raise DflowgenError(f"the archive from {url} has no {member}") from None
        except zipfile.BadZipFile:
            raise DflowgenError(f"the file from {url} is not a zip archive") from None
        for name in names:
            fetched.append(add_weights(name, Path(scratch) / OFFICIAL_RELEASES[name].member, store=store))
    return fetched


def resolve_weights(name_or_path: str | Path, store: Path | None = None) -> Path:
    """A checkpoint path from a file path or a name in the store.

    Names are looked up in the store first, then among the packaged checkpoints. A missing
    official release is an error that says how to get it.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    store = store or weights_dir()
    entry = _read_index(store).get(str(name_or_path))
    if entry is not None and (store / entry["file"]).is_file():
        return store / entry["file"]
    if str(name_or_path) in PACKAGED:
        packaged = PACKAGED_DIR / PACKAGED[str(name_or_path)].member
        if packaged.is_file():
            return packaged
        raise DflowgenError(f"the packaged checkpoint {packaged} is missing: reinstall dflowgen")
    if str(name_or_path) in OFFICIAL_RELEASES:
        raise DflowgenError(
            f"checkpoint '{name_or_path}' is not in the weights store ({store}); get it with "
            f"`dflowgen weights fetch {name_or_path}`, or on an offline machine `dflowgen weights add {name_or_path} FILE`"
        )
    raise DflowgenError(f"checkpoint not found: '{name_or_path}' is neither a file nor a name in the weights store ({store})")
