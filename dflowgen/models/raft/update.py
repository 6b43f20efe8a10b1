"""RAFT's update operator: motion encoder, convolutional GRU, flow head and upsampling-mask head.

Every step the GRU's gates see ``cat([hidden, context, motion])``. The context part is the same
at every step, so its contribution to all gates (a convolution, linear in its input) is computed
once per forward pass by :meth:`ConvGRU.prepare` and added at each step; z and r gates are
evaluated by one convolution. Results equal the plain formulation up to float rounding, and the
parameters keep the released checkpoints' layout (one convolution per gate over the full input).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1×1 convolution (``weight`` C'×C×1×1) as a matrix product over channels-last pixels.

    Same values as ``F.conv2d``; avoids the slow im2col path torch takes for 1×1 convolutions on
    one CPU thread. Returns a channels-last B×C'×H×W tensor.
    """
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)


class MotionEncoder(nn.Module):
    """Encodes correlation samples and the current flow into motion features (flow appended).

    Args:
        corr_channels: channels of a correlation look-up, L·(2r+1)².
        corr_widths: output widths of the 1×1 and (optional) following 3×3 correlation convolutions.
        flow_widths: output widths of the 7×7 and 3×3 flow convolutions.
        out_channels: channels of the result, flow included (the fusing convolution makes 2 fewer).

    Maps corr B×``corr_channels``×H×W and flow B×2×H×W to B×``out_channels``×H×W.
    """

    def __init__(
        self,
        corr_channels: int,
        corr_widths: tuple[int, ...],
        flow_widths: tuple[int, int],
        out_channels: int,
    ) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, corr_widths[0], kernel_size=1)
        self.convc2 = None
        if len(corr_widths) > 1:
            self.convc2 = nn.Conv2d(corr_widths[0], corr_widths[1], kernel_size=3, padding=1)
        self.convf1 = nn.Conv2d(2, flow_widths[0], kernel_size=7, padding=3)
        self.convf2 = nn.Conv2d(flow_widths[0], flow_widths[1], kernel_size=3, padding=1)
        self.conv = nn.Conv2d(corr_widths[-1] + flow_widths[1], out_channels - 2, kernel_size=3, padding=1)

    def forward(self, corr: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        corr_features = F.relu(pointwise_conv(corr, self.convc1.weight, self.convc1.bias))
        if self.convc2 is not None:
            corr_features = F.relu(self.convc2(corr_features))
        flow_features = F.relu(self.convf2(F.relu(self.convf1(flow))))
        motion = F.relu(self.conv(torch.cat([corr_features, flow_features], dim=1)))
        return torch.cat([motion, flow.to(motion.dtype)], dim=1)


class GRUStage(NamedTuple):
    """What one GRU stage needs at every step, computed once per forward pass by :meth:`ConvGRU.prepare`."""

    context_gates: torch.Tensor  # B×3h×H×W: the context's share of the z, r, q gates, biases included
    weight_zr: torch.Tensor  # 2h×(h + m)×k: z and r weights over cat([hidden, motion])
    weight_q: torch.Tensor  # h×(h + m)×k: q weights over cat([r·hidden, motion])
    padding: tuple[int, int]


class ConvGRU(nn.Module):
    """Convolutional GRU cell over ``cat([hidden, context, motion])``, in one or more stages.

    Each stage has its own z, r, q convolutions (``convz{suffix}`` etc.) with the given kernel;
    RAFT-small uses one 3×3 stage, RAFT two separable stages, 1×5 then 5×1 (:func:`sep_conv_gru`).
    """

    def __init__(
        self,
        hidden_dim: int,
        context_dim: int,
        motion_dim: int,
        kernel_sizes: tuple[tuple[int, int], ...] = ((3, 3),),
        suffixes: tuple[str, ...] = ("",),
    ) -> None:
        super().__init__()
        self.hidden_dim, self.context_dim = hidden_dim, context_dim
        in_channels = hidden_dim + context_dim + motion_dim
        self.stages: list[tuple[str, str, str]] = []
        for kernel, suffix in zip(kernel_sizes, suffixes, strict=True):
            padding = (kernel[0] // 2, kernel[1] // 2)
            names = (f"convz{suffix}", f"convr{suffix}", f"convq{suffix}")
            for name in names:
                self.add_module(name, nn.Conv2d(in_channels, hidden_dim, kernel, padding=padding))
            self.stages.append(names)

    def _stage_convs(self) -> list[tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]]:
        return [tuple(getattr(self, name) for name in names) for names in self.stages]  # type: ignore[misc]

    def prepare(self, context: torch.Tensor) -> list[GRUStage]:
        """Per stage: the context's contribution to the gates, and the fused hidden/motion weights.

        Args:
            context: B×c×H×W context features, constant over the refinement steps.
        """
        h, c = self.hidden_dim, self.context_dim
        stages = []
        for convs in self._stage_convs():
            weight = torch.cat([conv.weight for conv in convs])  # 3h × (h + c + m) × k
            bias = torch.cat([conv.bias for conv in convs])
            context_gates = F.conv2d(context, weight[:, h : h + c], bias, padding=convs[0].padding)
            hidden_motion = torch.cat([weight[:, :h], weight[:, h + c :]], dim=1)
            stages.append(GRUStage(context_gates, hidden_motion[: 2 * h], hidden_motion[2 * h :], convs[0].padding))
        return stages

    def forward(self, hidden: torch.Tensor, motion: torch.Tensor, stages: list[GRUStage]) -> torch.Tensor:
        """One GRU step: hidden B×h×H×W and motion B×m×H×W; ``stages`` from :meth:`prepare`."""
        h = self.hidden_dim
        for stage in stages:
            zr = F.conv2d(torch.cat([hidden, motion], dim=1), stage.weight_zr, padding=stage.padding)
            z, r = torch.sigmoid(zr + stage.context_gates[:, : 2 * h]).split(h, dim=1)
            q = F.conv2d(torch.cat([r * hidden, motion], dim=1), stage.weight_q, padding=stage.padding)
            hidden = torch.lerp(hidden, torch.tanh(q + stage.context_gates[:, 2 * h :]), z)
        return hidden


def sep_conv_gru(hidden_dim: int, context_dim: int, motion_dim: int) -> ConvGRU:
    """RAFT's GRU: a horizontal 1×5 stage then a vertical 5×1 stage."""
    return ConvGRU(hidden_dim, context_dim, motion_dim, kernel_sizes=((1, 5), (5, 1)), suffixes=("1", "2"))


class FlowHead(nn.Module):
    """Two 3×3 convolutions from the hidden state to a B×2×H×W flow update."""

    def __init__(self, hidden_dim: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden_dim, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(hidden)))


