"""End-point error metrics over B×2×H×W flows with optional B×H×W validity masks."""

from __future__ import annotations

import torch


def end_point_error(flow_pred: torch.Tensor, flow_gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel end-point error, B×H×W, of two B×2×H×W flows."""
    return torch.linalg.vector_norm(flow_pred - flow_gt, dim=1)


def flow_metrics(flow_pred: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """AEPE, 1/3/5-px outlier-free rates and KITTI Fl-all (percent) over valid pixels.

    ``valid`` is B×H×W (bool or 0/1); Fl-all counts a pixel as an outlier when its EPE
    exceeds both 3 px and 5% of the ground-truth magnitude.
    """
    epe = end_point_error(flow_pred, flow_gt)
    magnitude = torch.linalg.vector_norm(flow_gt, dim=1)
    mask = torch.ones_like(epe, dtype=torch.bool) if valid is None else valid.bool()
    epe_valid, magnitude_valid = epe[mask], magnitude[mask]
    if epe_valid.numel() == 0:
        raise ValueError("no valid pixels to measure flow error on")
    outlier = (epe_valid > 3.0) & (epe_valid / magnitude_valid.clamp_min(1e-12) > 0.05)
    return {
        "epe": epe_valid.mean().item(),
        "1px": (epe_valid < 1).float().mean().item() * 100,
        "3px": (epe_valid < 3).float().mean().item() * 100,
        "5px": (epe_valid < 5).float().mean().item() * 100,
        "fl_all": outlier.float().mean().item() * 100,
    }
