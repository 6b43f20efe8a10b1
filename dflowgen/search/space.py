"""λ, the renderer hyper-parameters a search varies, derived from the recipe dataclasses.

Which keys: every field of :class:`~dflowgen.render.config.RenderConfig` (and of its nested
:class:`~dflowgen.render.config.WarpRanges`) made with ``range_field`` — ranges θ is drawn
from, including the layer count — and every probability (a float field named ``*_prob``).
Sizes, grids, kernel sizes, the composition method and thresholds define the pipeline
rather than the distribution and are not searched. A field added to the renderer's
config with ``range_field`` or a ``_prob`` name joins λ without any change here.

Bounds: a range ``[lo, hi]`` of the base recipe is searched inside
``[lo − spread·m, hi + spread·m]``, ``m = max(hi − lo, |lo|, |hi|)`` (so pixel lengths
scale with the base recipe's image size), clipped to what the key can mean
(:data:`DOMAINS`); a probability inside [0, 1]. A range's two ends are searched
independently and the range is their (min, max), so no draw is ever invalid. A base range
of ``[0, 0]`` has no scale to widen (``grid_offset`` by default): it is held, and
searched once the base recipe gives it a width. Values are kept to 4 significant digits,
so written recipes read well and the λ that was scored is exactly the λ written.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from dflowgen.errors import DflowgenError
from dflowgen.fields import flatten_keys, to_dict
from dflowgen.recipes import Recipe, with_overrides
from dflowgen.render.config import RenderConfig

# What a key can mean whatever the base recipe, by field name: (lowest, highest).
DOMAINS: dict[str, tuple[float, float]] = {
    "scale": (0.1, 10.0),  # zoom factors stay positive
    "rotation_deg": (-180.0, 180.0),
    "object_size": (0.02, 1.0),  # fraction of the output's longer side
    "num_layers": (0, math.inf),
    "white_balance": (0.0, 1.0),
    "fog_density": (0.0, 1.0),
    "fog_color": (0.0, 1.0),
    "blur_sigma_x": (0.1, math.inf),  # a Gaussian needs a width
    "blur_sigma_y": (0.1, math.inf),
    "blur_angle_deg": (-180.0, 180.0),
}

SIGNIFICANT_DIGITS = 4


@dataclass(frozen=True)
class LambdaKey:
    """One searched recipe key and its bounds (for a range: the bounds of each end)."""

    key: str
    is_range: bool
    integer: bool
    low: float
    high: float

    @property
    def param_names(self) -> tuple[str, ...]:
        """Optuna parameter names: ``key`` for a probability, ``key[0]`` and ``key[1]`` for a range's ends."""
        return (f"{self.key}[0]", f"{self.key}[1]") if self.is_range else (self.key,)

    @property
    def distribution(self) -> BaseDistribution:
        if self.integer:
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high)


@dataclass(frozen=True)
class LambdaSpace:
    """The searched keys with their bounds, and the keys held at the base value with the reason."""

    keys: tuple[LambdaKey, ...]
    held: tuple[tuple[str, str], ...] = ()

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every optuna parameter of λ and its distribution."""
        return {name: key.distribution for key in self.keys for name in key.param_names}

    def to_lambda(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """λ as recipe overrides (``{"render.fog_prob": 0.3, "render.num_layers": [4, 9], ...}``) from params."""
        lam: dict[str, Any] = {}
        for key in self.keys:
            values = [_tidy(params[name], key) for name in key.param_names]
            lam[key.key] = sorted(values) if key.is_range else values[0]
        return lam

    def params_of(self, recipe: Recipe) -> dict[str, Any]:
        """The optuna parameters of ``recipe``'s own λ, each clipped to its bounds (a base recipe's lie inside)."""
        flat = flatten_keys(to_dict(recipe))
        params: dict[str, Any] = {}
        for key in self.keys:
            values = flat[key.key] if key.is_range else [flat[key.key]]
            for name, value in zip(key.param_names, values):
                clipped = min(max(value, key.low), key.high)
                params[name] = int(clipped) if key.integer else float(clipped)
        return params

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter (the sampler decides the values); the resulting λ."""
        params = {}
        for key in self.keys:
            for name in key.param_names:
                if key.integer:
                    params[name] = trial.suggest_int(name, int(key.low), int(key.high))
                else:
                    params[name] = trial.suggest_float(name, key.low, key.high)
        return self.to_lambda(params)

    def apply(self, recipe: Recipe, lam: Mapping[str, Any], name: str | None = None) -> Recipe:
        """``recipe`` with λ in its ``[render]`` section (validated like a recipe file), renamed to ``name``."""
        overrides = dict(lam)
        if name is not None:
            overrides["name"] = name
        return with_overrides(recipe, overrides)

    def describe(self) -> list[str]:
        """One line per key: bounds, or why it is held."""
        lines = []
        for key in self.keys:
            kind = "range ends" if key.is_range else "probability"
            lines.append(f"{key.key}: {kind} in [{_format(key.low)}, {_format(key.high)}]")
        lines += [f"{key}: held ({why})" for key, why in self.held]
        return lines


