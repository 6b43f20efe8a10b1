"""RAFT's sequence loss: an exponentially weighted L1 over every refinement iterate [RAFT §3.4].

Normalisation follows the official code: each iterate's L1 is averaged over *all* pixels
and both channels (invalid pixels contribute zero), not over the valid ones only, so a
sample with few valid pixels weighs less. With ``reduction="none"`` every sample gets its
own loss (the mean over its 2×H×W values), and the batch mean of those equals the
``"mean"`` reduction exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from dflowgen.flow.metrics import end_point_error, flow_length
from dflowgen.shapes import check_shape


def sequence_loss(
    flow_preds: Sequence[torch.Tensor],
    flow_gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    gamma: float = 0.8,
    max_flow: float = 400.0,
    reduction: Literal["mean", "none"] = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted L1 over the N iterates ``flow_preds`` (each B×2×H×W), iterate i weighted γ^(N−1−i).

    Args:
        flow_preds: the model's N predictions, first to last, each B×2×H×W.
        flow_gt: B×2×H×W ground truth.
        valid: B×H×W mask (bool or 0/1 float) of pixels with ground truth; None = all.
        gamma: decay of the weights of earlier iterates.
        max_flow: pixels whose ground-truth magnitude is ``>= max_flow`` are excluded.
        reduction: ``"mean"`` gives a scalar loss and metrics over all valid pixels of the
            batch; ``"none"`` gives a B-vector loss and per-sample metrics.

    Returns:
        ``(loss, metrics)``; metrics are detached: ``epe`` (mean end-point error of the
        last iterate over valid pixels) and ``1px``/``3px``/``5px`` (percent of valid pixels
        with EPE below 1/3/5 px, as in :func:`dflowgen.flow.metrics.flow_metrics`).
        A sample without valid pixels gets EPE 0 and rates 0.

    A non-finite value in ``flow_gt`` or a prediction makes the loss non-finite (it is
    multiplied by the mask, not selected), so corrupt data shows instead of vanishing.
    """
    if len(flow_preds) == 0:
        raise ValueError("flow_preds is empty: need at least one iterate")
    sizes = check_shape("flow_gt", flow_gt, "B×2×H×W")
    for index, flow_pred in enumerate(flow_preds):
        check_shape(f"flow_preds[{index}]", flow_pred, "B×2×H×W", sizes)
    if valid is not None:
        check_shape("valid", valid, "B×H×W", sizes)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    magnitude = flow_length(flow_gt)
    mask = magnitude < max_flow
    if valid is not None:
        mask = mask & (valid >= 0.5)
    weight_mask = mask[:, None].to(flow_gt.dtype)

    num_preds = len(flow_preds)
    per_sample = flow_gt.new_zeros(flow_gt.shape[0])
    for i, flow_pred in enumerate(flow_preds):
        l1 = (flow_pred.float() - flow_gt).abs() * weight_mask
        per_sample = per_sample + gamma ** (num_preds - 1 - i) * l1.mean(dim=(1, 2, 3))

    with torch.no_grad():
        epe = end_point_error(flow_preds[-1].float(), flow_gt)
        mask_f = mask.to(epe.dtype)
        below = torch.stack([(epe < t).to(epe.dtype) for t in (1.0, 3.0, 5.0)])
        if reduction == "none":
            count = mask_f.sum(dim=(1, 2)).clamp_min(1.0)
            epe_mean = (epe * mask_f).sum(dim=(1, 2)) / count
            rates = 100.0 * (below * mask_f).sum(dim=(2, 3)) / count
        else:
            count = mask_f.sum().clamp_min(1.0)
            epe_mean = (epe * mask_f).sum() / count
            rates = 100.0 * (below * mask_f).sum(dim=(1, 2, 3)) / count
    metrics = {"epe": epe_mean, "1px": rates[0], "3px": rates[1], "5px": rates[2]}
    loss = per_sample if reduction == "none" else per_sample.mean()
    return loss, metrics
