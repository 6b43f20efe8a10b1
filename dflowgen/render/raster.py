"""Fragments: layers cut into square blocks so that only covered blocks are rendered.

A frame is tiled into ``BLOCK×BLOCK`` blocks. A *fragment* is one block of one layer; a
foreground layer only has fragments where its mask may be non-zero (found from the warp
at the block corners), the background has every block. Per-pixel work then scales with
the area the layers cover rather than with ``layers × pixels``, which is what keeps the
renderer a small fraction of a flow network's cost on a CPU.

Layouts:
    dense: ``B×C×H×W`` pictures.
    blocked: ``C×(B·nb)×s²`` (``nb`` blocks per sample, ``s = BLOCK``), row ``b·nb + k``.
    fragment: ``C×n×s²`` values of ``n`` fragments; sums over the fragments of a pixel are
        ``index_add`` into the blocked layout, reads back are ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 16
"""Block side in pixels: small enough to follow object outlines, large enough to batch well."""


@dataclass(frozen=True)
class BlockGrid:
    """The block tiling of an ``height×width`` frame (padded up to whole blocks)."""

    height: int
    width: int
    size: int = BLOCK

    @property
    def rows(self) -> int:
        return -(-self.height // self.size)

    @property
    def cols(self) -> int:
        return -(-self.width // self.size)

    @property
    def per_sample(self) -> int:
        return self.rows * self.cols

    @property
    def padded(self) -> tuple[int, int]:
        """(Hp, Wp): the frame size rounded up to whole blocks."""
        return self.rows * self.size, self.cols * self.size

    def pixels(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``Hp×Wp×2`` pixel coordinates (x, y) of the padded frame."""
        hp, wp = self.padded
        ys = torch.arange(hp, dtype=dtype, device=device)
        xs = torch.arange(wp, dtype=dtype, device=device)
        ys, xs = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xs, ys], dim=-1)

    def block_pixels(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``nb×s²×2`` pixel coordinates of every block's pixels."""
        return self.to_blocks(self.pixels(dtype, device).permute(2, 0, 1)[None]).permute(1, 2, 0)

    def lattice_shape(self, margin: int = 0) -> tuple[int, int]:
        """(rows, cols) of block corners, extended by ``margin`` blocks on every side."""
        return self.rows + 1 + 2 * margin, self.cols + 1 + 2 * margin

    def lattice_extent(self, margin: int = 0) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the first and last lattice node."""
        s = self.size
        return (-margin * s - 0.5, -margin * s - 0.5, (self.cols + margin) * s - 0.5, (self.rows + margin) * s - 0.5)

    def lattice(self, dtype: torch.dtype, device: torch.device, margin: int = 0) -> torch.Tensor:
        """``L×2`` block corners (pixel edges, shared by neighbouring blocks), row-major."""
        rows, cols = self.lattice_shape(margin)
        ys = torch.arange(-margin, rows - margin, dtype=dtype, device=device) * self.size - 0.5
        xs = torch.arange(-margin, cols - margin, dtype=dtype, device=device) * self.size - 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)

    def corner_nodes(self, device: torch.device, margin: int = 0) -> torch.Tensor:
        """``nb×4`` lattice indices of each block's corners (top-left, top-right, bottom-left, bottom-right)."""
        _, cols = self.lattice_shape(margin)
        block_rows, block_cols = torch.arange(self.rows, device=device), torch.arange(self.cols, device=device)
        by, bx = torch.meshgrid(block_rows, block_cols, indexing="ij")
        top_left = ((by + margin) * cols + bx + margin).reshape(-1, 1)
        return top_left + torch.tensor([0, 1, cols, cols + 1], device=device)

    def corner_weights(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``s²×4`` bilinear weights of each pixel of a block on its four corners."""
        fraction = (torch.arange(self.size, dtype=dtype, device=device) + 0.5) / self.size
        fy, fx = torch.meshgrid(fraction, fraction, indexing="ij")
        fy, fx = fy.reshape(-1), fx.reshape(-1)
        return torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)

    def to_blocks(self, dense: torch.Tensor) -> torch.Tensor:
        """``B×C×Hp×Wp`` → blocked ``C×(B·nb)×s²``."""
        batch, channels = dense.shape[:2]
        s = self.size
        blocks = dense.reshape(batch, channels, self.rows, s, self.cols, s).permute(1, 0, 2, 4, 3, 5)
        return blocks.reshape(channels, batch * self.per_sample, s * s)

    def from_blocks(self, blocked: torch.Tensor) -> torch.Tensor:
        """Blocked ``C×(B·nb)×s²`` → dense ``B×C×H×W`` (padding cropped)."""
        channels = blocked.shape[0]
        s = self.size
        dense = blocked.reshape(channels, -1, self.rows, self.cols, s, s).permute(1, 0, 2, 4, 3, 5)
        return dense.reshape(-1, channels, self.rows * s, self.cols * s)[..., : self.height, : self.width]

    def covered(self, corners: torch.Tensor, slack: torch.Tensor, extent: tuple[float, float]) -> torch.Tensor:
        """Which blocks may reach a rectangle, from where their corners land.

        Args:
            corners: ``G×((rows+1)·(cols+1))×2`` images of the lattice corners.
            slack: ``G`` margin added around each block's corner box (for the map's curvature).
            extent: ``(w, h)``: the rectangle ``[0, w]×[0, h]``.

        Returns:
            ``G×nb`` bool.
        """
        count = corners.shape[0]
        lattice = corners.reshape(count, self.rows + 1, self.cols + 1, 2)
        quads = torch.stack([lattice[:, :-1, :-1], lattice[:, :-1, 1:], lattice[:, 1:, :-1], lattice[:, 1:, 1:]], dim=0)
        low = quads.amin(dim=0) - slack[:, None, None, None]
        high = quads.amax(dim=0) + slack[:, None, None, None]
        inside = (high[..., 0] >= 0) & (low[..., 0] <= extent[0]) & (high[..., 1] >= 0) & (low[..., 1] <= extent[1])
        return inside.reshape(count, -1)

    def corner_scale(self, corners: torch.Tensor) -> torch.Tensor:
        """``G`` largest stretch of a map along any lattice edge (output px → target units)."""
        lattice = corners.reshape(corners.shape[0], self.rows + 1, self.cols + 1, 2)
        # Squared lengths, one square root at the end: ``norm`` over a last dimension of 2 is about
        # 10 ms per call at 512×384 on 2 CPU threads, several times this.
        along_x = (lattice[:, :, 1:] - lattice[:, :, :-1]).square().sum(dim=-1).amax(dim=(1, 2))
        along_y = (lattice[:, 1:] - lattice[:, :-1]).square().sum(dim=-1).amax(dim=(1, 2))
        return torch.maximum(along_x, along_y).sqrt() / self.size


@dataclass(frozen=True)
class Fragments:
    """``n`` fragments: which layer (``b·N + slot``), block (``b·nb + k``) and slot each is."""

    layer: torch.Tensor
    block: torch.Tensor
    slot: torch.Tensor
    local_block: torch.Tensor

    def select(self, index: torch.Tensor) -> Fragments:
        return Fragments(self.layer[index], self.block[index], self.slot[index], self.local_block[index])


def make_fragments(covered: torch.Tensor, num_slots: int, blocks_per_sample: int) -> Fragments:
    """Fragments from a ``(B·N)×nb`` coverage table, in layer-then-block order."""
    layer, local_block = covered.nonzero(as_tuple=True)
    sample = torch.div(layer, num_slots, rounding_mode="floor")
    return Fragments(layer, sample * blocks_per_sample + local_block, layer - sample * num_slots, local_block)


def scatter_blocks(values: torch.Tensor, fragments: Fragments, num_blocks: int) -> torch.Tensor:
    """Sum fragment values ``C×n×s²`` over the fragments of each pixel: blocked ``C×num_blocks×s²``."""
    out = values.new_zeros(values.shape[0], num_blocks, values.shape[2])
    return out.index_add(1, fragments.block, values)


def gather_blocks(blocked: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Read blocked ``C×num_blocks×s²`` values back at each fragment: ``C×n×s²``."""
    return blocked.index_select(1, fragments.block)
