"""Convolutional encoders: images B×3×H×W to features B×C×H/8×W/8.

RAFT uses one encoder design twice: the *feature* encoder (instance norm) embeds both frames
for the correlation volume, and the *context* encoder (batch norm, or none for RAFT-small)
embeds the first frame into the GRU's initial hidden state and its constant context.
RAFT stacks residual blocks, RAFT-small cheaper bottleneck blocks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

Norm = Literal["batch", "instance", "none"]
NORMS: tuple[Norm, ...] = ("batch", "instance", "none")


class InstanceNorm(nn.Module):
    """Instance normalisation without affine parameters (like ``nn.InstanceNorm2d()``, as in the released weights).

    Computed as a group norm with one channel per group: the same values, several times faster
    on CPU, and fast for channels-last tensors too. Channels-last CPU tensors take
    :class:`ChannelsLastInstanceNorm`'s backward.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return ChannelsLastInstanceNorm.apply(x, self.eps)
        return F.group_norm(x, num_groups=x.shape[1], eps=self.eps)


class ChannelsLastInstanceNorm(torch.autograd.Function):
    """Instance norm of a ``B×C×H×W`` tensor with a backward written for channels-last memory.

    torch's CPU group-norm backward is 4-10× slower on channels-last tensors than on contiguous
    ones (on 2 threads, 16×32×120×160: 89 against 25 ms; 16×64×60×80: 34 against 4 ms), and
    RAFT's encoders run channels-last for their convolutions. The closed form below is five
    passes over memory in any layout; the forward is torch's own.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ANN001 (autograd's signature)
        batch, channels, height, width = x.shape
        y, mean, rstd = torch.native_group_norm(x, None, None, batch, channels, height * width, channels, eps)
        # x, not y: the ReLU after the norm overwrites y in place.
        ctx.save_for_backward(x, mean.view(batch, channels, 1, 1), rstd.view(batch, channels, 1, 1))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        # With y = (x − μ)·s and means over each channel's H×W:
        #   dx = s·(dy − mean(dy) − y·mean(dy·y)),  mean(dy·y) = s·(mean(dy·x) − μ·mean(dy)),
        # which is two multiply-adds over x and dy:
        #   dx = s·dy + k·x + c,  k = −s²·mean(dy·y),  c = −s·mean(dy) − k·μ.
        # torch's own CPU kernel uses the same coefficients (sums of dy·x and of dy).
        x, mean, rstd = ctx.saved_tensors
        mean_grad = grad_y.mean(dim=(2, 3), keepdim=True)
        mean_grad_y = rstd * ((grad_y * x).mean(dim=(2, 3), keepdim=True) - mean * mean_grad)
        slope = -rstd.square() * mean_grad_y
        offset = -rstd * mean_grad - slope * mean
        return torch.addcmul(offset, x, slope).addcmul_(grad_y, rstd), None


def make_norm(norm: Norm, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` channels."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return InstanceNorm()
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _shortcut(in_channels: int, out_channels: int, stride: int, norm_layer: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride), norm_layer)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a (strided, projected) shortcut; RAFT's encoder block."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = make_norm(norm, out_channels)
        self.norm2 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1:
            # The released checkpoints store the shortcut's norm twice, as ``norm3`` and as
            # ``downsample.1``: registering one module under both names keeps the keys identical.
            self.norm3 = make_norm(norm, out_channels)
            self.downsample = _shortcut(in_channels, out_channels, stride, self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


class BottleneckBlock(nn.Module):
    """1×1 → 3×3 → 1×1 convolutions at a quarter of the width; RAFT-small's encoder block."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, stride: int = 1) -> None:
        super().__init__()
        width = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1)
        self.norm1 = make_norm(norm, width)
        self.norm2 = make_norm(norm, width)
        self.norm3 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1:
            # Shared with ``downsample.1`` for the same reason as ResidualBlock.norm3.
            self.norm4 = make_norm(norm, out_channels)
            self.downsample = _shortcut(in_channels, out_channels, stride, self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


class FeatureEncoder(nn.Module):
    """A 7×7 stride-2 stem, three stages of two blocks (strides 1, 2, 2) and a 1×1 projection.

    Args:
        block: ``ResidualBlock`` or ``BottleneckBlock``.
        widths: channels of the stem and of the three stages, e.g. ``(64, 64, 96, 128)``.
        output_dim: channels of the output features.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.

    Maps B×3×H×W to B×``output_dim``×H/8×W/8 (H, W multiples of 8).
    """

    def __init__(
        self,
        block: type[ResidualBlock] | type[BottleneckBlock],
        widths: tuple[int, int, int, int],
        output_dim: int,
        norm: Norm,
    ) -> None:
        super().__init__()
        stem, *stages = widths
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3)
        self.norm1 = make_norm(norm, stem)
        self.relu1 = nn.ReLU(inplace=True)
        in_channels = stem
        for index, (width, stride) in enumerate(zip(stages, (1, 2, 2)), start=1):
            layer = nn.Sequential(block(in_channels, width, norm, stride), block(width, width, norm, 1))
            self.add_module(f"layer{index}", layer)
            in_channels = width
        self.conv2 = nn.Conv2d(in_channels, output_dim, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(images)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv2(x)
