"""Pad images to a multiple of 8 for RAFT, and crop its flow back (the official evaluation protocol)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["sintel", "kitti"]


class InputPadder:
    """Replicate-pad ``…×H×W`` tensors so that H and W become multiples of ``divisor``.

    ``mode="sintel"`` centres the padding (the extra pixel of an odd amount goes right/bottom);
    ``mode="kitti"`` centres it horizontally and puts all vertical padding at the bottom.

    Example:
        >>> padder = InputPadder((436, 1024))
        >>> image1, image2 = padder.pad(torch.zeros(1, 3, 436, 1024), torch.zeros(1, 3, 436, 1024))
        >>> tuple(image1.shape), tuple(padder.unpad(image1).shape)
        ((1, 3, 440, 1024), (1, 3, 436, 1024))
    """

    def __init__(self, dims: tuple[int, ...] | torch.Size, mode: PadMode = "sintel", divisor: int = 8) -> None:
        if mode not in ("sintel", "kitti"):
            raise ValueError(f"mode must be 'sintel' or 'kitti', got {mode!r}")
        self.height, self.width = int(dims[-2]), int(dims[-1])
        pad_h = -self.height % divisor
        pad_w = -self.width % divisor
        top = pad_h // 2 if mode == "sintel" else 0
        # F.pad order: left, right, top, bottom.
        self.padding = (pad_w // 2, pad_w - pad_w // 2, top, pad_h - top)

    def pad(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The tensors (…×H×W, 3-D or 4-D) padded by edge replication."""
        return [F.pad(tensor, self.padding, mode="replicate") for tensor in tensors]

    def unpad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Crop a padded …×H'×W' tensor back to the original H×W."""
        left, _, top, _ = self.padding
        return tensor[..., top : top + self.height, left : left + self.width]
