"""Differentiable RAFT-style augmented copies of a rendered batch, with exact flow.

Each update shows the proxies ``C`` randomly transformed copies of every sample, as RAFT's
training augmentation would (zoom, per-axis stretch, crop, flips, colour jitter), but as
differentiable tensor operations so that gradients reach θ through the copies.

Geometry. A copy pixel ``p'`` shows the rendered pixel ``x = a ⊙ p' + b`` (per axis:
``a = ±1/zoom``, the sign from a flip, ``b`` from the crop offset), for both frames. A point
at ``x`` in frame 1 moves to ``x + F(x)`` in frame 2, which the copy shows at
``(x + F(x) − b) / a = p' + F(x) / a``. So the copy's flow is the rendered flow read at
``x`` with each component divided by ``a``: scaled by the axis' zoom and negated by a flip.
All of it is one affine ``grid_sample`` over the stacked images, flow and valid mask.

A copy pixel is valid where every rendered pixel its bilinear read touches is valid: like
the renderer's labels, a copy's flow is kept where its point is hidden or leaves the copy's
frame 2. Colour jitter is applied with the same factors to both frames, with the
contrast mean taken over the two frames together (RAFT's symmetric jitter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
)

from dflowgen.optimize.config import CopyAugmentConfig

_DRAWS_PER_COPY = 12
"""Uniform numbers drawn per copy, whatever the settings: the streams of different recipes stay aligned."""

_VALID_READ = 1.0 - 1e-4
"""A bilinear read of the 0/1 valid mask at least this high touched only valid pixels."""

_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)
"""NTSC YIQ: luma Y and the two chroma axes I, Q; a hue shift is a rotation in the (I, Q) plane."""


@dataclass
class CopyTransforms:
    """Random transforms of ``n = B·C`` copies, sample-major (copy ``j`` of sample ``b`` is row ``b·C + j``).

    zoom: ``n×2`` per-axis zoom (x, y), at least 1.
    offset: ``n×2`` crop offset in zoomed pixels, in ``[0, (zoom − 1)·size]``.
    flip: ``n×2`` bool, left-right and up-down.
    brightness, contrast, saturation: ``n`` factors (1 = unchanged).
    hue: ``n`` shift in turns of the colour circle.
    """

    zoom: torch.Tensor
    offset: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor

    def to(self, device: torch.device | str) -> CopyTransforms:
        return CopyTransforms(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})

    def select(self, rows: torch.Tensor) -> CopyTransforms:
        """The transforms at ``rows`` (an index tensor on their device)."""
        return CopyTransforms(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})

    @property
    def count(self) -> int:
        return self.zoom.shape[0]


@dataclass
class Copies:
    """Augmented copies: img1, img2 ``n×3×H×W`` in [0, 1], flow ``n×2×H×W`` px, valid ``n×1×H×W`` 0/1."""

    img1: torch.Tensor
    img2: torch.Tensor
    flow: torch.Tensor
    valid: torch.Tensor


def draw_copy_transforms(
    generators: Sequence[torch.Generator], copies: int, size: tuple[int, int], config: CopyAugmentConfig
) -> CopyTransforms:
    """Draw ``copies`` transforms per sample, sample ``b`` from ``generators[b]`` only (on the CPU).

    Every call draws the same count of numbers from each generator, so a sample's copies
    depend on its own generator's state alone, never on its batch mates or the settings.

    Args:
        generators: one CPU generator per sample (``B``).
        copies: ``C``.
        size: ``(W, H)`` of the rendered frames.
    """
    uniform = torch.cat([torch.rand(copies, _DRAWS_PER_COPY, generator=g) for g in generators])
    scale, stretched, stretch_x, stretch_y, crop_x, crop_y, hflip, vflip, *colour = uniform.unbind(1)
    bright, contr, satur, hue = colour

    zoom = torch.exp2(config.min_scale + (config.max_scale - config.min_scale) * scale)
    stretch = torch.exp2(config.max_stretch * (2.0 * torch.stack([stretch_x, stretch_y], dim=1) - 1.0))
    stretch = torch.where((stretched < config.stretch_prob)[:, None], stretch, torch.ones_like(stretch))
    # Like RAFT, never zoom below the crop size: a copy shows only rendered pixels.
    zoom_xy = (zoom[:, None] * stretch).clamp_min(1.0)
    frame = torch.tensor(size, dtype=zoom_xy.dtype)
    offset = torch.stack([crop_x, crop_y], dim=1) * (zoom_xy - 1.0) * frame

    return CopyTransforms(
        zoom=zoom_xy,
        offset=offset,
        flip=torch.stack([hflip < config.hflip_prob, vflip < config.vflip_prob], dim=1),
        brightness=_jitter_factor(bright, config.brightness),
        contrast=_jitter_factor(contr, config.contrast),
        saturation=_jitter_factor(satur, config.saturation),
        hue=config.hue * (2.0 * hue - 1.0),
    )


def _jitter_factor(uniform: torch.Tensor, spread: float) -> torch.Tensor:
    """Uniform numbers in [0, 1) mapped to factors in ``[max(0, 1 − spread), 1 + spread)``."""
    low = max(0.0, 1.0 - spread)
    return low + (1.0 + spread - low) * uniform


def copy_sampling(transforms: CopyTransforms, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis ``(a, b)``, each ``n×2``: copy pixel ``p'`` reads rendered pixel ``a ⊙ p' + b``."""
    frame = transforms.zoom.new_tensor(size)
    sign = 1.0 - 2.0 * transforms.flip.to(transforms.zoom.dtype)
    scale = sign / transforms.zoom
    # Pixel centres: copy pixel c of the zoomed picture lies at (c + 0.5)/zoom − 0.5 in the frame;
    # a flip reads copy pixel (size − 1 − p') instead of p'.
    flipped_start = transforms.flip.to(frame.dtype) * (frame - 1.0)
    shift = (flipped_start + transforms.offset + 0.5) / transforms.zoom - 0.5
    return scale, shift


