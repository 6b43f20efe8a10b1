"""FlowNet's multi-scale end-point-error loss [FlowNet §4]: one EPE term per decoder scale.

As in the widely used PyTorch port (and FlowNet's Caffe loss layers), the ground truth is divided
by ``div_flow`` and average-pooled to each prediction's size, each scale's EPE is summed over its
pixels and averaged over the batch, and the scales are weighted by the paper's
0.005, 0.01, 0.02, 0.08, 0.32 (finest first). Invalid pixels (and those with ``|gt| ≥ max_flow``)
are zero in the pooled mask, and a pooled pixel counts by the fraction of valid pixels under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from dflowgen.flow.metrics import end_point_error, flow_length

FLOWNET_SCALE_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)


def multiscale_epe(
    flow_preds: Sequence[torch.Tensor],
    flow_gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    div_flow: float = 20.0,
    weights: Sequence[float] = FLOWNET_SCALE_WEIGHTS,
    max_flow: float = 400.0,
    reduction: Literal["mean", "none"] = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted EPE of FlowNet's predictions ``[flow2, …, flow6]`` (finest first, pixels / ``div_flow``).

    Args:
        flow_preds: B×2×h_l×w_l predictions, finest first (FlowNet's training-mode output).
        flow_gt: B×2×H×W ground truth in pixels.
        valid: B×H×W mask (bool or 0/1); None = all.
        div_flow: the factor between a prediction and pixels.
        weights: one weight per prediction, finest first.
        max_flow: ground-truth magnitudes ``>= max_flow`` are excluded.
        reduction: ``"mean"`` a scalar; ``"none"`` a B-vector (its mean equals ``"mean"``).

    Returns:
        ``(loss, metrics)`` like :func:`dflowgen.losses.sequence.sequence_loss`: ``epe`` and
        ``1px``/``3px``/``5px`` of the finest prediction, upsampled bilinearly to H×W, over valid pixels.
    """
    if len(flow_preds) != len(weights):
        raise ValueError(f"got {len(flow_preds)} predictions for {len(weights)} scale weights")
    if flow_gt.ndim != 4 or flow_gt.shape[1] != 2:
        raise ValueError(f"flow_gt must be B×2×H×W, got {tuple(flow_gt.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    mask = flow_length(flow_gt) < max_flow
    if valid is not None:
        mask = mask & (valid >= 0.5)
    mask = mask[:, None].to(flow_gt.dtype)
    target = flow_gt * mask / div_flow
    per_sample = flow_gt.new_zeros(flow_gt.shape[0])
    for weight, prediction in zip(weights, flow_preds):
        size = prediction.shape[-2:]
        pooled_mask = F.adaptive_avg_pool2d(mask, size)
        pooled = F.adaptive_avg_pool2d(target, size) / pooled_mask.clamp_min(1e-6)
        error = end_point_error(prediction.float(), pooled) * pooled_mask[:, 0]
        per_sample = per_sample + weight * error.sum(dim=(1, 2))

    with torch.no_grad():
        finest = F.interpolate(div_flow * flow_preds[0].float(), size=flow_gt.shape[-2:], mode="bilinear",
                               align_corners=False)
        epe = end_point_error(finest, flow_gt)
        measured = mask[:, 0]
        below = torch.stack([(epe < t).to(epe.dtype) for t in (1.0, 3.0, 5.0)])
        dims = (1, 2) if reduction == "none" else (0, 1, 2)
        count = measured.sum(dim=dims).clamp_min(1.0)
        epe_mean = (epe * measured).sum(dim=dims) / count
        rates = 100.0 * (below * measured).sum(dim=tuple(d + 1 for d in dims)) / count
    metrics = {"epe": epe_mean, "1px": rates[0], "3px": rates[1], "5px": rates[2]}
    loss = per_sample if reduction == "none" else per_sample.mean()
    return loss, metrics
