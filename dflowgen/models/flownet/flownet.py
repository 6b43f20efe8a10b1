"""FlowNetS and FlowNetC (Dosovitskiy et al., ICCV 2015) assembled from an encoder and the refinement decoder.

Conventions follow the widely used PyTorch port (ClementPinard/FlowNetPytorch), so its released
state dicts load unchanged (see :mod:`dflowgen.models.flownet.checkpoint`): frames are scaled to
[0, 1] and the port's mean colour subtracted, and every prediction is the flow in full-resolution
pixels divided by ``div_flow`` = 20. The call signature is RAFT's (images in [0, 255], ``iters`` and
``final_only``; a list of flows either way), so evaluation, inference and the DFlow proxies drive either family the same way.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dflowgen.models.flownet.decoder import RefinementDecoder
from dflowgen.models.flownet.encoder import FlowNetCEncoder, FlowNetSEncoder

FlowNetName = Literal["flownets", "flownetc"]
FLOWNET_NAMES: tuple[FlowNetName, ...] = ("flownets", "flownetc")
DIV_FLOW = 20.0
INPUT_MEAN = (0.45, 0.432, 0.411)
STRIDE = 64
"""The encoder halves the size six times: inputs are padded to a multiple of this internally."""


class FlowNet(nn.Module):
    """A FlowNet: ``encoder`` (two frames → skip features) and ``decoder`` (skips → flows at 1/4 … 1/64).

    Args:
        encoder: :class:`FlowNetSEncoder` or :class:`FlowNetCEncoder`.
        decoder: :class:`RefinementDecoder`.
        div_flow: the factor between a prediction and the flow in pixels.
        model_name: recorded in checkpoints (``"flownets"`` or ``"flownetc"``).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, div_flow: float = DIV_FLOW,
                 model_name: str | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.div_flow = div_flow
        self.model_name = model_name
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)

    def freeze_bn(self) -> None:
        """Put every BatchNorm layer in eval mode (a no-op for the BatchNorm-free variants)."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def forward(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: int | None = None,
        flow_init: torch.Tensor | None = None,
        final_only: bool = False,
    ) -> list[torch.Tensor]:
        """Estimate the flow from ``image1`` to ``image2`` (``iters`` and ``flow_init`` are RAFT's; unused here).

        Args:
            image1, image2: B×3×H×W float in [0, 255]; any size (padded to a multiple of 64 inside).
            final_only: return only the final, full-resolution estimate (inference).

        Returns:
            training: ``[flow2, …, flow6]``, flow_l B×2×⌈H/2^l⌉×⌈W/2^l⌉ in pixels / ``div_flow``
            (the input of :func:`dflowgen.losses.multiscale.multiscale_epe`);
            with ``final_only``: a list of one B×2×H×W flow in pixels.
        """
        if image1.ndim != 4 or image1.shape[1] != 3 or image2.shape != image1.shape:
            raise ValueError(f"images must be two B×3×H×W tensors of one shape, got {tuple(image1.shape)} "
                             f"and {tuple(image2.shape)}")
        height, width = image1.shape[2:]
        pad = [0, -width % STRIDE, 0, -height % STRIDE]
        inputs = [F.pad(image / 255.0 - self.mean, pad, mode="replicate") for image in (image1, image2)]
        flows = self.decoder(self.encoder(*inputs))
        flows = [flow[..., :math.ceil(height / 2**level), :math.ceil(width / 2**level)]
                 for level, flow in enumerate(flows, start=2)]
        if not final_only:
            return flows
        finest = self.div_flow * flows[0]
        return [F.interpolate(finest, size=(height, width), mode="bilinear", align_corners=False)]


def build_flownet(model_name: FlowNetName = "flownets", *, batch_norm: bool = False, width: float = 1.0) -> FlowNet:
    """A freshly initialised FlowNetS (``"flownets"``, 38.7 M parameters) or FlowNetC (``"flownetc"``, 39.2 M).

    Args:
        model_name: ``"flownets"`` (frames stacked as 6 channels) or ``"flownetc"`` (correlation).
        batch_norm: BatchNorm after every convolution (the ports' ``flownets_bn`` / ``flownetc_bn``).
        width: multiplies every layer's channels (1 is the paper's network; 1/8 makes a tiny one for tests).

    Example:
        >>> model = build_flownet("flownets").eval()
        >>> flow = model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), final_only=True)[-1]
        >>> tuple(flow.shape)
        (1, 2, 64, 64)
    """
    if model_name not in FLOWNET_NAMES:
        raise ValueError(f"model_name must be one of {FLOWNET_NAMES}, got {model_name!r}")
    encoder = (FlowNetSEncoder if model_name == "flownets" else FlowNetCEncoder)(batch_norm, width)
    model = FlowNet(encoder, RefinementDecoder(width), model_name=model_name)
    # The ports' initialisation: Kaiming for every (transposed) convolution, zero biases.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, 0.1)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
