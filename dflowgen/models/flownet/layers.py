"""FlowNet's building blocks, named as in the widely used PyTorch ports so their state dicts load unchanged.

``conv_block`` is ``Sequential(Conv2d, [BatchNorm2d], LeakyReLU(0.1))`` (keys ``N.0.weight``, …),
``deconv_block`` ``Sequential(ConvTranspose2d ×2, LeakyReLU(0.1))``, ``flow_predictor`` a bare 3×3
convolution to 2 channels and ``flow_upsampler`` a ×2 transposed convolution of a flow.
"""

from __future__ import annotations

from torch import nn


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
               batch_norm: bool = False) -> nn.Sequential:
    """Convolution (same padding), optional BatchNorm, leaky ReLU 0.1."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=not batch_norm)
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    return nn.Sequential(conv, *norm, nn.LeakyReLU(0.1, inplace=True))


def deconv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """×2 up-convolution (4×4, stride 2) and leaky ReLU 0.1."""
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
                         nn.LeakyReLU(0.1, inplace=True))


def flow_predictor(in_channels: int) -> nn.Conv2d:
    """3×3 convolution to a 2-channel flow."""
    return nn.Conv2d(in_channels, 2, 3, 1, 1, bias=False)


def flow_upsampler() -> nn.ConvTranspose2d:
    """Learned ×2 upsampling of a 2-channel flow."""
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
