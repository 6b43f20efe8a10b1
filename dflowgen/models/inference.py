"""Inference: a flow network's final estimate for image pairs of any size."""

from __future__ import annotations

import torch
from torch import nn

from dflowgen.models.raft import InputPadder


def model_device(model: nn.Module) -> torch.device:
    """The device ``model``'s parameters live on."""
    return next(model.parameters()).device


@torch.inference_mode()
def predict_flow(model: nn.Module, img1: torch.Tensor, img2: torch.Tensor, iters: int,
                 pad_mode: str = "sintel") -> torch.Tensor:
    """B×2×H×W flow for B×3×H×W images in [0, 255] of any size (padded to /8 and cropped back)."""
    padder = InputPadder(img1.shape, mode=pad_mode)
    padded1, padded2 = padder.pad(img1, img2)
    flow = model(padded1, padded2, iters=iters, final_only=True)[-1]
    return padder.unpad(flow.float())
