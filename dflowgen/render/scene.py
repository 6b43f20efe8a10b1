"""The scene of a batch: every layer's warp 1 and placement evaluated on the canvas lattice, ready to compose.

:func:`build_scene` turns scene parameters θ into per-layer fields at the block corners of
the canvas (mask and image coordinates, for culling and texturing); :func:`anchor_field_nodes`
gives the anchor field at the same nodes. Both frames are composed from these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflowgen.assets import MASK_SIZE, LayerBank
from dflowgen.render.config import RenderConfig
from dflowgen.render.effects import white_balance_gains
from dflowgen.render.params import SceneParams
from dflowgen.render.raster import BlockGrid, Fragments
from dflowgen.render.warp import Extent, apply_projective, bend_points, local_matrix, to_atlas, warp_matrix, warp_points


@dataclass
class Scene:
    """Per-layer quantities of a batch, flattened to ``B·N`` layers, with warp 1 on the canvas lattice."""

    config: RenderConfig
    blocks: BlockGrid
    batch: int
    slots: int
    margin: int  # blocks of lattice beyond the window: warp 1 is known over the whole canvas
    corner_weights: torch.Tensor  # s²×4 bilinear weights of a block's pixels on its corners
    fields: dict[str, torch.Tensor]  # (B·N)×L×2 at the canvas lattice nodes, see build_scene
    mask_entry: torch.Tensor  # B·N
    layer_bend: torch.Tensor  # B·N largest control-grid offset of warp 1 (px)
    depth: torch.Tensor  # B·N
    gains: torch.Tensor  # (B·N)×3
    blurred: torch.Tensor  # B·N bool: in the motion-blur mask of a blurred sample
    foreground: torch.Tensor  # B·N bool: active and not the background

    @property
    def num_blocks(self) -> int:
        return self.batch * self.blocks.per_sample

    @property
    def num_layers(self) -> int:
        return self.batch * self.slots

    @property
    def background(self) -> Fragments:
        """Every block of every sample's background layer (slot 0), in block order."""
        block = torch.arange(self.num_blocks, device=self.depth.device)
        sample = torch.div(block, self.blocks.per_sample, rounding_mode="floor")
        return Fragments(sample * self.slots, block, torch.zeros_like(block), block - sample * self.blocks.per_sample)

    def inside_blocks(
        self, nodes: torch.Tensor, entry: torch.Tensor, local_block: torch.Tensor, margin: int = 0
    ) -> torch.Tensor:
        """``n×s²×C`` values inside blocks, bilinear between the block corners of lattice ``entry``.

        Args:
            nodes: ``E×L×C`` values on the lattice extended by ``margin`` blocks.
            entry, local_block: ``n`` which lattice and which block.

        One matrix product ``weights @ corners`` for all fragments and channels at once.
        """
        count, lattice, channels = nodes.shape
        rows = entry[:, None] * lattice + self.blocks.corner_nodes(nodes.device, margin).index_select(0, local_block)
        corners = nodes.reshape(count * lattice, channels).index_select(0, rows.T.reshape(-1))
        inside = self.corner_weights @ corners.reshape(4, -1)
        return inside.reshape(self.corner_weights.shape[0], -1, channels).transpose(0, 1)

    def node_grid(self, name: str) -> torch.Tensor:
        """``(B·N)×2×rows×cols`` canvas-lattice values of a field, for :func:`interpolate_nodes`."""
        rows, cols = self.blocks.lattice_shape(self.margin)
        return self.fields[name].reshape(self.num_layers, rows, cols, 2).permute(0, 3, 1, 2)

    def window_nodes(self, name: str) -> torch.Tensor:
        """``(B·N)×L×2`` values of a field at the block corners of the output window."""
        rows, cols = self.blocks.lattice_shape(self.margin)
        inner = self.fields[name].reshape(self.num_layers, rows, cols, 2)
        inner = inner[:, self.margin : rows - self.margin, self.margin : cols - self.margin]
        return inner.reshape(self.num_layers, -1, 2)




