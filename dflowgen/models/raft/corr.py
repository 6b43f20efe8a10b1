"""Correlation pyramids and their look-up around the current flow estimate.

The correlation of a pixel p of frame 1 with a pixel q of frame 2 is ``<f1(p), f2(q)> / sqrt(C)``.
Level l of the pyramid averages it over 2^l × 2^l blocks of q. At each GRU step RAFT samples every
level bilinearly (zero outside the image) on a (2r+1)×(2r+1) grid of integer offsets around
``coords / 2^l``, where ``coords`` is where p currently lands in frame 2.

Because the offsets are integers, all (2r+1)² samples of one pixel and level share the same
bilinear weights: a look-up gathers the (2r+2)² integer neighbours once and blends them with two
1-D interpolations, instead of computing (2r+1)² separate bilinear samples.

Channel order of a look-up matches the released weights: level-major, then the x offset, then the
y offset (``l·(2r+1)² + i·(2r+1) + j`` for offset (x, y) = (i - r, j - r)).

Two implementations give the same values:
* :class:`AllPairsCorrelation` stores the full volume, (H·W)² values per image at level 0 (fast);
* :class:`OnDemandCorrelation` stores only the pooled feature maps of frame 2 and computes the
  needed dot products at every look-up, in chunks (memory linear in H·W; for large images).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

CorrKind = Literal["all-pairs", "on-demand"]
CORR_KINDS: tuple[CorrKind, ...] = ("all-pairs", "on-demand")

# Gathered feature vectors per on-demand chunk (floats); bounds its working memory (~64 MiB).
_ON_DEMAND_CHUNK_FLOATS = 1 << 24


def pool_level(level: torch.Tensor) -> torch.Tensor:
    """2×2 average pooling of …×h×w to …×(h//2)×(w//2), like ``avg_pool2d`` (odd last rows/columns dropped).

    Written with strided sums: several times faster than ``avg_pool2d`` on the many tiny maps of a
    correlation volume. Empty when h or w is below 2.
    """
    height, width = level.shape[-2:]
    level = level[..., : height // 2 * 2, : width // 2 * 2]
    level = level[..., 0::2] + level[..., 1::2]
    return (level[..., 0::2, :] + level[..., 1::2, :]) * 0.25


def zero_border(level: torch.Tensor) -> torch.Tensor:
    """…×h×w to …×(h+1)×(w+1) with a zero last row and column (see :class:`Windows`)."""
    return F.pad(level, (0, 1, 0, 1))


def level_sizes(height: int, width: int, num_levels: int) -> list[tuple[int, int]]:
    """(h_l, w_l) of each pyramid level, halved (rounding down) from level to level."""
    return [(height >> level, width >> level) for level in range(num_levels)]


class Windows:
    """The (2r+2)×(2r+2) integer neighbourhoods of N query positions at every pyramid level.

    Levels are stored with a zero border (:func:`zero_border`): a position outside a level is
    moved onto its zero row or column, which gives the zero that bilinear sampling with zero
    padding reads there.

    Args:
        coords: N×2 positions (x, y) at level 0.
        sizes: (h_l, w_l) of the levels (without border).
        radius: r.

    Attributes:
        index: N×L×(2r+2)×(2r+2) int64 indices ``y·(w_l+1) + x`` into each bordered level, laid out
            [y][x] (x fastest, for memory locality);
        frac_x, frac_y: N×L×1×1 fractional parts of the positions at each level.
    """

    def __init__(self, coords: torch.Tensor, sizes: list[tuple[int, int]], radius: int) -> None:
        device = coords.device
        scale = torch.tensor([2.0**-level for level in range(len(sizes))], device=device)
        heights, widths = torch.tensor(sizes, device=device)[None, :, None].unbind(-1)  # each 1×L×1
        centres = coords[:, None, :] * scale[None, :, None]  # N×L×2
        corner = centres.floor()
        frac = centres - corner
        steps = torch.arange(-radius, radius + 2, device=device)
        xs = corner[..., 0, None].long() + steps  # N×L×(2r+2)
        ys = corner[..., 1, None].long() + steps
        xs = torch.where((xs >= 0) & (xs < widths), xs, widths)
        ys = torch.where((ys >= 0) & (ys < heights), ys, heights)
        self.index = ys[..., :, None] * (widths[..., None] + 1) + xs[..., None, :]
        self.frac_x, self.frac_y = frac[..., 0, None, None], frac[..., 1, None, None]

    def level_index(self, level: int) -> torch.Tensor:
        """N×(2r+2)² indices into level ``level``."""
        return self.index[:, level].flatten(1)

    def blend(self, values: torch.Tensor) -> torch.Tensor:
        """Bilinear samples at the (2r+1)² integer offsets, from N×L×(2r+2)×(2r+2) window values [y][x].

        Returns N×(L·(2r+1)²) in the released weights' channel order ([level][x][y]).
        """
        values = torch.lerp(values[..., :-1], values[..., 1:], self.frac_x)
        values = torch.lerp(values[..., :-1, :], values[..., 1:, :], self.frac_y)
        return values.transpose(-1, -2).flatten(1)


def _to_channels(samples: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B·H·W)×C look-ups to a B×C×H×W tensor (channels-last memory, no copy)."""
    return samples.view(batch, height, width, -1).permute(0, 3, 1, 2)


def _query_coords(coords: torch.Tensor) -> torch.Tensor:
    return coords.permute(0, 2, 3, 1).reshape(-1, 2)


def coords_grid(batch: int, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel coordinates B×2×H×W float32, channel 0 = x, 1 = y."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None].expand(batch, 2, height, width).contiguous()


class AllPairsLookup:
    """The full correlation pyramid of one image pair; call it with B×2×H×W coordinates."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int, radius: int) -> None:
        batch, dim, height, width = fmap1.shape
        self.shape = (batch, height, width)
        self.radius = radius
        self.sizes = level_sizes(height, width, num_levels)
        # Scaling the B×C×H×W features is cheaper than scaling the (H·W)² volume; correlating with
        # bordered frame-2 features writes level 0's zero border for free.
        queries = fmap1.flatten(2).transpose(1, 2) / math.sqrt(dim)
        volume = torch.matmul(queries, zero_border(fmap2).flatten(2)).view(-1, height + 1, width + 1)
        self.levels = [volume.flatten(1)]  # each (B·H·W)×((h_l+1)·(w_l+1))
        level = volume[:, :height, :width]
        for _ in range(num_levels - 1):
            level = pool_level(level)
            self.levels.append(zero_border(level).flatten(1))

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """B×(L·(2r+1)²)×H×W correlation samples around B×2×H×W ``coords``."""
        windows = Windows(_query_coords(coords), self.sizes, self.radius)
        values = [rows.gather(1, windows.level_index(level)) for level, rows in enumerate(self.levels)]
        return _to_channels(windows.blend(torch.stack(values, dim=1).view(windows.index.shape)), *self.shape)


class OnDemandLookup:
    """Pooled frame-2 features; each call computes only the correlations it samples."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int, radius: int) -> None:
        batch, dim, height, width = fmap1.shape
        self.shape = (batch, height, width)
        self.radius = radius
        self.sizes = level_sizes(height, width, num_levels)
        self.queries = fmap1.permute(0, 2, 3, 1).reshape(-1, dim) / math.sqrt(dim)  # (B·H·W)×C
        # Pooling frame 2's features then correlating equals pooling the correlation: both are linear.
        self.features, level = [], fmap2
        for _ in range(num_levels):
            self.features.append(zero_border(level).flatten(2).transpose(1, 2))  # B×((h_l+1)·(w_l+1))×C
            level = pool_level(level)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """B×(L·(2r+1)²)×H×W correlation samples around B×2×H×W ``coords``."""
        batch, height, width = self.shape
        windows = Windows(_query_coords(coords), self.sizes, self.radius)
        image = torch.arange(batch, device=coords.device).repeat_interleave(height * width)[:, None]
        values = []
        for level, features in enumerate(self.features):
            # Indices into all images' features at once.
            index = windows.level_index(level) + image * features.shape[1]
            values.append(_window_dots(self.queries, features.flatten(0, 1), index))
        return _to_channels(windows.blend(torch.stack(values, dim=1).view(windows.index.shape)), *self.shape)


def _window_dots(queries: torch.Tensor, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """N×K dot products of N query vectors with the K feature vectors each one indexes, in chunks.

    Chunks bound the gathered vectors' memory; with gradients, each chunk's gather is recomputed
    in the backward pass (checkpointing) so that training memory stays linear in H·W too.
    """
    chunk = max(1, _ON_DEMAND_CHUNK_FLOATS // (index.shape[1] * queries.shape[1]))
    needs_grad = torch.is_grad_enabled() and (queries.requires_grad or features.requires_grad)
    values = []
    for start in range(0, index.shape[0], chunk):
        args = (queries[start : start + chunk], features, index[start : start + chunk])
        values.append(checkpoint(_chunk_dots, *args, use_reentrant=False) if needs_grad else _chunk_dots(*args))
    return torch.cat(values)


def _chunk_dots(queries: torch.Tensor, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.bmm(features[index], queries[:, :, None])[..., 0]


class AllPairsCorrelation(nn.Module):
    """Builds an :class:`AllPairsLookup` from B×C×H×W feature maps (no parameters)."""

    def __init__(self, num_levels: int = 4, radius: int = 4) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.radius = radius

    @property
    def out_channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1) ** 2

    def forward(self, fmap1: torch.Tensor, fmap2: torch.Tensor) -> AllPairsLookup:
        return AllPairsLookup(fmap1, fmap2, self.num_levels, self.radius)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}, radius={self.radius}"


class OnDemandCorrelation(AllPairsCorrelation):
    """Builds an :class:`OnDemandLookup`: same values as :class:`AllPairsCorrelation`, memory O(H·W)."""

    def forward(self, fmap1: torch.Tensor, fmap2: torch.Tensor) -> OnDemandLookup:
        return OnDemandLookup(fmap1, fmap2, self.num_levels, self.radius)


def make_correlation(kind: CorrKind, num_levels: int, radius: int) -> AllPairsCorrelation:
    """The correlation module named by ``kind`` (``"all-pairs"`` or ``"on-demand"``)."""
    if kind == "all-pairs":
        return AllPairsCorrelation(num_levels, radius)
    if kind == "on-demand":
        return OnDemandCorrelation(num_levels, radius)
    raise ValueError(f"corr must be one of {CORR_KINDS}, got {kind!r}")