def _tidy(value: float, key: LambdaKey) -> float | int:
    """A drawn value as it goes into a recipe: an int, or a float to 4 significant digits inside the key's domain."""
    if key.integer:
        return int(round(value))
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    name = key.key.rsplit(".", 1)[-1]
    low, high = (0.0, 1.0) if not key.is_range else DOMAINS.get(name, (-math.inf, math.inf))
    return min(max(rounded, low), high)


def _format(value: float) -> str:
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def _fields(config: Any, prefix: str) -> Iterator[tuple[str, dataclasses.Field, Any, Any]]:
    """(dotted key, field, value, type hint) of every leaf field of a config dataclass, nested ones included."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = f"{prefix}.{field.name}"
        if dataclasses.is_dataclass(value):
            yield from _fields(value, key)
        else:
            yield key, field, value, hints[field.name]


def searchable_keys(render: RenderConfig) -> list[str]:
    """Every key of λ (before bounds and ``fixed`` are applied), in declaration order."""
    return [key for key, field, _, hint in _fields(render, "render") if _kind(field, hint) is not None]


def _kind(field: dataclasses.Field, hint: Any) -> str | None:
    if field.metadata.get("range"):
        return "range"
    if field.name.endswith("_prob") and hint is float:
        return "probability"
    return None


def derive_space(render: RenderConfig, spread: float, fixed: Sequence[str] = ()) -> LambdaSpace:
    """The λ space around the base ``render`` section: bounds widened by ``spread``, ``fixed`` keys held.

    Raises:
        DflowgenError: a key in ``fixed`` is not a key of λ.
    """
    known = searchable_keys(render)
    unknown = sorted(set(fixed) - set(known))
    if unknown:
        raise DflowgenError(f"search.fixed names {', '.join(unknown)}, not keys of λ (known: {', '.join(known)})")
    keys, held = [], [(key, "search.fixed") for key in known if key in fixed]
    for key, field, value, hint in _fields(render, "render"):
        kind = _kind(field, hint)
        if kind is None or key in fixed:
            continue
        if kind == "probability":
            keys.append(LambdaKey(key, False, False, 0.0, 1.0))
            continue
        lo, hi = value
        margin = max(hi - lo, abs(lo), abs(hi))
        if margin == 0:
            held.append((key, "the base range is [0, 0]: give it a width in the base recipe to search it"))
            continue
        domain_low, domain_high = DOMAINS.get(field.name, (-math.inf, math.inf))
        low, high = max(lo - spread * margin, domain_low), min(hi + spread * margin, domain_high)
        integer = typing.get_args(hint) == (int, int)
        if integer:
            low, high = math.ceil(low), math.floor(high)
        if low >= high:
            held.append((key, f"no room to search: bounds [{_format(low)}, {_format(high)}]"))
            continue
        keys.append(LambdaKey(key, True, integer, float(low), float(high)))
    return LambdaSpace(tuple(keys), tuple(held))
