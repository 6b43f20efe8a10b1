"""FlowNet's contracting parts: FlowNetS's single encoder over stacked frames, FlowNetC's two-stream one.

Both return the skip features the decoder needs, finest first: ``[conv2, conv3, conv4, conv5, conv6]``
at 1/4 … 1/64 resolution with ``SKIP_CHANNELS`` (128, 256, 512, 512, 1024) channels at full width
(``width`` scales every layer's channels, e.g. 1/8 for tests). Images come in normalised
(see :class:`dflowgen.models.flownet.flownet.FlowNet`), B×3×H×W each, H and W multiples of 64.
"""

from __future__ import annotations

import torch
from torch import nn

from dflowgen.models.flownet.correlation import Correlation
from dflowgen.models.flownet.layers import conv_block

CONV1_CHANNELS = 64
SKIP_CHANNELS = (128, 256, 512, 512, 1024)
REDIRECT_CHANNELS = 32


def scaled(channels: int, width: float) -> int:
    """``channels`` × ``width``, at least 1."""
    return max(1, round(channels * width))


class _Tail(nn.Module):
    """conv4 … conv6_1: the layers after 1/8 resolution, common to both encoders."""

    def __init__(self, batch_norm: bool, width: float) -> None:
        super().__init__()
        c3, c4, c5, c6 = (scaled(c, width) for c in SKIP_CHANNELS[1:])
        self.conv4 = conv_block(c3, c4, stride=2, batch_norm=batch_norm)
        self.conv4_1 = conv_block(c4, c4, batch_norm=batch_norm)
        self.conv5 = conv_block(c4, c5, stride=2, batch_norm=batch_norm)
        self.conv5_1 = conv_block(c5, c5, batch_norm=batch_norm)
        self.conv6 = conv_block(c5, c6, stride=2, batch_norm=batch_norm)
        self.conv6_1 = conv_block(c6, c6, batch_norm=batch_norm)

    def tail(self, conv3: torch.Tensor) -> list[torch.Tensor]:
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        return [conv4, conv5, self.conv6_1(self.conv6(conv5))]


class FlowNetSEncoder(_Tail):
    """FlowNetS: the two frames stacked as 6 channels through one convolution stack."""

    def __init__(self, batch_norm: bool = False, width: float = 1.0) -> None:
        super().__init__(batch_norm, width)
        c1, c2, c3 = scaled(CONV1_CHANNELS, width), scaled(SKIP_CHANNELS[0], width), scaled(SKIP_CHANNELS[1], width)
        self.conv1 = conv_block(6, c1, kernel_size=7, stride=2, batch_norm=batch_norm)
        self.conv2 = conv_block(c1, c2, kernel_size=5, stride=2, batch_norm=batch_norm)
        self.conv3 = conv_block(c2, c3, kernel_size=5, stride=2, batch_norm=batch_norm)
        self.conv3_1 = conv_block(c3, c3, batch_norm=batch_norm)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> list[torch.Tensor]:
        conv2 = self.conv2(self.conv1(torch.cat([image1, image2], dim=1)))
        conv3 = self.conv3_1(self.conv3(conv2))
        return [conv2, conv3, *self.tail(conv3)]


class FlowNetCEncoder(_Tail):
    """FlowNetC: a shared-weight stream per frame to 1/8 resolution, their correlation (d = 20, stride 2)
    beside a 1×1 "redirect" of frame 1's features, then the rest of the encoder."""

    def __init__(self, batch_norm: bool = False, width: float = 1.0, max_displacement: int = 20,
                 stride: int = 2) -> None:
        super().__init__(batch_norm, width)
        c1, c2, c3 = scaled(CONV1_CHANNELS, width), scaled(SKIP_CHANNELS[0], width), scaled(SKIP_CHANNELS[1], width)
        redirect = scaled(REDIRECT_CHANNELS, width)
        self.conv1 = conv_block(3, c1, kernel_size=7, stride=2, batch_norm=batch_norm)
        self.conv2 = conv_block(c1, c2, kernel_size=5, stride=2, batch_norm=batch_norm)
        self.conv3 = conv_block(c2, c3, kernel_size=5, stride=2, batch_norm=batch_norm)
        self.conv_redir = conv_block(c3, redirect, kernel_size=1, batch_norm=batch_norm)
        self.correlation = Correlation(max_displacement, stride)
        self.conv3_1 = conv_block(redirect + self.correlation.out_channels, c3, batch_norm=batch_norm)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> list[torch.Tensor]:
        # One pass over both frames: the streams share their weights.
        conv2a, conv2b = self.conv2(self.conv1(torch.cat([image1, image2]))).chunk(2)
        conv3a, conv3b = self.conv3(torch.cat([conv2a, conv2b])).chunk(2)
        matched = torch.cat([self.conv_redir(conv3a), self.correlation(conv3a, conv3b)], dim=1)
        conv3 = self.conv3_1(matched)
        return [conv2a, conv3, *self.tail(conv3)]