def augment_copies(
    img1: torch.Tensor, img2: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor, transforms: CopyTransforms
) -> Copies:
    """``C`` augmented copies of each of ``B`` rendered samples (``C = transforms.count / B``).

    Args:
        img1, img2: ``B×3×H×W`` in [0, 1].
        flow: ``B×2×H×W`` px.
        valid: ``B×1×H×W`` 0/1.
        transforms: ``B·C`` transforms on the inputs' device.

    Returns:
        ``B·C`` copies, sample-major. Differentiable with respect to the images and the flow.
    """
    batch, _, height, width = img1.shape
    if transforms.count % batch:
        raise ValueError(f"{transforms.count} transforms do not split evenly over {batch} samples")
    copies = transforms.count // batch
    scale, shift = copy_sampling(transforms, (width, height))
    scale, shift = scale.to(img1.dtype), shift.to(img1.dtype)

    # affine_grid maps the copy's [-1, 1] coordinates to the frame's; with align_corners=True,
    # pixel p = (u + 1)(size − 1)/2, so u_frame = a·u_copy + (a − 1) + 2b/(size − 1).
    extent = img1.new_tensor([width - 1.0, height - 1.0]).clamp_min(1.0)
    translation = scale - 1.0 + 2.0 * shift / extent
    zero = torch.zeros_like(scale[:, 0])
    row_x = torch.stack([scale[:, 0], zero, translation[:, 0]], dim=1)
    row_y = torch.stack([zero, scale[:, 1], translation[:, 1]], dim=1)
    theta = torch.stack([row_x, row_y], dim=1)
    grid = F.affine_grid(theta, [transforms.count, 1, height, width], align_corners=True)

    stacked = torch.cat([img1, img2, flow, valid.to(img1.dtype)], dim=1).repeat_interleave(copies, dim=0)
    read = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="border", align_corners=True)
    copy1, copy2, copy_flow, read_valid = read.split([3, 3, 2, 1], dim=1)
    copy_flow = copy_flow / scale[:, :, None, None]

    with torch.no_grad():
        copy_valid = (read_valid >= _VALID_READ).to(img1.dtype)

    copy1, copy2 = jitter_colours(copy1, copy2, transforms)
    return Copies(copy1, copy2, copy_flow, copy_valid)


def jitter_colours(
    img1: torch.Tensor, img2: torch.Tensor, transforms: CopyTransforms
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast, saturation (kornia, torchvision's definitions), then hue, the same for both frames.

    A factor of exactly 1 (shift 0) leaves the frames unchanged, so an operation whose range
    is zero for every copy is skipped.

    Args:
        img1, img2: ``n×3×H×W`` in [0, 1].
        transforms: ``n`` factors.
    """
    height = img1.shape[2]
    both = torch.cat([img1, img2], dim=2)
    if not bool((transforms.brightness == 1.0).all()):
        both = adjust_brightness_accumulative(both, transforms.brightness.to(both.dtype))
    if not bool((transforms.contrast == 1.0).all()):
        both = adjust_contrast_with_mean_subtraction(both, transforms.contrast.to(both.dtype))
    if not bool((transforms.saturation == 1.0).all()):
        both = adjust_saturation_with_gray_subtraction(both, transforms.saturation.to(both.dtype))
    if not bool((transforms.hue == 0.0).all()):
        both = rotate_hue(both, transforms.hue.to(both.dtype))
    return both[:, :, :height], both[:, :, height:]


def rotate_hue(image: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Shift the hue of ``n×3×H×W`` RGB images in [0, 1] by ``turns`` (``n``) of the colour circle.

    The chroma of each pixel is rotated about the grey axis in YIQ space (in the direction
    HSV hue grows), which keeps its luma and colourfulness: one 3×3 matrix per image. It is
    the same kind of change as torchvision's HSV hue jitter (which RAFT uses), not the same
    numbers, at a small fraction of the cost of the round trip through HSV, whose backward
    dominated the copies' time. Clamped to [0, 1].
    """
    to_yiq = image.new_tensor(_RGB_TO_YIQ)
    angle = 2.0 * math.pi * turns
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, sin], -1), torch.stack([zero, -sin, cos], -1)], -2
    )
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("nij,njhw->nihw", matrix, image).clamp(0.0, 1.0)