class MaskPredictor(nn.Sequential):
    """Convex-upsampling weights B×(9·f²)×H×W from the hidden state (f = upsampling factor).

    A ``Sequential`` so its parameters keep the released names (``mask.0``, ``mask.2``).
    """

    def __init__(self, hidden_dim: int, width: int = 256, factor: int = 8) -> None:
        super().__init__(
            nn.Conv2d(hidden_dim, width, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 9 * factor**2, kernel_size=1),
        )
        self.factor = factor

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        conv, relu, logits = self
        # RAFT scales the logits by 0.25 to balance this head's gradients against the flow head's.
        # Scaling the 1×1 weights instead is exact (a power of two) and cheaper.
        return pointwise_conv(relu(conv(hidden)), 0.25 * logits.weight, 0.25 * logits.bias)


class UpdateBlock(nn.Module):
    """Motion encoder → GRU → flow head, with an optional upsampling-mask head (``mask``)."""

    def __init__(
        self,
        encoder: MotionEncoder,
        gru: ConvGRU,
        flow_head: FlowHead,
        mask: MaskPredictor | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.gru = gru
        self.flow_head = flow_head
        self.mask = mask

    def forward(
        self,
        hidden: torch.Tensor,
        gru_stages: list[GRUStage],
        corr: torch.Tensor,
        flow: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One refinement step: returns (new hidden state, B×2×H×W flow update).

        ``gru_stages`` comes from ``self.gru.prepare(context)``.
        """
        motion = self.encoder(corr, flow)
        hidden = self.gru(hidden, motion, gru_stages)
        return hidden, self.flow_head(hidden)
