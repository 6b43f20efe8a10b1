"""Photometric effects [DFlow §3.2 step 5]: they change pixels, never the flow.

Each effect takes a per-sample on/off flag (``B`` bool, drawn once, not learnable) and
learnable values; samples that are off pass through unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid


def white_balance_gains(white_balance: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Per-channel gains ``…×3``: ``0.5 + wb`` where on (so wb = 0.5 is neutral), 1 where off."""
    return torch.where(on[..., None], white_balance + 0.5, torch.ones_like(white_balance))


def add_texture_noise(
    image: torch.Tensor, noise: torch.Tensor, coverage: torch.Tensor, on: torch.Tensor
) -> torch.Tensor:
    """``image + noise`` on the foreground: ``B×3×H×W`` image and noise, ``B×1×H×W`` coverage."""
    return torch.addcmul(image, on[:, None, None, None].to(image.dtype) * coverage, noise)


def apply_fog(
    image: torch.Tensor, field: torch.Tensor, density: torch.Tensor, colour: torch.Tensor, on: torch.Tensor
) -> torch.Tensor:
    """Blend fogged samples towards the fog colour by ``density × thickness``.

    Args:
        image: ``B×3×H×W``.
        field: ``B×1×fh×fw`` coarse fog thickness, interpolated over the frame and clipped to [0, 1].
        density: ``B``.
        colour: ``B×3×ch×cw`` colour grid, interpolated over the frame.
        on: ``B`` bool.
    """
    chosen = on.nonzero(as_tuple=True)[0]
    if chosen.numel() == 0:
        return image
    part = image.index_select(0, chosen)
    size = image.shape[-2:]
    thickness = F.interpolate(field.index_select(0, chosen), size=size, mode="bilinear", align_corners=True)
    thickness = F.hardtanh(thickness, 0.0, 1.0)
    colour = colour.index_select(0, chosen)
    if colour.shape[-2:] != (1, 1):
        colour = F.interpolate(colour, size=size, mode="bilinear", align_corners=True)
    amount = density.index_select(0, chosen)[:, None, None, None] * thickness
    return image.index_copy(0, chosen, torch.lerp(part, colour.expand_as(part), amount))


def blur_kernels(sigma: torch.Tensor, angle_deg: torch.Tensor, size: int) -> torch.Tensor:
    """``B×k×k`` anisotropic Gaussian kernels (sum 1) from ``B×2`` (σx, σy) and ``B`` angles."""
    grid = create_meshgrid(size, size, normalized_coordinates=False, device=sigma.device, dtype=sigma.dtype)
    offsets = grid[0] - (size - 1) / 2
    angle = angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along = offsets[..., 0] * cos + offsets[..., 1] * sin
    across = -offsets[..., 0] * sin + offsets[..., 1] * cos
    log_kernel = -0.5 * ((along / sigma[:, 0, None, None]) ** 2 + (across / sigma[:, 1, None, None]) ** 2)
    kernel = torch.exp(log_kernel - log_kernel.amax(dim=(1, 2), keepdim=True))
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def _fast_length(length: int) -> int:
    """The smallest length ≥ ``length`` whose only prime factors are 2, 3, 5 and 7 (quick FFTs)."""
    while True:
        rest = length
        for prime in (2, 3, 5, 7):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def convolve(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter ``B×C×H×W`` images with per-sample ``B×k×k`` kernels (borders replicated).

    Done by FFT: a 35×35 kernel as a direct depthwise convolution costs ~1,200 multiply-adds
    per pixel and channel, two orders of magnitude more on a CPU.
    """
    size = kernels.shape[-1]
    radius = size // 2
    height, width = images.shape[-2:]
    fft_height, fft_width = _fast_length(height + 2 * radius), _fast_length(width + 2 * radius)
    padded = F.pad(images, (radius, fft_width - width - radius, radius, fft_height - height - radius), mode="replicate")
    # The kernel's centre goes to (0, 0) so the circular convolution does not shift the image.
    embedded = F.pad(kernels, (0, fft_width - size, 0, fft_height - size)).roll((-radius, -radius), dims=(-2, -1))
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(embedded)[:, None]
    filtered = torch.fft.irfft2(spectrum, s=(fft_height, fft_width))
    return filtered[..., radius : radius + height, radius : radius + width]


def apply_motion_blur(image: torch.Tensor, kernels: torch.Tensor, mask: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Blur the masked part of blurred samples: ``B×3×H×W`` image, ``B×k×k`` kernels, ``B×1×H×W`` mask."""
    chosen = on.nonzero(as_tuple=True)[0]
    if chosen.numel() == 0:
        return image
    part = image.index_select(0, chosen)
    blurred = convolve(part, kernels.index_select(0, chosen))
    return image.index_copy(0, chosen, torch.lerp(part, blurred, mask.index_select(0, chosen)))
