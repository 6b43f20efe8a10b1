"""Geometric warps: rigid ∘ perspective ∘ grid coordinate maps, and sampling through them.

Points are pixel coordinates ``(x, y)`` of the output window, x right and y down, with
pixel centres at integers (the window's top-left pixel is ``(0, 0)``). A warp is a
*sampling map* in the sense of ``grid_sample``: it sends a point of the picture being made
to the point of the source that is read there,

    warp(x) = S(H(x + g(x)))

with ``g`` the offsets of a coarse control grid interpolated bilinearly over the canvas
(the window plus its margin, border-extended beyond it), ``H`` the homography that moves
the window's corners by four offsets, and ``S`` the similarity
``x ↦ c + s·R(θ)(x − c) + t`` about the window centre ``c``. ``H`` and ``S`` are folded into
one 3×3 matrix so a warp costs one batched matrix product per point set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_perspective_transform, get_rotation_matrix2d


def similarity_matrix(
    translation: torch.Tensor, rotation_deg: torch.Tensor, scale: torch.Tensor, center: tuple[float, float]
) -> torch.Tensor:
    """``…×3×3`` matrices of ``x ↦ c + s·R(θ)(x − c) + t``.

    Args:
        translation: ``…×2`` pixels.
        rotation_deg: ``…`` degrees (kornia's convention: positive turns the picture counter-clockwise).
        scale: ``…`` factors.
        center: ``(cx, cy)`` pixel.
    """
    lead = rotation_deg.shape
    angle = rotation_deg.reshape(-1)
    centre = translation.new_tensor(center).expand(angle.shape[0], 2)
    factors = scale.reshape(-1, 1).expand(-1, 2)
    affine = get_rotation_matrix2d(centre, angle, factors)
    affine = torch.cat([affine[..., :2], affine[..., 2:] + translation.reshape(-1, 2, 1)], dim=-1)
    bottom = affine.new_tensor([0.0, 0.0, 1.0]).expand(affine.shape[0], 1, 3)
    return torch.cat([affine, bottom], dim=1).reshape(*lead, 3, 3)


def homography_from_corners(offsets: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``…×3×3`` homographies moving the window corners (TL, TR, BR, BL) by ``offsets`` (``…×4×2`` px)."""
    lead = offsets.shape[:-2]
    corners = offsets.new_tensor([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]])
    flat = offsets.reshape(-1, 4, 2)
    source = corners.expand_as(flat)
    return get_perspective_transform(source, source + flat).reshape(*lead, 3, 3)


def warp_matrix(
    translation: torch.Tensor,
    rotation_deg: torch.Tensor,
    scale: torch.Tensor,
    corners: torch.Tensor,
    width: int,
    height: int,
) -> torch.Tensor:
    """``…×3×3`` matrix of ``S ∘ H``: the part of a warp applied after the grid offsets."""
    center = ((width - 1) / 2.0, (height - 1) / 2.0)
    return similarity_matrix(translation, rotation_deg, scale, center) @ homography_from_corners(corners, width, height)


