"""Procedural layers: smooth-noise blobs, polygons and ellipses as masks; noise, gratings, checkers and cells as textures."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dflowgen.assets.masks import MASK_SIZE, Mask

PROCEDURAL_VERSION = "procedural-v1"
"""Bump when procedural generation changes, so fingerprints of old shards stop matching."""

PROCEDURAL_SEED = 20240521
_SUPERSAMPLE = 2


def _smooth_noise(
    generator: torch.Generator, height: int, width: int, octaves: int, base: int = 2, channels: int = 1
) -> torch.Tensor:
    """``channels×H×W`` multi-octave value noise in about [-1, 1] (each octave half the last)."""
    total = torch.zeros(1, channels, height, width)
    for octave in range(octaves):
        cells = base * 2**octave
        coarse = torch.rand(1, channels, cells + 1, cells + 1, generator=generator) * 2 - 1
        total += F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True) / 2**octave
    return total[0] / (2 - 2 ** (1 - octaves))


def cut_mask(image: torch.Tensor, generator: torch.Generator) -> np.ndarray | None:
    """An object-like mask cut from ``image`` (3×H×W): bright or dark smooth regions in an ellipse."""
    gray = image.mean(0)[None, None]
    h, w = gray.shape[-2:]
    smooth = F.avg_pool2d(F.interpolate(gray, scale_factor=0.25, mode="area"), 5, 1, 2, count_include_pad=False)
    smooth = F.interpolate(smooth, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    radius = float(torch.empty(1).uniform_(0.45, 0.8, generator=generator))
    window = (xs / radius) ** 2 + (ys / radius) ** 2 <= 1.0
    threshold = smooth[window].median()
    keep_bright = bool(torch.rand(1, generator=generator) < 0.5)
    mask = (smooth > threshold) if keep_bright else (smooth <= threshold)
    mask = (mask & window).float()
    fill = float(mask.sum() / window.sum())
    if not 0.15 <= fill <= 0.85:
        return None
    return mask.numpy()


def procedural_masks(generator: torch.Generator) -> list[Mask]:
    """Blobs, star polygons and ellipses, drawn at twice the size and averaged down (soft edges)."""
    big = _SUPERSAMPLE * MASK_SIZE
    masks = []
    for i in range(8):
        aspect = float(torch.empty(1).uniform_(0.6, 1.6, generator=generator))
        noise = _smooth_noise(generator, big, big, octaves=3, base=2)[0]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, big), torch.linspace(-1, 1, big), indexing="ij")
        envelope = 1.0 - (xs * min(aspect, 1.0)) ** 2 - (ys / max(aspect, 1.0)) ** 2
        inside = envelope + 0.45 * noise > 0.25
        masks.append(Mask.from_array(_downsample(inside.float().numpy()), f"blob:{i}"))
    for i in range(8):
        vertices = int(torch.randint(5, 13, (1,), generator=generator))
        angles = torch.sort(torch.rand(vertices, generator=generator) * 2 * math.pi).values.tolist()
        radii = (0.35 + 0.6 * torch.rand(vertices, generator=generator)).tolist()
        canvas = Image.new("L", (big, big), 0)
        points = [(big / 2 * (1 + r * math.cos(a)), big / 2 * (1 + r * math.sin(a))) for a, r in zip(angles, radii)]
        ImageDraw.Draw(canvas).polygon(points, fill=255)
        masks.append(Mask.from_array(_downsample(np.asarray(canvas, dtype=np.float32) / 255.0), f"polygon:{i}"))
    for i in range(4):
        aspect = float(torch.empty(1).uniform_(0.4, 1.0, generator=generator))
        canvas = Image.new("L", (big, big), 0)
        half = big * 0.45
        box = (big / 2 - half, big / 2 - half * aspect, big / 2 + half, big / 2 + half * aspect)
        ImageDraw.Draw(canvas).ellipse(box, fill=255)
        masks.append(Mask.from_array(_downsample(np.asarray(canvas, dtype=np.float32) / 255.0), f"ellipse:{i}"))
    return masks


def _downsample(array: np.ndarray) -> np.ndarray:
    """Area-average a supersampled binary mask (anti-aliased edges)."""
    h, w = array.shape
    return array.reshape(h // _SUPERSAMPLE, _SUPERSAMPLE, w // _SUPERSAMPLE, _SUPERSAMPLE).mean(axis=(1, 3))


def procedural_textures(width: int, height: int, generator: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """Colour noise, gratings, warped checkerboards and Voronoi cells (``3×H×W`` in [0, 1])."""
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    textures = []
    for i in range(2):
        noise = _smooth_noise(generator, height, width, octaves=6, base=2, channels=3)
        textures.append((f"noise:{i}", (0.5 + 0.5 * noise).clamp(0, 1)))
    for i in range(2):
        angle = float(torch.rand(1, generator=generator)) * math.pi
        period = float(torch.empty(1).uniform_(8.0, 40.0, generator=generator))
        phase = 6.0 * _smooth_noise(generator, height, width, octaves=3)[0]
        wave = 0.5 + 0.5 * torch.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period + phase)
        textures.append((f"grating:{i}", _two_colours(wave, generator)))
    for i in range(2):
        cell = float(torch.empty(1).uniform_(12.0, 48.0, generator=generator))
        warp = 0.6 * cell * _smooth_noise(generator, height, width, octaves=3, channels=2)
        checker = ((torch.floor((xs + warp[0]) / cell) + torch.floor((ys + warp[1]) / cell)) % 2).float()
        textures.append((f"checker:{i}", _two_colours(checker, generator)))
    for i in range(2):
        seeds = torch.rand(96, 2, generator=generator) * torch.tensor([width, height])
        colours = torch.rand(96, 3, generator=generator)
        points = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        nearest = torch.cdist(points, seeds).argmin(dim=1)
        textures.append((f"voronoi:{i}", colours[nearest].T.reshape(3, height, width).contiguous()))
    return textures


def _two_colours(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blend two random colours by ``weight`` (H×W in [0, 1]) into a ``3×H×W`` texture."""
    first, second = torch.rand(2, 3, 1, 1, generator=generator)
    return first * weight + second * (1 - weight)
