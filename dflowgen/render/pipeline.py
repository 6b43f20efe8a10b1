"""``render(θ)``: layered image pairs with exact forward flow [DFlow §3.2, App. A].

Frame 1 is time t, frame 2 is t+1. Each layer ``l`` has a source (an image and a mask
from the bank, placed on the canvas) and two warps (see ``warp``):

* warp 1, ``G_l``: the sampling map from frame 2 to the layer's source, so frame 2 shows
  ``L_{t+1}(q) = source(G_l(q))`` — the layer moved by rigid ∘ perspective ∘ grid;
* warp 2: the anchor field ``A`` shared by all layers plus the layer's translation ``D_l``,
  the sampling map from frame 1 to frame 2: ``L_t(p) = L_{t+1}(A(p) + D_l)``.

The point at pixel ``p`` of frame 1 on layer ``l`` therefore lies at ``A(p) + D_l`` in frame
2, and its forward flow is ``A(p) + D_l − p`` (px, channel 0 = x right, 1 = y down), so
``img1(p) ≈ img2(p + flow(p))``. ``L_t`` is evaluated as ``source(G_l(A(p) + D_l))``:
the same function as resampling ``L_{t+1}`` with ``grid_sample``, read from the source
directly so frame 1 is not interpolated twice.

Both warps are evaluated exactly on a lattice of block corners (``raster.BLOCK`` px apart;
``G`` on the whole canvas, ``A`` on the output window) and interpolated bilinearly in
between, the way the coarse control grid itself is; the same interpolated functions make
the images and the flow, so their agreement is exact.

Layers are composed per frame by softmax splatting (or alpha blending) with weights ``K``.
The flow of a pixel is the motion of the layer holding the majority of its weight in
frame 1 (``K > ½``), wherever that point goes: visible in frame 2, hidden behind another
layer, or outside the frame, as FlyingChairs, Sintel and AutoFlow label them. It is
*valid* wherever such a layer exists; only pixels on a mixed edge, where no layer holds
half the weight, have no single motion and are not. ``occ`` marks the valid points that
frame 2 does not show as themselves: the point leaves frame 2, or some frame-2 pixel a
bilinear read at its landing point touches is not held by the same layer with at least
``visible_min_weight`` (hidden, or a mixed edge), or it lies on a mixed edge of frame 1.
Backward-warping frame 2 by the flow therefore reproduces frame 1 where ``occ`` is 0.
Effects (texture noise, motion blur, fog) are applied after composition and do not
change the flow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dflowgen.assets import MASK_SIZE, LayerBank
from dflowgen.render.compose import alpha_weights, softmax_weights
from dflowgen.render.config import RenderConfig
from dflowgen.render.effects import add_texture_noise, apply_fog, apply_motion_blur, blur_kernels
from dflowgen.render.params import SceneParams
from dflowgen.render.raster import BlockGrid, Fragments, make_fragments, scatter_blocks
from dflowgen.render.scene import Scene, anchor_field_nodes, build_scene
from dflowgen.render.warp import (
    interpolate_nodes,
    read_atlas,
    to_atlas,
)

VISIBLE_WEIGHT = 1e-5
"""Fragments whose composition weight stays below this everywhere are not textured: they
change a pixel by less than ``N × 1e-5``; with c = 6 a layer two steps down weighs ~6e-6."""

_EDGE_TOLERANCE = 1e-3
"""Pixels whose flow lands this close outside frame 2 still count as inside (float noise of
an exactly integer motion; reads there are border-clamped by a hair)."""

@dataclass
class RenderOutput:
    """A rendered batch.

    img1, img2: ``B×3×H×W`` in [0, 1] (frames t and t+1).
    flow: ``B×2×H×W`` forward flow img1 → img2 in pixels.
    valid: ``B×1×H×W`` float 0/1, where ``flow`` is defined (a layer holds the pixel).
    occ: ``B×1×H×W`` float 0/1, valid points frame 2 does not show: hidden or outside it.
    effects: ``{"white_balance", "noise", "fog", "blur"}`` → ``B`` float, 1 where applied.
    """

    img1: torch.Tensor
    img2: torch.Tensor
    flow: torch.Tensor
    valid: torch.Tensor
    occ: torch.Tensor
    effects: dict[str, torch.Tensor]


@dataclass
class _View:
    """How one frame sees the layers: which mask pixels its block corners read (for culling),
    how far reads between corners may stray from them, and where its fragments read."""

    corners: torch.Tensor  # (B·N)×L×2 mask pixels at the window's block corners
    slack: torch.Tensor  # B·N, in mask pixels
    coordinates: Callable[[Fragments, str], torch.Tensor]  # (fragments, "mask" | "image") → n×s²×2


@dataclass
class _Frame:
    """One composed frame: background weights, foreground fragments and blocked pictures."""

    background: torch.Tensor  # (B·nb)×s² weight of each block's background
    fragments: Fragments  # foreground fragments
    weights: torch.Tensor  # n×s²
    image: torch.Tensor  # 3×(B·nb)×s²
    blur_mask: torch.Tensor  # (B·nb)×s²
    pure_slot: torch.Tensor  # (B·nb)×s² int64: slot holding ≥ visible_min_weight, else -1


def render(params: SceneParams, bank: LayerBank, config: RenderConfig) -> RenderOutput:
    """Render a batch of image pairs with their ground-truth flow.

    Runs on ``params.device`` in ``params.dtype``; differentiable with respect to every
    learnable field of ``params`` (call ``params.requires_grad_()`` first).

    Raises:
        ValueError: ``params`` were drawn for another image size or a larger bank.
    """
    _check_compatible(params, bank, config)
    bank = bank.to(params.device)
    scene = build_scene(params, bank, config)
    blocks = scene.blocks
    anchor_nodes = anchor_field_nodes(params, config, blocks)
    layer_shift = params.flow_translation.reshape(-1, 2)

    frame2 = _compose_frame(scene, bank, _frame2_view(scene))
    frame1 = _compose_frame(scene, bank, _frame1_view(scene, anchor_nodes, layer_shift))

    background = scene.background
    sample = torch.div(background.layer, scene.slots, rounding_mode="floor")
    anchor = scene.inside_blocks(anchor_nodes, sample, background.local_block)
    pixels = blocks.block_pixels(params.dtype, params.device).repeat(scene.batch, 1, 1)
    shift, held = _layer_shift(scene, frame1, layer_shift)
    flow = blocks.from_blocks((anchor - pixels).permute(2, 0, 1) + shift)
    with torch.no_grad():
        pure1, pure2 = (blocks.from_blocks(frame.pure_slot[None])[:, 0] for frame in (frame1, frame2))
        valid = blocks.from_blocks(held[None])[:, 0]
        occluded = valid & ~_reaches_same_layer(pure1, pure2, flow)
    img1 = _apply_effects(params, config, frame1, blocks, frame_index=0)
    img2 = _apply_effects(params, config, frame2, blocks, frame_index=1)
    effects = {
        "white_balance": (params.white_balance_on & params.layer_active).any(dim=1),
        "noise": params.noise_on,
        "fog": params.fog_on,
        "blur": params.blur_on,
    }
    applied = {name: on.to(flow.dtype) for name, on in effects.items()}
    return RenderOutput(img1, img2, flow, valid[:, None].to(flow.dtype), occluded[:, None].to(flow.dtype), applied)


def _check_compatible(params: SceneParams, bank: LayerBank, config: RenderConfig) -> None:
    size = tuple(params.noise.shape[-2:])
    if size != (config.height, config.width):
        raise ValueError(
            f"params: scene parameters are for {size[1]}×{size[0]} images "
            f"but the render config is {config.width}×{config.height}"
        )
    image, mask = int(params.image_index.max()), int(params.mask_index.max())
    if image >= bank.num_images or mask >= bank.num_masks:
        raise ValueError(
            f"params: scene parameters use image {image} / mask {mask} but the layer bank has {bank.num_images} images and "
            f"{bank.num_masks} masks (fingerprint {bank.fingerprint[:12]}): use the bank they were drawn from"
        )


def _frame2_view(scene: Scene) -> _View:
    """Frame 2 reads layer ``l`` at ``G_l(q)``: bilinear inside each block between its corner nodes."""

    def coordinates(fragments: Fragments, name: str) -> torch.Tensor:
        return scene.inside_blocks(scene.fields[name], fragments.layer, fragments.local_block, scene.margin)

    # Bilinear maps send a block into the box of its corners: only the read footprint is added.
    return _View(scene.window_nodes("mask_pixels"), torch.ones_like(scene.depth), coordinates)


def _frame1_view(scene: Scene, anchor_nodes: torch.Tensor, layer_shift: torch.Tensor) -> _View:
    """Frame 1 reads layer ``l`` at ``G_l(A(p) + D_l)``: ``A`` bilinear in blocks, ``G_l`` looked up there."""
    extent = scene.blocks.lattice_extent(scene.margin)

    def coordinates(fragments: Fragments, name: str) -> torch.Tensor:
        sample = torch.div(fragments.layer, scene.slots, rounding_mode="floor")
        moved = scene.inside_blocks(anchor_nodes, sample, fragments.local_block)
        moved = moved + layer_shift.index_select(0, fragments.layer)[:, None]
        return interpolate_nodes(scene.node_grid(name), moved, fragments.layer, extent)

    with torch.no_grad():
        layers = torch.arange(scene.num_layers, device=anchor_nodes.device)
        moved = anchor_nodes.repeat_interleave(scene.slots, dim=0) + layer_shift[:, None]
        corners = interpolate_nodes(scene.node_grid("mask_pixels"), moved, layers, extent)
        # Between corners, G_l bends by its control grid and curves a little: a margin of a few
        # corner-to-corner stretches covers both.
        slack = 2 * scene.blocks.corner_scale(corners) * (1 + 2 * scene.layer_bend) + 1
    return _View(corners, slack, coordinates)


def _compose_frame(scene: Scene, bank: LayerBank, view: _View) -> _Frame:
    """Cull, mask, weigh, texture and sum the layers of one frame."""
    blocks, num_blocks, background = scene.blocks, scene.num_blocks, scene.background
    with torch.no_grad():
        covered = blocks.covered(view.corners, view.slack, (MASK_SIZE - 1, MASK_SIZE - 1)) & scene.foreground[:, None]
    candidates = make_fragments(covered, scene.slots, blocks.per_sample)
    entry = scene.mask_entry.index_select(0, candidates.layer)
    mask_coords = to_atlas(view.coordinates(candidates, "mask"), entry, bank.mask_atlas, MASK_SIZE)
    masks = read_atlas(bank.mask_atlas, mask_coords).squeeze(0)
    with torch.no_grad():
        touched = (masks.amax(dim=1) > 0).nonzero(as_tuple=True)[0]
    fragments = candidates.select(touched)
    masks = masks.index_select(0, touched)

    if scene.config.composition == "softmax":
        depth = scene.depth.index_select(0, fragments.layer)
        background_depth = scene.depth.index_select(0, background.layer)
        background_weight, weights = softmax_weights(masks, depth, background_depth, fragments, num_blocks)
    else:
        background_weight, weights = alpha_weights(masks, fragments, num_blocks, scene.slots)

    image = background_weight[None] * _texture(scene, bank, view.coordinates(background, "image"), background.layer)
    with torch.no_grad():
        shown = (weights.amax(dim=1) > VISIBLE_WEIGHT).nonzero(as_tuple=True)[0]
    seen = fragments.select(shown)
    colour = _texture(scene, bank, view.coordinates(seen, "image"), seen.layer)
    image = image + scatter_blocks(weights.index_select(0, shown)[None] * colour, seen, num_blocks)

    blurred = scene.blurred.index_select(0, fragments.layer).nonzero(as_tuple=True)[0]
    blur_mask = background_weight * scene.blurred.index_select(0, background.layer)[:, None]
    blur_mask = blur_mask + scatter_blocks(weights[blurred][None], fragments.select(blurred), num_blocks).squeeze(0)

    with torch.no_grad():
        threshold = scene.config.visible_min_weight
        pure = (weights >= threshold).to(weights.dtype) * (fragments.slot[:, None] + 1).to(weights.dtype)
        pure_background = (background_weight >= threshold).to(pure.dtype)
        pure_slot = scatter_blocks(pure[None], fragments, num_blocks)[0] + pure_background
    return _Frame(background_weight, fragments, weights, image, blur_mask, pure_slot.round().long() - 1)


def _texture(scene: Scene, bank: LayerBank, coords: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """``3×n×s²`` white-balanced colour of layers ``layer`` (``n``) read at image-atlas ``coords``."""
    colour = read_atlas(bank.image_atlas, coords)
    return colour * scene.gains.index_select(0, layer).T[:, :, None]


def _layer_shift(scene: Scene, frame1: _Frame, layer_shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocked ``2×(B·nb)×s²`` translation ``D`` of each pixel's majority layer in frame 1, and
    the blocked ``(B·nb)×s²`` bool map of the pixels that have one.

    Where no layer holds more than half a pixel (a mixed edge, never valid) the weighted
    mean is used instead, so the flow stays continuous there.
    """
    fragments, weights, background = frame1.fragments, frame1.weights, frame1.background
    with torch.no_grad():
        majority = (weights > 0.5).to(weights.dtype)
        background_majority = (background > 0.5).to(weights.dtype)
        decided = (background_majority + scatter_blocks(majority[None], fragments, scene.num_blocks)[0]) > 0
    background_share = torch.where(decided, background_majority, background)
    share = torch.where(decided.index_select(0, fragments.block), majority, weights)
    background_shift = layer_shift.index_select(0, scene.background.layer).T[:, :, None] * background_share[None]
    shift = share[None] * layer_shift.index_select(0, fragments.layer).T[:, :, None]
    return background_shift + scatter_blocks(shift, fragments, scene.num_blocks), decided


