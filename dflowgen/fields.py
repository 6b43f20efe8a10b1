"""Field helpers for the recipe dataclasses (kept apart from the loader so sections can import them freely)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def range_field(lo: float, hi: float) -> Any:
    """A dataclass field holding a closed range ``(lo, hi)``; the recipe loader checks ``lo <= hi``."""
    return dataclasses.field(default=(lo, hi), metadata={"range": True})


def nested(cls: type) -> Any:
    """A dataclass field holding a nested section with its own defaults."""
    return dataclasses.field(default_factory=cls)


def _check(owner: object, names: tuple[str, ...], section: str, bad: Callable[[Any], bool], requirement: str) -> None:
    prefix = f"{section}." if section else ""
    for name in names:
        value = getattr(owner, name)
        if bad(value):
            raise ValueError(f"{prefix}{name} {requirement}, got {value}")


def check_positive(owner: object, *names: str, section: str = "") -> None:
    """Raise ``ValueError`` ("[section.]name must be positive, got v") unless each named field is > 0 (NaN is not)."""
    _check(owner, names, section, lambda value: not value > 0, "must be positive")


def check_non_negative(owner: object, *names: str, section: str = "") -> None:
    """Raise ``ValueError`` ("[section.]name must be >= 0, got v") unless each named field is >= 0."""
    _check(owner, names, section, lambda value: not value >= 0, "must be >= 0")


def check_probability(owner: object, *names: str, section: str = "") -> None:
    """Raise ``ValueError`` unless each named field is a probability in [0, 1]."""
    _check(owner, names, section, lambda value: not 0.0 <= value <= 1.0, "must be a probability in [0, 1]")