def apply_projective(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply ``G×k×3`` projective rows to ``G×P×2`` points: ``G×P×(k−1)`` after dividing by the last row."""
    out = torch.baddbmm(matrix[:, None, :, 2], points, matrix[:, :, :2].transpose(1, 2))
    return out[..., :-1] / out[..., -1:]


def _step(size: int) -> float:
    """``grid_sample`` units per pixel along an axis of ``size`` pixels (``align_corners=True``)."""
    return 2.0 / (size - 1) if size > 1 else 0.0


def local_matrix(width: int, height: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``3×3`` affine map from pixels of a ``width×height`` picture to its [-1, 1] coordinates."""
    rows = [[_step(width), 0.0, -1.0], [0.0, _step(height), -1.0], [0.0, 0.0, 1.0]]
    return torch.tensor(rows, dtype=dtype, device=device)


def to_atlas(local: torch.Tensor, entry: torch.Tensor, atlas: torch.Tensor, entry_height: int) -> torch.Tensor:
    """[-1, 1] coordinates inside atlas entries → ``grid_sample`` coordinates of the whole atlas.

    An atlas stacks ``E`` same-sized pictures vertically, so one ``grid_sample`` call reads
    any entry at any point: this is how every layer of a batch reads its own picture.
    Coordinates are clamped to the entry first, which extends it by its border (reads never
    leak into the neighbouring entry; an entry with a zero border reads 0 outside).

    Args:
        local: ``G×P×2`` coordinates within entries.
        entry: ``G`` entry of each row of points.
        atlas: ``1×C×(E·h)×w``.
        entry_height: ``h``.
    """
    half = (entry_height - 1) * _step(atlas.shape[-2]) / 2
    centre = (entry.to(local.dtype) * entry_height + (entry_height - 1) / 2) * _step(atlas.shape[-2]) - 1.0
    offset = torch.stack([torch.zeros_like(centre), centre], dim=-1)[:, None]
    # hardtanh is clamp with a single fused backward kernel.
    return torch.addcmul(offset, F.hardtanh(local), local.new_tensor([1.0, half]))


_POINTS_PER_PART = 4096
"""Fewest points worth a ``grid_sample`` batch entry (and a thread) of their own."""


def read_atlas(atlas: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear reads of an atlas ``1×C×H×W`` at ``grid_sample`` coordinates ``G×P×2``: ``C×G×P``.

    On the CPU, ``grid_sample`` and its backward run their batch entries in parallel and each
    entry on one thread, so the points are dealt into one batch entry per thread, all reading
    the same (expanded, not copied) atlas. Each point's read and its gradient are unchanged.
    An atlas that takes a gradient gets one atlas-sized gradient per batch entry in the
    backward, so it is dealt only as far as those gradients together hold no more values
    than the reads.
    """
    groups, points = coords.shape[:2]
    count = groups * points
    parts = 1
    if coords.device.type == "cpu":
        parts = min(torch.get_num_threads(), count // _POINTS_PER_PART)
        if atlas.requires_grad and torch.is_grad_enabled():
            parts = min(parts, count // (atlas.shape[-2] * atlas.shape[-1]))
    if parts <= 1:
        values = F.grid_sample(atlas.to(coords.dtype), coords[None], padding_mode="border", align_corners=True)
        return values.squeeze(0)
    per_part = -(-count // parts)
    flat = coords.reshape(count, 2)
    if per_part * parts > count:
        # The padding points read the atlas centre and are dropped.
        flat = F.pad(flat, (0, 0, 0, per_part * parts - count))
    sources = atlas.to(coords.dtype).expand(parts, -1, -1, -1)
    values = F.grid_sample(sources, flat.view(parts, per_part, 1, 2), padding_mode="border", align_corners=True)
    channels = atlas.shape[1]
    return values.transpose(0, 1).reshape(channels, per_part * parts)[:, :count].view(channels, groups, points)


Extent = tuple[float, float, float, float]
"""(x0, y0, x1, y1): pixel positions of a node grid's first and last node, or of a canvas."""


def interpolate_nodes(nodes: torch.Tensor, points: torch.Tensor, entry: torch.Tensor, extent: Extent) -> torch.Tensor:
    """Values of node grids, interpolated bilinearly at ``points`` and border-extended beyond.

    Args:
        nodes: ``G×C×rows×cols`` values at nodes spread evenly over ``extent``.
        points: ``P×Q×2`` pixel coordinates.
        entry: ``P`` which node grid each row of points reads.
        extent: ``(x0, y0, x1, y1)`` pixel positions of the first and last node.

    Returns:
        ``P×Q×C``.
    """
    count, channels, rows, cols = nodes.shape
    x0, y0, x1, y1 = extent
    atlas = nodes.transpose(0, 1).reshape(1, channels, count * rows, cols)
    scale = points.new_tensor([2.0 / (x1 - x0), 2.0 / (y1 - y0)])
    local = torch.addcmul(points.new_tensor([-2.0 * x0 / (x1 - x0) - 1.0, -2.0 * y0 / (y1 - y0) - 1.0]), points, scale)
    return read_atlas(atlas, to_atlas(local, entry, atlas, rows)).permute(1, 2, 0)


def bend_points(points: torch.Tensor, grids: torch.Tensor, entry: torch.Tensor, canvas: Extent) -> torch.Tensor:
    """``x + g(x)`` for ``G×P×2`` points, point set ``i`` bent by control grid ``entry[i]`` (``G×2×gh×gw``)."""
    return points + interpolate_nodes(grids, points, entry, canvas)


def warp_points(
    points: torch.Tensor, matrix: torch.Tensor, grids: torch.Tensor, entry: torch.Tensor, canvas: Extent
) -> torch.Tensor:
    """``S(H(x + g(x)))`` for ``G×P×2`` points, with ``G×k×3`` matrices (one per point set)."""
    return apply_projective(bend_points(points, grids, entry, canvas), matrix)
