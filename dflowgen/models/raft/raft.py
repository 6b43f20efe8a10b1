"""RAFT (Teed & Deng, ECCV 2020) assembled from its parts, and the builders of RAFT and RAFT-small.

Numerics follow the official implementation, so the released weights give the released results:
images in [0, 255] are mapped to [-1, 1], flow is refined at 1/8 resolution as ``coords1 - coords0``
on a pixel-coordinate grid, and each estimate is upsampled ×8 (convex combination for RAFT,
bilinear for RAFT-small).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dflowgen.models.raft.corr import (
    CORR_KINDS,
    AllPairsCorrelation,
    CorrKind,
    coords_grid,
    make_correlation,
)
from dflowgen.models.raft.encoder import BottleneckBlock, FeatureEncoder, ResidualBlock
from dflowgen.models.raft.update import (
    ConvGRU,
    FlowHead,
    MaskPredictor,
    MotionEncoder,
    UpdateBlock,
    sep_conv_gru,
)
from dflowgen.shapes import check_shape

ModelName = Literal["raft", "raft-small"]
MODEL_NAMES: tuple[ModelName, ...] = ("raft", "raft-small")


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Upsample B×2×H×W flow ×``factor``: each fine pixel is a convex combination of its 3×3 coarse neighbours.

    ``mask`` is B×(9·f²)×H×W logits (channel ``k·f² + row·f + col`` weighs neighbour k for the
    sub-pixel (row, col)); returns B×2×fH×fW. One batched 2×9 by 9×f² product per coarse pixel.
    """
    batch, _, height, width = flow.shape
    pixels = batch * height * width
    weights = torch.softmax(mask.permute(0, 2, 3, 1).reshape(pixels, 9, factor * factor), dim=1)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(batch, 2 * 9, height * width)
    # Contiguous, or bmm falls back to one small product per pixel.
    neighbours = neighbours.transpose(1, 2).reshape(pixels, 2, 9).contiguous()
    fine = torch.bmm(neighbours, weights).view(batch, height, width, 2, factor, factor)
    return fine.permute(0, 3, 1, 4, 2, 5).reshape(batch, 2, factor * height, factor * width)