def _reaches_same_layer(pure1: torch.Tensor, pure2: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``B×H×W`` bool: a pure layer of frame 1 lands inside frame 2 among pixels pure in the same layer.

    Args:
        pure1, pure2: ``B×H×W`` slot holding at least ``visible_min_weight`` of each pixel, else -1.
        flow: ``B×2×H×W``.

    The 2×2 frame-2 pixels around ``p + flow(p)`` (all a bilinear read there can touch) must
    be pure in the layer of ``p``: the point is neither occluded nor on a mixed edge there.
    """
    batch, height, width = pure1.shape
    padded = torch.cat([pure2, pure2[:, -1:]], dim=1)
    padded = torch.cat([padded, padded[:, :, -1:]], dim=2)
    top_left = padded[:, :-1, :-1]
    same = (top_left == padded[:, 1:, :-1]) & (top_left == padded[:, :-1, 1:]) & (top_left == padded[:, 1:, 1:])
    square = torch.where(same, top_left, torch.full_like(top_left, -2)).reshape(batch, -1)

    target_x = flow[:, 0] + torch.arange(width, device=flow.device, dtype=flow.dtype)
    target_y = flow[:, 1] + torch.arange(height, device=flow.device, dtype=flow.dtype)[:, None]
    inside_x = (target_x >= -_EDGE_TOLERANCE) & (target_x <= width - 1 + _EDGE_TOLERANCE)
    inside = inside_x & (target_y >= -_EDGE_TOLERANCE) & (target_y <= height - 1 + _EDGE_TOLERANCE)
    corner = target_y.floor().clamp(0, height - 1) * width + target_x.floor().clamp(0, width - 1)
    landed = square.gather(1, corner.long().reshape(batch, -1)).reshape(batch, height, width)
    return inside & (pure1 >= 0) & (landed == pure1)


def _apply_effects(
    params: SceneParams, config: RenderConfig, frame: _Frame, blocks: BlockGrid, frame_index: int
) -> torch.Tensor:
    """Texture noise on the foreground, motion blur, then fog; clamped to [0, 1]."""
    image = blocks.from_blocks(frame.image)
    coverage = 1.0 - blocks.from_blocks(frame.background[None])
    image = add_texture_noise(image, params.noise.unbind(1)[frame_index], coverage, params.noise_on)
    kernels = blur_kernels(params.blur_sigma, params.blur_angle, config.blur_kernel_size)
    image = apply_motion_blur(image, kernels, blocks.from_blocks(frame.blur_mask[None]), params.blur_on)
    image = apply_fog(image, params.fog_field, params.fog_density, params.fog_color, params.fog_on)
    return F.hardtanh(image, 0.0, 1.0)
