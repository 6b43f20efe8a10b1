"""Renderer hyper-parameters λ: the ranges and probabilities θ is drawn from [DFlow App. A].

Defaults are the paper's values; the authors' released scripts' values live in recipes.
Lengths are in output pixels, angles in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflowgen.fields import check_non_negative, check_positive, check_probability, nested, range_field

MAX_SIDE = 4096
"""The largest image side (and canvas margin) a recipe may ask for: 4096² is ~8× a KITTI frame, and far larger sizes
exhaust memory in the first allocation instead of failing with a message."""


@dataclass(frozen=True)
class WarpRanges:
    """One geometric warp: rigid ∘ perspective ∘ grid, each drawn uniformly from its range.

    ``perspective`` bounds each coordinate of the four corner offsets that define the
    homography; ``grid_offset`` bounds each node of the coarse control grid (``(0, 0)``:
    the grid starts flat and only optimisation bends it).
    """

    translation: tuple[float, float] = range_field(-80.0, 80.0)
    rotation_deg: tuple[float, float] = range_field(-5.0, 5.0)
    scale: tuple[float, float] = range_field(0.75, 1.13)
    perspective: tuple[float, float] = range_field(-25.0, 25.0)
    grid_offset: tuple[float, float] = range_field(0.0, 0.0)


@dataclass(frozen=True)
class RenderConfig:
    """What one sample is made of and how it moves; every field is a recipe key under ``[render]``.

    ``num_layers`` counts foreground layers; every sample also has a background layer.
    ``canvas_margin`` is the band of layer content kept around the output window, so
    motion reveals real texture at the borders (the authors rendered 584×712 and cropped
    384×512: a margin of 100). ``object_size`` is a foreground mask's longer side as a
    fraction of the output's longer side. ``grid_size`` and ``fog_color_grid`` are
    (rows, columns). ``visible_min_weight`` is the composition weight a layer needs, at a
    pixel of frame 1 and where that point lands in frame 2, for the point to count as
    visible in frame 2 (``occ`` 0); the flow is labelled either way. ``blur_layer_prob`` is the chance that a layer belongs to the motion
    blur mask of a blurred sample.
    """

    width: int = 512
    height: int = 384
    canvas_margin: int = 100
    num_layers: tuple[int, int] = range_field(8, 12)
    object_size: tuple[float, float] = range_field(0.15, 0.5)
    layer_warp: WarpRanges = nested(WarpRanges)
    anchor_warp: WarpRanges = nested(WarpRanges)
    layer_translation: tuple[float, float] = range_field(-50.0, 50.0)
    grid_size: tuple[int, int] = (8, 12)
    composition: Literal["softmax", "alpha"] = "softmax"
    splat_c: float = 6.0
    visible_min_weight: float = 0.99
    white_balance: tuple[float, float] = range_field(0.0, 1.0)
    white_balance_prob: float = 0.5
    noise_init: tuple[float, float] = range_field(-0.01, 0.01)
    noise_prob: float = 0.5
    fog_prob: float = 0.5
    fog_density: tuple[float, float] = range_field(0.0, 0.5)
    fog_color: tuple[float, float] = range_field(0.0, 1.0)
    fog_color_grid: tuple[int, int] = (1, 1)
    fog_octaves: int = 4
    blur_prob: float = 0.5
    blur_layer_prob: float = 0.5
    blur_sigma_x: tuple[float, float] = range_field(1.0, 2.0)
    blur_sigma_y: tuple[float, float] = range_field(3.0, 11.0)
    blur_angle_deg: tuple[float, float] = range_field(0.0, 90.0)
    blur_kernel_size: int = 35

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8×8, got {self.width}×{self.height}")
        if max(self.width, self.height, self.canvas_margin) > MAX_SIDE:
            raise ValueError(f"image size and canvas_margin must be at most {MAX_SIDE}, "
                             f"got {self.width}×{self.height} with margin {self.canvas_margin}")
        check_non_negative(self, "canvas_margin")
        if self.num_layers[0] < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
        if not 0.0 < self.object_size[0]:
            raise ValueError(f"object_size must be positive, got {self.object_size}")
        for name in ("grid_size", "fog_color_grid"):
            rows, cols = getattr(self, name)
            if rows < 1 or cols < 1:
                raise ValueError(f"{name} must be at least (1, 1), got {(rows, cols)}")
        if self.fog_octaves < 1:
            raise ValueError(f"fog_octaves must be at least 1, got {self.fog_octaves}")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be a positive odd number, got {self.blur_kernel_size}")
        check_positive(self, "splat_c")
        if not 0.5 < self.visible_min_weight <= 1.0:
            raise ValueError(f"visible_min_weight must be in (0.5, 1], got {self.visible_min_weight}")
        check_probability(self, "white_balance_prob", "noise_prob", "fog_prob", "blur_prob", "blur_layer_prob")
        for warp in (self.layer_warp, self.anchor_warp):
            if warp.scale[0] <= 0:
                raise ValueError(f"warp scale must be positive, got {warp.scale}")

    @property
    def max_layers(self) -> int:
        """Layer slots per sample: the most foregrounds plus the background."""
        return self.num_layers[1] + 1

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(W, H) of the output window plus the margin: the natural size of a layer bank."""
        return self.width + 2 * self.canvas_margin, self.height + 2 * self.canvas_margin
