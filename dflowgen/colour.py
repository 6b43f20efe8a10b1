"""Colour jitter of image batches: brightness, contrast, saturation and hue with torchvision's definitions (kornia)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)

_OPERATIONS = (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
    adjust_hue,
)
IDENTITY = (1.0, 1.0, 1.0, 0.0)
"""The factors that leave an image unchanged: brightness, contrast, saturation (multiplicative), hue (radians)."""


def adjust_colours(images: torch.Tensor, factors: torch.Tensor, order: Sequence[int] = (0, 1, 2, 3)) -> torch.Tensor:
    """``B×3×H×W`` images in [0, 1] jittered by one ``factors`` row each, clipped to [0, 1] after every operation.

    ``factors`` is ``B×4``: brightness, contrast and saturation factors, and the hue shift in
    radians. ``order`` lists the operations by those indices (torchvision's ColorJitter draws
    a random order per call). Differentiable in ``images``.
    """
    factors = factors.to(images.device, images.dtype)
    for index in order:
        images = _OPERATIONS[index](images, factors[:, index]).clamp(0.0, 1.0)
    return images
