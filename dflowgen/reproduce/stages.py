"""Completion markers: a stage that finished is skipped, and one done with other settings is refused.

A stage's marker is ``OUT/stages/<name>.json``, written atomically once the stage's outputs
are complete: ``{"stage", "settings", "result"}``. ``settings`` is everything the outputs depend
on (hashes of the weights they start from, not paths, so a moved folder still counts as done);
``result`` is what later stages and the report read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_write_bytes
from dflowgen.recipes import flatten_keys

STAGES_FOLDER = "stages"


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so stored and current settings compare."""
    return json.loads(json.dumps(value))


def digest(value: Any) -> str:
    """A short, stable hash of JSON-able ``value`` (identifies a stage's settings inside another's)."""
    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()[:16]


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first setting that differs, as ``key: old -> new``."""
    old_flat, new_flat = flatten_keys(old), flatten_keys(new)
    for key in sorted(old_flat.keys() | new_flat.keys()):
        if old_flat.get(key) != new_flat.get(key):
            return f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
    return "?"


class StageMarkers:
    """The markers of the reproduction in ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out / STAGES_FOLDER

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def result(self, name: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored result of stage ``name`` if it is done (with these ``settings``), else None.

        A marker made with other settings is an error: the stage's outputs would not match the recipe.
        """
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            marker = json.loads(path.read_text())
            stored = marker["settings"]
            result = marker["result"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DflowgenError(f"stage marker {path} is unreadable ({error}); delete it to redo stage "
                                f"'{name}'") from None
        if stored != plain(settings):
            raise DflowgenError(f"{self.out} holds stage '{name}' done with other settings "
                                f"({first_difference(stored, plain(settings))}); choose another --out")
        return result

    def finish(self, name: str, settings: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Mark stage ``name`` done with ``result`` (atomically); returns ``result`` as read back later."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = {"stage": name, "settings": plain(settings), "result": plain(result)}
        atomic_write_bytes(self.path(name), (json.dumps(marker, indent=1) + "\n").encode())
        return marker["result"]