def anchor_field_nodes(params: SceneParams, config: RenderConfig, blocks: BlockGrid) -> torch.Tensor:
    """``B×P×2``: where the ``P`` block-corner lattice nodes of frame 1 lie in frame 2 under the anchor field ``A``.

    The anchor field is evaluated exactly at these nodes and interpolated bilinearly in
    between, so these nodes *are* the anchor field the renderer uses.
    """
    matrix = warp_matrix(
        params.anchor_translation,
        params.anchor_rotation,
        params.anchor_scale,
        params.anchor_corners,
        config.width,
        config.height,
    )
    lattice = blocks.lattice(params.dtype, params.device).expand(params.batch_size, -1, -1)
    samples = torch.arange(params.batch_size, device=params.device)
    return warp_points(lattice, matrix, params.anchor_grid, samples, canvas_extent(config))


def canvas_extent(config: RenderConfig) -> Extent:
    """Pixel extent (x0, y0, x1, y1) of the canvas: the output window plus its margin."""
    margin = config.canvas_margin
    return (-margin, -margin, config.width - 1 + margin, config.height - 1 + margin)


def _placed(transform: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """``G×3×3`` rows of ``placement ∘ transform`` for ``G×4`` axis-aligned placements (sx, sy, ox, oy)."""
    affine = affine[:, :, None]
    x_row = affine[:, 0] * transform[:, 0] + affine[:, 2] * transform[:, 2]
    y_row = affine[:, 1] * transform[:, 1] + affine[:, 3] * transform[:, 2]
    return torch.stack([x_row, y_row, transform[:, 2]], dim=1)


def build_scene(params: SceneParams, bank: LayerBank, config: RenderConfig) -> Scene:
    """Evaluate every layer's warp 1, followed by its placements, at the canvas lattice nodes.

    Fields: "mask_pixels" (mask pixels, for culling), "mask" ([-1, 1] coordinates in the
    layer's mask) and "image" (``grid_sample`` coordinates in the image atlas, clamped into
    the layer's image at the nodes, which extends the image by its border).
    """
    dtype, device = params.dtype, params.device
    blocks = BlockGrid(config.height, config.width)
    margin = math.ceil(config.canvas_margin / blocks.size)
    layers = params.batch_size * params.num_slots
    transform = warp_matrix(
        params.layer_translation,
        params.layer_rotation,
        params.layer_scale,
        params.layer_corners,
        config.width,
        config.height,
    ).flatten(0, 1)
    layer_grid = params.layer_grid.flatten(0, 1)
    nodes = blocks.lattice(dtype, device, margin).expand(layers, -1, -1)
    bent = bend_points(nodes, layer_grid, torch.arange(layers, device=device), canvas_extent(config))

    image_width, image_height = bank.image_size
    mask_rows = _placed(transform, params.mask_affine.reshape(-1, 4))
    image_placement = _placed(transform, params.image_affine.reshape(-1, 4))
    image_rows = local_matrix(image_width, image_height, dtype, device) @ image_placement
    image_local = apply_projective(bent, image_rows)
    fields = {
        "mask_pixels": apply_projective(bent, mask_rows),
        "mask": apply_projective(bent, local_matrix(MASK_SIZE, MASK_SIZE, dtype, device) @ mask_rows),
        "image": to_atlas(image_local, params.image_index.reshape(-1), bank.image_atlas, image_height),
    }
    slot = torch.arange(params.num_slots, device=device).repeat(params.batch_size)
    return Scene(
        config=config,
        blocks=blocks,
        batch=params.batch_size,
        slots=params.num_slots,
        margin=margin,
        corner_weights=blocks.corner_weights(dtype, device),
        fields=fields,
        mask_entry=params.mask_index.reshape(-1).clamp_min(0),
        layer_bend=layer_grid.detach().abs().amax(dim=(1, 2, 3)),
        depth=params.depth.reshape(-1),
        gains=white_balance_gains(params.white_balance, params.white_balance_on).reshape(-1, 3),
        blurred=(params.blur_layers & params.blur_on[:, None]).reshape(-1),
        foreground=params.layer_active.reshape(-1) & (slot > 0),
    )
