"""The recipe dataclasses' ground floor: field helpers and the strict dataclass ⇄ TOML codec.

Every section imports its helpers from here, and every stage may use the codec, because this
module imports nothing of dflowgen but its error type.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dflowgen.errors import DflowgenError

T = TypeVar("T")

# Recipe integers end up in int64 places (HDF5 attributes, torch generators, numpy columns).
_INT64 = (-(2**63), 2**63 - 1)


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


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """Coerce a TOML value to the annotated type, or raise naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except DflowgenError as error:
                errors.append(str(error))
        raise DflowgenError(errors[0] if errors else f"recipe key '{key}': bad value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise DflowgenError(f"recipe key '{key}' must be a table, got {value!r}")
        return from_dict(hint, value, prefix=key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DflowgenError(f"recipe key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise DflowgenError(f"recipe key '{key}' must have {len(args)} values, got {len(value)}")
        return tuple(_check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DflowgenError(f"recipe key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise DflowgenError(f"recipe key '{key}' must be a finite number, got {value}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DflowgenError(f"recipe key '{key}' must be an integer, got {value!r}")
        if not _INT64[0] <= value <= _INT64[1]:
            raise DflowgenError(f"recipe key '{key}' must fit in 64 bits ({_INT64[0]} to {_INT64[1]}), got {value}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise DflowgenError(f"recipe key '{key}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise DflowgenError(f"recipe key '{key}' must be a string, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise DflowgenError(f"recipe key '{key}' must be one of {choices}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (TOML) dict, strictly; missing keys keep defaults."""
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise DflowgenError(f"unknown recipe key '{key}' (known keys here: {known})")
        kwargs[name] = _check_value(value, hints[name], key)
        if fields[name].metadata.get("range"):
            lo, hi = kwargs[name]
            if lo > hi:
                raise DflowgenError(f"recipe key '{key}' is a range with lo > hi: [{lo}, {hi}]")
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise DflowgenError(f"recipe section '{prefix or cls.__name__}': {error}") from None


def to_dict(instance: Any) -> dict[str, Any]:
    """A dataclass as nested plain dicts/lists, ready for TOML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(instance)


def flatten_keys(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys: ``{"render": {"width": 8}}`` → ``{"render.width": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        flat.update(flatten_keys(value, f"{name}.") if isinstance(value, Mapping) else {name: value})
    return flat


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """Nested dicts of scalars and lists as TOML text (tables after plain keys)."""
    lines: list[str] = []

    def table(mapping: dict[str, Any], path: str) -> None:
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in mapping.items() if isinstance(v, dict)}
        if path and (scalars or not tables):
            lines.append(f"[{path}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, value in tables.items():
            table(value, f"{path}.{key}" if path else key)

    table(data, "")
    return "\n".join(lines).rstrip() + "\n"
