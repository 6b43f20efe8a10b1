"""Recipes: TOML files loaded into frozen dataclasses, the one place every default lives.

A recipe has one table per stage (``[render]``, ``[generate]``, ``[train]``); each maps
onto a frozen dataclass whose field defaults are the project's defaults. Loading is
strict: an unknown key is an error that names it, a value of the wrong type is an
error, and a range (a field made with :func:`range_field`) must have ``lo <= hi``.

Named recipes (``demo``, ``sintel``, ...) are the files in the repository's
``recipes/`` folder; a path to any ``.toml`` file works too.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
import types
import typing
from pathlib import Path
from collections.abc import Mapping
from typing import Any, TypeVar

from dflowgen.errors import DflowgenError
from dflowgen.fields import check_positive, nested
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.benchmark.config import BenchmarkConfig
from dflowgen.reproduce.config import ReproduceConfig
from dflowgen.search.config import SearchConfig
from dflowgen.render.config import RenderConfig
from dflowgen.train.config import TrainConfig

T = TypeVar("T")

# Recipe integers end up in int64 places (HDF5 attributes, torch generators, numpy columns).
_INT64 = (-(2**63), 2**63 - 1)


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


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """How a dataset is produced and stored (not what is rendered); keys under ``[generate]``.

    mode: ``random`` renders θ as drawn from the ``[render]`` ranges; ``dflow`` first
    optimises every sample against the proxies of ``[optimize]`` [DFlow].
    seed: the run seed; sample i is drawn from (seed, i) alone. batch_size: samples
    rendered (and optimised) at once. shard_size: samples per HDF5 shard.
    flow_dtype: precision of the stored flow. preview_count: samples ``--preview`` draws.
    store_params: keep every sample's scene parameters θ in its shard, so it can be
    re-rendered or optimised further; the per-pixel texture noise in θ takes 24 bytes a
    pixel, more than the images and flow together, and a randomly generated sample can
    also be re-drawn from the recipe, seed and index.
    """

    mode: typing.Literal["random", "dflow"] = "random"
    seed: int = 0
    batch_size: int = 8
    shard_size: int = 256
    flow_dtype: typing.Literal["float32", "float16"] = "float32"
    preview_count: int = 8
    store_params: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "shard_size")
        if self.preview_count < 0:
            raise ValueError(f"preview_count must not be negative, got {self.preview_count}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole recipe: what to render, how to store it, how to optimise it against proxies, how to train on it,
    how to search its ``[render]`` ranges, and the experiments built on them (``[reproduce]``, ``[benchmark]``)."""

    name: str = "default"
    render: RenderConfig = nested(RenderConfig)
    generate: GenerateConfig = nested(GenerateConfig)
    optimize: OptimizeConfig = nested(OptimizeConfig)
    train: TrainConfig = nested(TrainConfig)
    search: SearchConfig = nested(SearchConfig)
    reproduce: ReproduceConfig = nested(ReproduceConfig)
    benchmark: BenchmarkConfig = nested(BenchmarkConfig)


def recipe_dirs() -> list[Path]:
    """Folders searched for named recipes: the source tree's, then the installed copy."""
    return [Path(__file__).resolve().parents[1] / "recipes", Path(sys.prefix) / "share" / "dflowgen" / "recipes"]


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file from a path or a bundled recipe's name (``demo``, ``sintel``...)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise DflowgenError(f"recipe file not found: {path}")
        return path
    for folder in recipe_dirs():
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise DflowgenError(f"no recipe named '{name_or_path}' (bundled: {', '.join(known) or 'none'}; or give a .toml path)")


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """A :class:`Recipe` from TOML text; errors name ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DflowgenError(f"{source}: not valid TOML: {error}") from None
    try:
        return from_dict(Recipe, data)
    except DflowgenError as error:
        raise DflowgenError(f"{source}: {error}") from None


def load_recipe(name_or_path: str | Path | None = None) -> Recipe:
    """Load a recipe by name or path; ``None`` gives the built-in defaults."""
    if name_or_path is None:
        return Recipe()
    path = resolve_recipe_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DflowgenError(f"cannot read recipe {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise DflowgenError(f"recipe {path} is not UTF-8 text (undecodable byte at offset {error.start})") from None
    return parse_recipe(text, source=str(path))


def with_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """A copy of ``recipe`` with dotted keys replaced (``{"generate.seed": 3}``), validated like a recipe file."""
    data = to_dict(recipe)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        section = data
        for part in parents:
            if not isinstance(section.get(part), dict):
                raise DflowgenError(f"unknown recipe key '{key}'")
            section = section[part]
        section[leaf] = value
    return from_dict(Recipe, data)


def recipe_to_toml(recipe: Recipe) -> str:
    """The complete, resolved recipe as TOML (what shards store and compare)."""
    return dumps_toml(to_dict(recipe))
