"""Flow of a network on frames a user brings: consecutive pairs, batched, optionally at a reduced size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dflowgen.models.inference import model_device, predict_flow


def _scaled_flow(model: nn.Module, image1: torch.Tensor, image2: torch.Tensor, iters: int,
                 max_size: int | None) -> torch.Tensor:
    """B×2×H×W flow of B×3×H×W images in [0, 255]; with ``max_size`` the longer side is shrunk to it first
    and the flow is resized back and its vectors scaled to the full size."""
    height, width = image1.shape[-2:]
    scale = 1.0 if max_size is None else min(1.0, max_size / max(height, width))
    if scale == 1.0:
        return predict_flow(model, image1, image2, iters)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small1, small2 = (F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
                      for image in (image1, image2))
    flow = F.interpolate(predict_flow(model, small1, small2, iters), size=(height, width), mode="bilinear",
                         align_corners=False)
    factors = torch.tensor([width / size[1], height / size[0]], device=flow.device).view(1, 2, 1, 1)
    return flow * factors


def estimate_pairs(
    model: nn.Module,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    iters: int = 12,
    max_size: int | None = None,
    batch_size: int = 1,
) -> Iterator[np.ndarray]:
    """The H×W×2 float32 flow (pixels, frame 1 → frame 2) of each pair of H×W×3 uint8 RGB frames, in order.

    Pairs are read lazily, ``batch_size`` at a time, so a long stream is never held whole; a batch
    ends early where the frame size changes. The model runs in eval mode without gradients, on
    the device of its parameters.

    Args:
        model: any network of :data:`dflowgen.models.registry.MODEL_NAMES`.
        pairs: (frame 1, frame 2) arrays.
        iters: RAFT's GRU iterations (FlowNets ignore it).
        max_size: shrink each pair so that its longer side is at most this (for speed); the flow
            is resized back and scaled to the original size.
        batch_size: pairs per forward pass.
    """
    model.eval()
    device = model_device(model)
    batch: list[tuple[np.ndarray, np.ndarray]] = []

    def run() -> Iterator[np.ndarray]:
        images = [torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
                  for frames in zip(*batch)]
        with torch.inference_mode():
            flows = _scaled_flow(model, images[0], images[1], iters, max_size)
        batch.clear()
        yield from flows.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)

    for pair in pairs:
        if batch and pair[0].shape != batch[0][0].shape:
            yield from run()
        batch.append(pair)
        if len(batch) == batch_size:
            yield from run()
    if batch:
        yield from run()


def estimate_flow(model: nn.Module, frames: Iterable[np.ndarray], iters: int = 12, max_size: int | None = None,
                  batch_size: int = 1) -> Iterator[np.ndarray]:
    """The flow between each two consecutive H×W×3 uint8 frames (N frames → N − 1 flows, H×W×2 float32).

    Frames are read one at a time (a video decoder or a generator is fine); the arguments are
    those of :func:`estimate_pairs`.

    Example:
        >>> from dflowgen.models.registry import load_model
        >>> model = load_model("demo-base")                                 # doctest: +SKIP
        >>> flows = list(estimate_flow(model, [frame0, frame1, frame2]))    # doctest: +SKIP
    """

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        previous = None
        for frame in frames:
            if previous is not None:
                yield previous, frame
            previous = frame

    return estimate_pairs(model, pairs(), iters, max_size, batch_size)
