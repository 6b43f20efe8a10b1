"""End-point error metrics over B×2×H×W flows with optional B×H×W validity masks."""

from __future__ import annotations

import torch


def flow_length(flow: torch.Tensor) -> torch.Tensor:
    """Per-pixel length, B×H×W, of a B×2×H×W flow; its gradient is 0 where the length is 0.

    Not ``torch.linalg.vector_norm(flow, dim=1)``, which gives the same values but is more than
    10× slower on CPU over a 2-channel dimension (2 threads: 47 ms against 3.6 ms forward and
    backward at 2×2×256×320; 119 ms against 2.8 ms forward at 1×2×436×1024).
    """
    squared = flow.square().sum(dim=1)
    zero = squared == 0
    # sqrt's gradient is infinite at 0; routing zeros through sqrt(1) keeps it finite (and 0).
    # NaN and infinity pass through unchanged, so corrupt flow still shows.
    return torch.where(zero, 0.0, squared.where(~zero, 1.0).sqrt())


def end_point_error(flow_pred: torch.Tensor, flow_gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel end-point error, B×H×W, of two B×2×H×W flows."""
    return flow_length(flow_pred - flow_gt)


def flow_metrics(flow_pred: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """AEPE, 1/3/5-px outlier-free rates and KITTI Fl-all (percent) over valid pixels.

    ``valid`` is B×H×W (bool or 0/1); Fl-all counts a pixel as an outlier when its EPE
    exceeds both 3 px and 5% of the ground-truth magnitude.
    """
    epe = end_point_error(flow_pred, flow_gt)
    magnitude = flow_length(flow_gt)
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
