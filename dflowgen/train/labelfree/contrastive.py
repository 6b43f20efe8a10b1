"""A contrastive flow loss on RAFT's matching features [CLIP-Flow §3.2], kept simple.

RAFT matches frames through the feature encoder ``fnet``: one ``C``-vector per pixel at 1/8
resolution, correlated across frames. Given a flow label, the vector of frame 1 at ``p`` should
be most similar to the vector of frame 2 at ``p + F(p)/8`` among the vectors of frame 2 at the
positions the other pixels move to. That is InfoNCE over ``K`` anchor pixels per sample:

    L = −mean_a log( exp(s(a, a)/τ) / Σ_b exp(s(a, b)/τ) ),   s(a, b) = cos(f1(p_a), f2(p_b + F(p_b)/8)),

with frame 2 read bilinearly at the moved positions. Anchors are coarse pixels whose whole
8×8 block has a valid label and which move inside frame 2; they are drawn at random (one
seeded generator per step). The features come from the same forward pass as the flow
(:class:`FeatureTap`), so the loss shapes the features the correlation uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from dflowgen.losses.selfsup import flow_warp

FEATURE_STRIDE = 8


class FeatureTap:
    """The outputs of a RAFT model's feature encoder (``model.fnet``) during a forward pass.

    RAFT runs ``fnet`` on frame 1's batch and then frame 2's (in one call over both, or one
    call each); :meth:`pair` gives ``(features1, features2)``, each ``B×C×H/8×W/8``.
    """

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.outputs:
            raise RuntimeError("no features were captured: run the model inside tap_features()")
        features = torch.cat(self.outputs).float()
        first, second = features.chunk(2)
        return first, second


@contextmanager
def tap_features(model: nn.Module) -> Iterator[FeatureTap]:
    """Capture ``model.fnet``'s outputs while the block runs (unwraps DistributedDataParallel)."""
    network = model.module if hasattr(model, "module") else model
    tap = FeatureTap()
    handle = network.fnet.register_forward_hook(lambda _module, _inputs, output: tap.outputs.append(output))
    try:
        yield tap
    finally:
        handle.remove()


def coarse_labels(flow: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``B×2×H×W`` flow label and ``B×H×W`` 0/1 mask at 1/8: block means, in 1/8 pixels.

    A coarse pixel is valid only when its whole 8×8 block is.
    """
    mask = valid[:, None].to(flow.dtype)
    counts = F.avg_pool2d(mask, FEATURE_STRIDE)
    coarse = F.avg_pool2d(flow * mask, FEATURE_STRIDE) / counts.clamp_min(1e-6) / FEATURE_STRIDE
    return coarse, (counts[:, 0] >= 1.0 - 1e-6).to(flow.dtype)


def contrastive_flow_loss(features1: torch.Tensor, features2: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor,
                          temperature: float = 0.07, num_anchors: int = 256,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Scalar InfoNCE between frame-1 features and frame-2 features at the labelled positions.

    Args:
        features1, features2: ``B×C×h×w`` feature maps at 1/8 of the frames.
        flow: ``B×2×H×W`` flow label of frame 1 in pixels (``H = 8h``, ``W = 8w``).
        valid: ``B×H×W`` 0/1 mask of labelled pixels.
        temperature: τ.
        num_anchors: anchors drawn per sample (at most ``h·w``).
        generator: CPU generator of the anchor draw (None: torch's global one).

    Returns:
        the mean over every sample's valid anchors; 0 (still a graph node) when none is valid.
    """
    coarse_flow, coarse_valid = coarse_labels(flow, valid)
    warped2, inside = flow_warp(features2, coarse_flow)
    usable = (coarse_valid * inside[:, 0]).flatten(1) > 0.5  # B×hw
    batch, channels = features1.shape[:2]
    count = min(num_anchors, usable.shape[1])
    scores = torch.rand(usable.shape, generator=generator).to(usable.device)
    scores = torch.where(usable, scores, torch.full_like(scores, -1.0))
    anchors = scores.topk(count, dim=1).indices  # B×K: valid anchors first, in random order
    anchor_valid = usable.gather(1, anchors)

    def gather(features: torch.Tensor) -> torch.Tensor:
        flat = F.normalize(features.flatten(2), dim=1)  # B×C×hw
        return flat.gather(2, anchors[:, None].expand(-1, channels, -1)).transpose(1, 2)  # B×K×C

    logits = gather(features1) @ gather(warped2).transpose(1, 2) / temperature  # B×K×K
    logits = logits.masked_fill(~anchor_valid[:, None, :], float("-inf"))
    logits = torch.where(anchor_valid[:, :, None], logits, torch.zeros_like(logits))  # rows of invalid anchors
    targets = torch.arange(count, device=logits.device).expand(batch, -1)
    per_anchor = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    weight = anchor_valid.flatten().to(per_anchor.dtype)
    return (per_anchor * weight).sum() / weight.sum().clamp_min(1.0)
