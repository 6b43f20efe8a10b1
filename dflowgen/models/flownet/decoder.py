"""FlowNet's refinement decoder: up-convolutions with a flow prediction at every scale [FlowNet §3, Fig. 3]."""

from __future__ import annotations

import torch
from torch import nn

from dflowgen.models.flownet.encoder import SKIP_CHANNELS, scaled
from dflowgen.models.flownet.layers import deconv_block, flow_predictor, flow_upsampler

DECONV_CHANNELS = (64, 128, 256, 512)
"""Channels of the up-convolutions deconv2 … deconv5 at full width."""


class RefinementDecoder(nn.Module):
    """From the encoder's ``[conv2, …, conv6]`` to flows at 1/4 … 1/64 resolution, finest first.

    At each level the coarser flow is upsampled (learned ×2) and concatenated with the
    up-convolved features and the encoder's skip features, and a new flow is predicted. ``width``
    scales the channels as the encoder's does.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        skips = [scaled(channels, width) for channels in SKIP_CHANNELS]
        self.predict_flow6 = flow_predictor(skips[4])
        inputs = skips[4]
        for level in (5, 4, 3, 2):
            deconv = scaled(DECONV_CHANNELS[level - 2], width)
            setattr(self, f"deconv{level}", deconv_block(inputs, deconv))
            setattr(self, f"upsampled_flow{level + 1}_to_{level}", flow_upsampler())
            inputs = skips[level - 2] + deconv + 2
            setattr(self, f"predict_flow{level}", flow_predictor(inputs))

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[conv2, …, conv6]`` → ``[flow2, …, flow6]``, flow_l B×2×H/2^l×W/2^l."""
        features = skips[4]
        flows = [self.predict_flow6(features)]
        for level in (5, 4, 3, 2):
            upsampled = getattr(self, f"upsampled_flow{level + 1}_to_{level}")(flows[0])
            features = torch.cat([skips[level - 2], getattr(self, f"deconv{level}")(features), upsampled], dim=1)
            flows.insert(0, getattr(self, f"predict_flow{level}")(features))
        return flows