def bilinear_upsample(flow: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Upsample B×2×H×W flow ×``factor`` bilinearly (corners aligned), scaling its values too."""
    size = (factor * flow.shape[2], factor * flow.shape[3])
    # Contiguous 2-channel input: torch's channels-last bilinear kernel is several times slower here.
    return factor * F.interpolate(flow.contiguous(), size=size, mode="bilinear", align_corners=True)


def _check_images(image1: torch.Tensor, image2: torch.Tensor) -> None:
    check_shape("image2", image2, "B×3×H×W", check_shape("image1", image1, "B×3×H×W"))
    if image1.shape[2] % 8 or image1.shape[3] % 8:
        raise ValueError(
            f"image height and width must be multiples of 8 (use InputPadder), got {tuple(image1.shape[2:])}"
        )


class RAFT(nn.Module):
    """Recurrent All-Pairs Field Transforms for optical flow.

    Args:
        fnet: feature encoder, B×3×H×W → B×C×H/8×W/8, applied to both frames.
        cnet: context encoder, B×3×H×W → B×(hidden_dim + context_dim)×H/8×W/8, applied to frame 1.
        correlation: builds the correlation look-up from the two feature maps.
        update_block: one refinement step; with a ``mask`` head the flow is upsampled convexly,
            otherwise bilinearly.
        hidden_dim, context_dim: how ``cnet``'s output splits into GRU state and context.
        mixed_precision: run encoders and update steps under bfloat16 autocast (correlation,
            coordinates and upsampling stay float32). Meant for CUDA; on CPU it is usually slower.
        model_name: recorded in checkpoints (``"raft"`` or ``"raft-small"``).
    """

    def __init__(
        self,
        fnet: nn.Module,
        cnet: nn.Module,
        correlation: AllPairsCorrelation,
        update_block: UpdateBlock,
        hidden_dim: int,
        context_dim: int,
        mixed_precision: bool = False,
        model_name: str | None = None,
    ) -> None:
        super().__init__()
        self.fnet = fnet
        self.cnet = cnet
        self.correlation = correlation
        self.update_block = update_block
        self.hidden_dim = hidden_dim
        self.context_dim = context_dim
        self.mixed_precision = mixed_precision
        self.model_name = model_name

    def freeze_bn(self) -> None:
        """Put every BatchNorm layer in eval mode (running statistics frozen); a no-op for RAFT-small."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def _autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.mixed_precision)

    def _upsample(self, flow: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if self.update_block.mask is None:
            return bilinear_upsample(flow)
        with self._autocast(flow.device):
            mask = self.update_block.mask(hidden)
        return convex_upsample(flow, mask.float(), self.update_block.mask.factor)

    def forward(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: int = 12,
        flow_init: torch.Tensor | None = None,
        final_only: bool = False,
    ) -> list[torch.Tensor]:
        """Estimate the flow from ``image1`` to ``image2``.

        For images of any size, padded and cropped back, use
        :func:`dflowgen.models.inference.predict_flow`.

        Args:
            image1, image2: B×3×H×W float in [0, 255]; H and W multiples of 8.
            iters: GRU refinement steps.
            flow_init: optional B×2×H/8×W/8 initial flow (e.g. warm start from the previous pair).
            final_only: compute and return only the final estimate (inference).

        Returns:
            the B×2×H×W flows of the ``iters`` steps, first to last (the sequence loss's input);
            with ``final_only`` a list of the last one alone.
        """
        _check_images(image1, image2)
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        batch, _, height, width = image1.shape
        # Channels-last activations make oneDNN's CPU convolutions about 1.5-2× faster.
        image1 = (2 * (image1 / 255.0) - 1.0).contiguous(memory_format=torch.channels_last)
        image2 = (2 * (image2 / 255.0) - 1.0).contiguous(memory_format=torch.channels_last)

        with self._autocast(image1.device):
            fmaps = self.fnet(torch.cat([image1, image2]))  # one pass over both frames
        fmap1, fmap2 = fmaps.float().chunk(2)
        corr_lookup = self.correlation(fmap1, fmap2)

        with self._autocast(image1.device):
            hidden, context = self.cnet(image1).split([self.hidden_dim, self.context_dim], dim=1)
            hidden, context = torch.tanh(hidden), torch.relu(context)
            gru_stages = self.update_block.gru.prepare(context)

        coords0 = coords_grid(batch, height // 8, width // 8, device=image1.device)
        coords0 = coords0.contiguous(memory_format=torch.channels_last)
        coords1 = coords0 if flow_init is None else coords0 + flow_init
        predictions = []
        for step in range(iters):
            coords1 = coords1.detach()
            corr = corr_lookup(coords1)
            with self._autocast(image1.device):
                hidden, delta_flow = self.update_block(hidden, gru_stages, corr, coords1 - coords0)
            coords1 = coords1 + delta_flow.float()
            # Upsampling is a large share of a step: for inference only the last estimate is upsampled.
            if not final_only or step == iters - 1:
                predictions.append(self._upsample(coords1 - coords0, hidden))
        return predictions


@dataclass(frozen=True)
class RaftSpec:
    """The sizes that distinguish RAFT from RAFT-small."""

    block: type[ResidualBlock] | type[BottleneckBlock]
    encoder_widths: tuple[int, int, int, int]
    feature_dim: int
    hidden_dim: int
    context_dim: int
    context_norm: Literal["batch", "none"]
    corr_radius: int
    corr_widths: tuple[int, ...]
    flow_widths: tuple[int, int]
    motion_dim: int
    separable_gru: bool
    flow_head_width: int
    convex_upsampling: bool


SPECS: dict[str, RaftSpec] = {
    "raft": RaftSpec(
        block=ResidualBlock,
        encoder_widths=(64, 64, 96, 128),
        feature_dim=256,
        hidden_dim=128,
        context_dim=128,
        context_norm="batch",
        corr_radius=4,
        corr_widths=(256, 192),
        flow_widths=(128, 64),
        motion_dim=128,
        separable_gru=True,
        flow_head_width=256,
        convex_upsampling=True,
    ),
    "raft-small": RaftSpec(
        block=BottleneckBlock,
        encoder_widths=(32, 32, 64, 96),
        feature_dim=128,
        hidden_dim=96,
        context_dim=64,
        context_norm="none",
        corr_radius=3,
        corr_widths=(96,),
        flow_widths=(64, 32),
        motion_dim=82,
        separable_gru=False,
        flow_head_width=128,
        convex_upsampling=False,
    ),
}

CORR_LEVELS = 4


def build_raft(model_name: ModelName = "raft", *, corr: CorrKind = "all-pairs", mixed_precision: bool = False) -> RAFT:
    """A freshly initialised RAFT (``"raft"``, 5.3 M parameters) or RAFT-small (``"raft-small"``, 1.0 M).

    Args:
        model_name: ``"raft"`` or ``"raft-small"``.
        corr: ``"all-pairs"`` (full correlation volume, fastest) or ``"on-demand"`` (same values,
            memory linear in the number of pixels; for large images).
        mixed_precision: bfloat16 autocast for the convolutions (see :class:`RAFT`).

    Example:
        >>> model = build_raft("raft-small").eval()
        >>> flow = model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), iters=2, final_only=True)[-1]
        >>> tuple(flow_up.shape)
        (1, 2, 64, 64)
    """
    if model_name not in SPECS:
        raise ValueError(f"model_name must be one of {MODEL_NAMES}, got {model_name!r}")
    if corr not in CORR_KINDS:
        raise ValueError(f"corr must be one of {CORR_KINDS}, got {corr!r}")
    spec = SPECS[model_name]
    correlation = make_correlation(corr, CORR_LEVELS, spec.corr_radius)
    hidden, context = spec.hidden_dim, spec.context_dim
    gru_args = (hidden, context, spec.motion_dim)
    update_block = UpdateBlock(
        encoder=MotionEncoder(correlation.out_channels, spec.corr_widths, spec.flow_widths, spec.motion_dim),
        gru=sep_conv_gru(*gru_args) if spec.separable_gru else ConvGRU(*gru_args),
        flow_head=FlowHead(hidden, spec.flow_head_width),
        mask=MaskPredictor(hidden) if spec.convex_upsampling else None,
    )
    model = RAFT(
        fnet=FeatureEncoder(spec.block, spec.encoder_widths, spec.feature_dim, norm="instance"),
        cnet=FeatureEncoder(spec.block, spec.encoder_widths, hidden + context, norm=spec.context_norm),
        correlation=correlation,
        update_block=update_block,
        hidden_dim=hidden,
        context_dim=context,
        mixed_precision=mixed_precision,
        model_name=model_name,
    )
    # Channels-last weights keep every convolution channels-last (even on the 2-channel flow input),
    # where oneDNN's CPU kernels are 1.5-2× faster; loading and saving state dicts is unaffected.
    return model.to(memory_format=torch.channels_last)
