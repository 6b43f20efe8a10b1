"""FlowNetC's correlation layer [FlowNet §3]: dot products of two feature maps over a window of displacements."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def correlation(features1: torch.Tensor, features2: torch.Tensor, max_displacement: int = 20,
                stride: int = 2) -> torch.Tensor:
    """Correlate B×C×H×W ``features1`` with ``features2`` shifted by every displacement of the window.

    Displacements are ``(dy, dx)`` in ``{-max_displacement, …, max_displacement}`` in steps of
    ``stride`` (the FlowNet paper's ``d = 20, s2 = 2``: 21×21 = 441 of them); ``features2`` is
    zero outside the image. Output channel ``k = i·n + j`` (``n`` displacements per axis) holds
    ``Σ_c features1[c, y, x] · features2[c, y + dy_i, x + dx_j] / C``, so the result is
    B×n²×H×W, the layout of the widely used PyTorch ports.
    """
    if features1.ndim != 4 or features2.shape != features1.shape:
        raise ValueError(f"features must be two B×C×H×W tensors of one shape, got {tuple(features1.shape)} "
                         f"and {tuple(features2.shape)}")
    batch, channels, height, width = features1.shape
    shifts = range(-max_displacement, max_displacement + 1, stride)
    padded = F.pad(features2, [max_displacement] * 4)
    rows = []
    # One pass per vertical displacement; the horizontal ones are batched as a stack of shifted views.
    for dy in shifts:
        band = padded[:, :, max_displacement + dy:max_displacement + dy + height]
        windows = torch.stack([band[..., max_displacement + dx:max_displacement + dx + width] for dx in shifts], 1)
        rows.append(torch.einsum("bchw,bkchw->bkhw", features1, windows))
    return torch.cat(rows, dim=1) / channels


class Correlation(nn.Module):
    """:func:`correlation` followed by FlowNetC's leaky ReLU (slope 0.1); no parameters."""

    def __init__(self, max_displacement: int = 20, stride: int = 2) -> None:
        super().__init__()
        self.max_displacement, self.stride = max_displacement, stride
        self.out_channels = (2 * (max_displacement // stride) + 1) ** 2

    def forward(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        """B×C×H×W twice → B×n²×H×W."""
        return F.leaky_relu(correlation(features1, features2, self.max_displacement, self.stride), 0.1)
