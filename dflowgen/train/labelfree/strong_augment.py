"""Strong augmentation of an image pair *with* a flow field carried through it exactly [MDFlow, ARFlow].

Each frame is shown through its own affine view: frame k's source pixel ``p`` appears at
``q = M_k·(p, 1)`` (``M_k`` a ``B×2×3`` matrix). Frame 1's view is a random zoom, rotation, flip
and translation; frame 2's is the same composed with a small extra zoom and shift, so the
student also sees relative motion the video did not have. A flow ``F`` of frame 1 becomes, at
view pixel ``q`` of frame 1,

    F'(q) = M_2·(p + F(p)) − q,   p = M_1⁻¹·q,

and the backward flow likewise with the roles of the frames swapped: exact for any affine views,
with only ``F(p)`` interpolated. Appearance (colour jitter) and occlusion (boxes of frame 2
painted over) change only what the network sees, never the flow.

All draws come from one CPU generator per step; the work runs batched on the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import remap

from dflowgen.train.config import StrongAugmentConfig
from dflowgen.train.labelfree.jitter import jitter_pair

# A view pixel's label is kept only where every source pixel it interpolates is confident.
_CONFIDENT = 1.0 - 1e-3


@dataclass(frozen=True)
class AugmentedPair:
    """The student's view of a pair and the teacher's flow carried into it.

    ``inputs1``/``inputs2``: ``B×3×H×W`` in [0, 255], the network input (jittered, frame 2 erased);
    ``clean1``/``clean2``: the same views without jitter or eraser (for photometric losses);
    ``flow_fw``/``flow_bw``: ``B×2×H×W`` in view pixels; ``valid_fw``/``valid_bw``: ``B×H×W`` float 0/1.
    """

    inputs1: torch.Tensor
    inputs2: torch.Tensor
    clean1: torch.Tensor
    clean2: torch.Tensor
    flow_fw: torch.Tensor
    flow_bw: torch.Tensor
    valid_fw: torch.Tensor
    valid_bw: torch.Tensor


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def draw_views(batch: int, height: int, width: int, config: StrongAugmentConfig,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_1, M_2)``, each ``B×2×3`` on the CPU: source pixel → view pixel of frame 1 and of frame 2.

    The view of frame 1 is centred on a random point that keeps the zoomed view inside the
    frame where the zoom allows it (rotation may still show corners, which count as outside).
    """
    zoom = 2.0 ** _uniform(batch, config.min_scale, config.max_scale, generator)
    angle = torch.deg2rad(_uniform(batch, -config.max_rotate, config.max_rotate, generator))
    flip_x = torch.where(torch.rand(batch, generator=generator) < config.h_flip_prob, -1.0, 1.0)
    flip_y = torch.where(torch.rand(batch, generator=generator) < config.v_flip_prob, -1.0, 1.0)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2])
    slack = centre[None] * (1 - 1 / zoom.clamp_min(1.0))[:, None]  # how far the view centre may move
    view_centre = centre + slack * (torch.rand(batch, 2, generator=generator) * 2 - 1)
    relative_zoom = 2.0 ** _uniform(batch, -config.relative_scale, config.relative_scale, generator)
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * config.relative_translate

    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # B×2×2
    linear1 = zoom[:, None, None] * rotation * torch.stack([flip_x, flip_y], -1)[:, None, :]
    linear2 = relative_zoom[:, None, None] * linear1

    def affine(linear: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        # q = L·(p − view_centre) + centre + offset
        translation = centre + offset - (linear @ view_centre[..., None])[..., 0]
        return torch.cat([linear, translation[..., None]], dim=-1)

    return affine(linear1, torch.zeros(batch, 2)), affine(linear2, shift)


def apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``B×2×H×W`` points mapped by ``B×2×3`` affine matrices."""
    return torch.einsum("bij,bjhw->bihw", matrix[:, :, :2], points) + matrix[:, :, 2, None, None]


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """The ``B×2×3`` inverse of ``B×2×3`` affine matrices."""
    inverse = torch.linalg.inv(matrix[:, :, :2])
    return torch.cat([inverse, -(inverse @ matrix[:, :, 2:])], dim=-1)


def _sample(tensor: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``tensor`` (``B×C×H×W``) read bilinearly at ``B×2×H'×W'`` pixel positions, zero outside."""
    return remap(tensor, points[:, 0], points[:, 1], mode="bilinear", padding_mode="zeros", align_corners=True)


def _inside(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def carry_flow(flow: torch.Tensor, confidence: torch.Tensor, view_from: torch.Tensor,
               view_to: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A flow of one frame (``B×2×H×W``) and its 0/1 confidence (``B×1×H×W``) in the views' pixels.

    ``view_from`` shows the flow's own frame, ``view_to`` the frame it points into. Returns the
    flow at every view pixel of ``view_from`` and a ``B×H×W`` 0/1 mask: the source pixel lies in the
    frame and every pixel it is interpolated from is confident.
    """
    _, _, height, width = flow.shape
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=flow.device, dtype=flow.dtype)
    view_pixels = grid.permute(0, 3, 1, 2).expand(flow.shape[0], -1, -1, -1)
    source = apply_affine(invert_affine(view_from), view_pixels)
    carried = apply_affine(view_to, source + _sample(flow, source)) - view_pixels
    confident = (_sample(confidence, source)[:, 0] >= _CONFIDENT) & _inside(source, height, width)
    return carried, confident.to(flow.dtype)


def warp_view(image: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """``B×C×H×W`` ``image`` as seen through the affine ``view`` (zero where the view leaves the frame)."""
    _, _, height, width = image.shape
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=image.device, dtype=image.dtype)
    view_pixels = grid.permute(0, 3, 1, 2).expand(image.shape[0], -1, -1, -1)
    return _sample(image, apply_affine(invert_affine(view), view_pixels))


def erase_boxes(image: torch.Tensor, config: StrongAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """With ``config.eraser_prob`` per sample, 1–2 boxes of ``B×3×H×W`` ``image`` painted with its mean colour."""
    batch, _, height, width = image.shape
    applied = torch.rand(batch, 1, generator=generator) < config.eraser_prob
    second = torch.rand(batch, 1, generator=generator) < 0.5
    active = torch.cat([applied, applied & second], dim=1)  # B×2 boxes
    low, high = config.eraser_size
    sizes = (low + (high - low) * torch.rand(batch, 2, 2, generator=generator)) * torch.tensor([width, height])
    corners = torch.rand(batch, 2, 2, generator=generator) * torch.tensor([width, height])
    device = image.device
    xs = torch.arange(width, device=device).view(1, 1, 1, width)
    ys = torch.arange(height, device=device).view(1, 1, height, 1)
    corners, sizes, active = corners.to(device), sizes.to(device), active.to(device)
    x0, y0 = corners[..., 0, None, None], corners[..., 1, None, None]
    inside = ((xs >= x0) & (xs < x0 + sizes[..., 0, None, None]) & (ys >= y0)
              & (ys < y0 + sizes[..., 1, None, None]) & active[..., None, None])
    mask = inside.any(dim=1, keepdim=True)
    return torch.where(mask, image.mean(dim=(2, 3), keepdim=True), image)


def strong_augment(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                   confidence_fw: torch.Tensor, confidence_bw: torch.Tensor, config: StrongAugmentConfig,
                   generator: torch.Generator) -> AugmentedPair:
    """The student's strongly augmented view of a pair and the teacher's flows and confidences in it.

    Args:
        image1, image2: ``B×3×H×W`` in [0, 255].
        flow_fw, flow_bw: ``B×2×H×W`` teacher flows frame 1 → 2 and 2 → 1.
        confidence_fw, confidence_bw: ``B×1×H×W`` 0/1 masks of the teacher's reliable pixels.
        config: the augmentation's strengths.
        generator: CPU generator all draws come from.

    Example:
        >>> config, generator = StrongAugmentConfig(), torch.Generator()
        >>> views = strong_augment(x1, x2, fw, bw, ones, ones, config, generator)  # doctest: +SKIP
    """
    batch, _, height, width = image1.shape
    views = draw_views(batch, height, width, config, generator)
    view1, view2 = (view.to(image1.device, image1.dtype) for view in views)
    clean1, clean2 = warp_view(image1, view1), warp_view(image2, view2)
    carried_fw, valid_fw = carry_flow(flow_fw, confidence_fw, view1, view2)
    carried_bw, valid_bw = carry_flow(flow_bw, confidence_bw, view2, view1)
    inputs1, inputs2 = jitter_pair(clean1, clean2, config.jitter, generator)
    inputs2 = erase_boxes(inputs2, config, generator)
    return AugmentedPair(inputs1, inputs2, clean1, clean2, carried_fw, carried_bw, valid_fw, valid_bw)

