"""Recipes: TOML files loaded into frozen dataclasses, the one place every default lives.

A recipe has one table per stage (``[render]``, ``[generate]``, ``[train]``); each maps
onto a frozen dataclass whose field defaults are the project's defaults. Loading is
strict (see :func:`dflowgen.fields.from_dict`). This package is the only place that knows
every section: the stages' own sections live beside their code, and the sections of the
experiments built on top of them (``[search]``, ``[reproduce]``, ``[benchmark]``) live
here, so that search, reproduce and benchmark import the recipe and never the reverse.

Named recipes (``demo``, ``sintel``, ...) are the files in the repository's
``recipes/`` folder; a path to any ``.toml`` file works too.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dflowgen.bundled import shipped_dirs
from dflowgen.data.config import GenerateConfig
from dflowgen.errors import DflowgenError
from dflowgen.fields import dumps_toml, from_dict, nested, to_dict
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.recipes.benchmark import BenchmarkConfig
from dflowgen.recipes.reproduce import ReproduceConfig
from dflowgen.recipes.search import SearchConfig
from dflowgen.render.config import RenderConfig
from dflowgen.train.config import TrainConfig


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
    return shipped_dirs("recipes")


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
