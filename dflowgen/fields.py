"""Field helpers for the recipe dataclasses (kept apart from the loader so sections can import them freely)."""

from __future__ import annotations

import dataclasses
from typing import Any


def range_field(lo: float, hi: float) -> Any:
    """A dataclass field holding a closed range ``(lo, hi)``; the recipe loader checks ``lo <= hi``."""
    return dataclasses.field(default=(lo, hi), metadata={"range": True})


def nested(cls: type) -> Any:
    """A dataclass field holding a nested section with its own defaults."""
    return dataclasses.field(default_factory=cls)
