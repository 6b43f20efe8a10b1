"""RAFT-style training augmentation of a FlowPair, on the fly and seeded.

The steps and their default strengths follow the official RAFT augmentors: colour jitter
(symmetric, or per image with probability 0.2), an eraser that paints 1–2 boxes of img2
with its mean colour, a random scale ``2^U(min_scale, max_scale)`` with optional stretch,
flips, and a random crop. Sparse mode (KITTI, HD1K) resizes flow by moving valid points
instead of interpolating, never stretches, never flips vertically, and biases the crop
towards the image borders like the official sparse augmentor.

Every random draw comes from the ``numpy.random.Generator`` given to the call, so one
seed gives one output, on any worker.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dflowgen.colour import adjust_colours
from dflowgen.data.sample import FlowPair

#: A resized dense-flow pixel stays valid only when (almost) all the source pixels it blends are.
_VALID_BLEND = 1.0 - 1e-3


def to_tensors(pair: FlowPair) -> dict[str, torch.Tensor]:
    """A FlowPair as training tensors, without augmentation.

    Returns ``img1``, ``img2``: 3×H×W float32 in [0, 255]; ``flow``: 2×H×W float32;
    ``valid``: H×W float32 in {0, 1}. A pair without flow gets zero flow and valid all 0;
    ``valid=None`` means every finite flow pixel is valid; invalid pixels have flow 0.
    """
    img1 = torch.tensor(pair.img1, dtype=torch.float32).permute(2, 0, 1)
    img2 = torch.tensor(pair.img2, dtype=torch.float32).permute(2, 0, 1)
    height, width = img1.shape[-2:]
    if pair.flow is None:
        flow = torch.zeros(2, height, width)
        valid = torch.zeros(height, width, dtype=torch.bool)
    else:
        flow = torch.tensor(pair.flow, dtype=torch.float32).permute(2, 0, 1).contiguous()
        valid = torch.isfinite(flow).all(dim=0)
        if pair.valid is not None:
            valid &= torch.tensor(pair.valid, dtype=torch.bool)
        flow[:, ~valid] = 0.0
    return {"img1": img1, "img2": img2, "flow": flow, "valid": valid.float()}


def resize_sparse_flow(
    flow: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize sparse flow by moving each valid pixel to its scaled position.

    Args:
        flow: 2×H×W flow in pixels.
        valid: H×W bool.
        size: (h, w) of the output.

    Returns:
        (2×h×w flow, h×w bool valid): each valid source pixel lands at the nearest output
        pixel of its scaled centre, with its flow scaled by (w/W, h/H); nothing is
        interpolated, so invalid pixels never leak into valid ones. When several points land
        on one pixel the first in raster order wins.
    """
    height, width = valid.shape
    out_height, out_width = size
    scale = torch.tensor([out_width / width, out_height / height], dtype=flow.dtype, device=flow.device)
    ys, xs = torch.nonzero(valid, as_tuple=True)
    new_x = torch.round((xs.to(flow.dtype) + 0.5) * scale[0] - 0.5).long()
    new_y = torch.round((ys.to(flow.dtype) + 0.5) * scale[1] - 0.5).long()
    inside = (new_x >= 0) & (new_x < out_width) & (new_y >= 0) & (new_y < out_height)
    target = (new_y * out_width + new_x)[inside]
    values = flow[:, ys[inside], xs[inside]] * scale[:, None]
    order = torch.arange(target.numel(), device=flow.device)
    first = torch.full((out_height * out_width,), target.numel(), dtype=torch.long, device=flow.device)
    first.scatter_reduce_(0, target, order, reduce="amin")
    keep = first[target] == order
    out_flow = torch.zeros(2, out_height * out_width, dtype=flow.dtype, device=flow.device)
    out_flow[:, target[keep]] = values[:, keep]
    out_valid = torch.zeros(out_height * out_width, dtype=torch.bool, device=flow.device)
    out_valid[target[keep]] = True
    return out_flow.view(2, out_height, out_width), out_valid.view(out_height, out_width)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a C×H×W tensor (pixel-centre aligned, like OpenCV's INTER_LINEAR)."""
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


class FlowAugmentor:
    """Random scale, flip, crop, colour jitter and eraser for one FlowPair.

    Args:
        crop_size: (H, W) of the output.
        min_scale, max_scale: log2 range of the random zoom.
        do_flip: allow flips (horizontal p=``h_flip_prob``; vertical p=``v_flip_prob``, dense only).
        sparse: KITTI-style sparse flow (see the module docstring).
        photometric: colour jitter (brightness/contrast/saturation factors in 1±value, hue
            shift in ±``hue`` of the colour circle, applied in random order).
        eraser: paint 1–2 boxes (sides drawn from ``[eraser_size[0], eraser_size[1])`` px) of img2 with
            its mean colour.
        spatial_prob: probability of the random zoom (otherwise only what the crop needs).
        stretch_prob, max_stretch: dense only; extra per-axis zoom ``2^U(-max_stretch, max_stretch)``.
        asymmetric_prob: dense only; probability of jittering the two images independently.

    ``__call__(pair, rng)`` returns ``img1``, ``img2`` (3×H×W float32 in [0, 255]), ``flow``
    (2×H×W float32), ``valid`` (H×W float32 in {0, 1}). A pair without flow (unlabelled
    frames) gets zero flow and valid all 0 from the same geometric transform.

    Example:
        >>> augment = FlowAugmentor(crop_size=(368, 496))
        >>> sample = augment(pair, np.random.default_rng(7))  # doctest: +SKIP
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        min_scale: float = -0.2,
        max_scale: float = 0.5,
        do_flip: bool = True,
        sparse: bool = False,
        photometric: bool = True,
        eraser: bool = True,
        *,
        spatial_prob: float = 0.8,
        stretch_prob: float = 0.8,
        max_stretch: float = 0.2,
        h_flip_prob: float = 0.5,
        v_flip_prob: float = 0.1,
        asymmetric_prob: float = 0.2,
        eraser_prob: float = 0.5,
        eraser_size: tuple[int, int] = (50, 100),
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.5 / 3.14,
    ) -> None:
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be two positive integers (H, W), got {crop_size}")
        if min_scale > max_scale:
            raise ValueError(f"min_scale must not exceed max_scale, got {min_scale} > {max_scale}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.min_scale, self.max_scale = min_scale, max_scale
        self.do_flip, self.sparse = do_flip, sparse
        self.photometric, self.eraser = photometric, eraser
        self.spatial_prob, self.stretch_prob, self.max_stretch = spatial_prob, stretch_prob, max_stretch
        self.h_flip_prob, self.v_flip_prob = h_flip_prob, v_flip_prob
        self.asymmetric_prob, self.eraser_prob, self.eraser_size = asymmetric_prob, eraser_prob, eraser_size
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, pair: FlowPair, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        sample = to_tensors(pair)
        img1, img2 = sample["img1"] / 255.0, sample["img2"] / 255.0
        flow, valid = sample["flow"], sample["valid"] > 0
        if self.photometric:
            img1, img2 = self._jitter_pair(img1, img2, rng)
        if self.eraser:
            img2 = self._erase(img2, rng)
        img1, img2, flow, valid = self._spatial(img1, img2, flow, valid, rng)
        return {"img1": img1 * 255.0, "img2": img2 * 255.0, "flow": flow, "valid": valid.float()}

    def _jitter(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """torchvision-style ColorJitter of a 3×H×W image in [0, 1]."""
        factors = [
            rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness),
            rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast),
            rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation),
            rng.uniform(-self.hue, self.hue) * 2 * math.pi,  # kornia takes the hue shift in radians
        ]
        return adjust_colours(image[None], torch.tensor([factors]), order=rng.permutation(4).tolist())[0]

    def _jitter_pair(self, img1: torch.Tensor, img2: torch.Tensor,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.sparse and rng.random() < self.asymmetric_prob:
            return self._jitter(img1, rng), self._jitter(img2, rng)
        # One jitter over both frames stacked, so contrast uses the mean of the pair.
        stacked = self._jitter(torch.cat([img1, img2], dim=1), rng)
        return stacked.split(img1.shape[1], dim=1)

    def _erase(self, img2: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Occlusion-like boxes filled with img2's mean colour (img1 untouched)."""
        if rng.random() >= self.eraser_prob:
            return img2
        img2 = img2.clone()
        height, width = img2.shape[-2:]
        mean_colour = img2.mean(dim=(1, 2), keepdim=True)
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.integers(0, width), rng.integers(0, height)
            dx, dy = rng.integers(*self.eraser_size), rng.integers(*self.eraser_size)
            img2[:, y0:y0 + dy, x0:x0 + dx] = mean_colour
        return img2

    def _draw_scale(self, height: int, width: int, rng: np.random.Generator) -> tuple[float, float]:
        """(scale_y, scale_x): the random zoom, never smaller than what the crop needs."""
        crop_h, crop_w = self.crop_size
        margin = 1 if self.sparse else 8  # the official augmentors keep this slack around the crop
        fit = max((crop_h + margin) / height, (crop_w + margin) / width)
        scale_x = scale_y = 2.0 ** rng.uniform(self.min_scale, self.max_scale)
        if not self.sparse and rng.random() < self.stretch_prob:
            scale_x *= 2.0 ** rng.uniform(-self.max_stretch, self.max_stretch)
            scale_y *= 2.0 ** rng.uniform(-self.max_stretch, self.max_stretch)
        if rng.random() < self.spatial_prob:
            return max(scale_y, fit), max(scale_x, fit)
        return max(1.0, crop_h / height), max(1.0, crop_w / width)

    def _spatial(self, img1: torch.Tensor, img2: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        height, width = img1.shape[-2:]
        crop_h, crop_w = self.crop_size
        scale_y, scale_x = self._draw_scale(height, width, rng)
        size = (max(round(height * scale_y), crop_h), max(round(width * scale_x), crop_w))
        if size != (height, width):
            img1, img2 = _resize(img1, size), _resize(img2, size)
            if self.sparse:
                flow, valid = resize_sparse_flow(flow, valid, size)
            else:
                factors = flow.new_tensor([size[1] / width, size[0] / height]).view(2, 1, 1)
                flow = _resize(flow, size) * factors
                valid = _resize(valid[None].float(), size)[0] >= _VALID_BLEND
                flow = flow * valid
        if self.do_flip and rng.random() < self.h_flip_prob:
            img1, img2, flow, valid = img1.flip(-1), img2.flip(-1), flow.flip(-1), valid.flip(-1)
            flow = flow * flow.new_tensor([-1.0, 1.0]).view(2, 1, 1)
        if self.do_flip and not self.sparse and rng.random() < self.v_flip_prob:
            img1, img2, flow, valid = img1.flip(-2), img2.flip(-2), flow.flip(-2), valid.flip(-2)
            flow = flow * flow.new_tensor([1.0, -1.0]).view(2, 1, 1)
        y0, x0 = self._crop_origin(size, rng)
        rows, columns = slice(y0, y0 + crop_h), slice(x0, x0 + crop_w)
        return img1[:, rows, columns], img2[:, rows, columns], flow[:, rows, columns], valid[rows, columns]

    def _crop_origin(self, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        (height, width), (crop_h, crop_w) = size, self.crop_size
        if not self.sparse:
            return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        # Sparse: draw past the borders and clip, so crops touch the (well-labelled) edges more often.
        margin_y, margin_x = 20, 50
        y0 = int(np.clip(rng.integers(0, height - crop_h + margin_y + 1), 0, height - crop_h))
        x0 = int(np.clip(rng.integers(-margin_x, width - crop_w + margin_x + 1), 0, width - crop_w))
        return y0, x0
