"""Renderer hyper-parameters λ: the ranges and probabilities θ is drawn from [DFlow App. A].

Defaults are the paper's values; the authors' released scripts' values live in recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflowgen.recipes import nested, range_field


@dataclass(frozen=True)
class WarpRanges:
    """One geometric warp: rigid ∘ perspective ∘ grid, each drawn uniformly from its range."""

    translation: tuple[float, float] = range_field(-80.0, 80.0)
    rotation_deg: tuple[float, float] = range_field(-5.0, 5.0)
    scale: tuple[float, float] = range_field(0.75, 1.13)
    perspective: tuple[float, float] = range_field(-25.0, 25.0)
    grid_offset: tuple[float, float] = range_field(0.0, 0.0)


@dataclass(frozen=True)
class RenderConfig:
    """What one sample is made of and how it moves; every field is a recipe key under ``[render]``."""

    width: int = 512
    height: int = 384
    canvas_margin: int = 0
    num_layers: tuple[int, int] = range_field(8, 12)
    layer_warp: WarpRanges = nested(WarpRanges)
    anchor_warp: WarpRanges = nested(WarpRanges)
    layer_translation: tuple[float, float] = range_field(-50.0, 50.0)
    grid_size: tuple[int, int] = (8, 12)
    composition: Literal["softmax", "alpha"] = "softmax"
    splat_c: float = 6.0
    white_balance: tuple[float, float] = range_field(0.0, 1.0)
    white_balance_prob: float = 0.5
    noise_init: tuple[float, float] = range_field(-0.01, 0.01)
    noise_prob: float = 0.5
    fog_prob: float = 0.5
    fog_density: tuple[float, float] = range_field(0.0, 0.5)
    fog_color: tuple[float, float] = range_field(0.0, 1.0)
    blur_prob: float = 0.5
    blur_sigma_x: tuple[float, float] = range_field(1.0, 2.0)
    blur_sigma_y: tuple[float, float] = range_field(3.0, 11.0)
    blur_angle_deg: tuple[float, float] = range_field(0.0, 90.0)
    blur_kernel_size: int = 35

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8×8, got {self.width}×{self.height}")
        if self.num_layers[0] < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}")
        for name in ("white_balance_prob", "noise_prob", "fog_prob", "blur_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
