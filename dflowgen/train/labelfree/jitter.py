"""Batched, seeded colour jitter of image pairs: the photometric augmentation of the label-free modes.

The label-free losses compare frames pixel by pixel, so the jitter is applied to what the
network *sees* and never to the frames a loss reads [SMURF §3, UFlow]. The draws come from a
CPU generator (one per training step, see :func:`dflowgen.seeding.sample_generator`) and the
operations run on the images' device, batched with one factor per sample.
"""

from __future__ import annotations

import math

import torch

from dflowgen.colour import IDENTITY, adjust_colours
from dflowgen.train.config import JitterConfig


def _factors(count: int, config: JitterConfig, generator: torch.Generator) -> torch.Tensor:
    """``count×4`` (brightness, contrast, saturation, hue in radians); identity rows where not jittered."""
    uniform = torch.rand(count, 4, generator=generator) * 2 - 1
    spread = torch.tensor([config.brightness, config.contrast, config.saturation, config.hue * 2 * math.pi])
    factors = uniform * spread + torch.tensor(IDENTITY)
    applied = torch.rand(count, 1, generator=generator) < config.prob
    return torch.where(applied, factors, torch.tensor(IDENTITY))


def jitter_pair(image1: torch.Tensor, image2: torch.Tensor, config: JitterConfig,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered copies of ``B×3×H×W`` frames in [0, 255].

    Both frames of a sample get the same factors, except with ``config.asymmetric_prob``, when the
    second gets its own draw (the brightness-constancy violations real video has).
    """
    batch = image1.shape[0]
    first = _factors(batch, config, generator)
    own = _factors(batch, config, generator)
    asymmetric = torch.rand(batch, 1, generator=generator) < config.asymmetric_prob
    second = torch.where(asymmetric, own, first)
    jittered = adjust_colours(torch.cat([image1, image2]) / 255.0, torch.cat([first, second]))
    return tuple((jittered * 255.0).chunk(2))  # type: ignore[return-value]
