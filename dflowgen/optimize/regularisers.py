"""Regularisers on θ that keep optimised samples physically plausible [DFlow App. A.2].

* Fold-over hinge: the anchor field ``A = W_{t+1→t}`` sends every pixel of frame 1 to where it
  lies in frame 2, and the flow is ``A(p) + D_l − p``. Gradient steps on its control grid can
  bend it until neighbouring points pass each other (the map folds over), which makes one
  point of frame 2 the image of two points of frame 1. The hinge penalises every pair of
  neighbours on the renderer's lattice whose warped positions come closer than a margin
  along the axis that separates them.
* Texture-noise L1: the learnable per-pixel noise of both frames stays small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dflowgen.render.config import RenderConfig
from dflowgen.render.params import SceneParams
from dflowgen.render.scene import anchor_field_nodes
from dflowgen.render.raster import BlockGrid


def anchor_lattice(params: SceneParams, config: RenderConfig) -> torch.Tensor:
    """``B×rows×cols×2`` positions in frame 2 of the renderer's block-corner lattice of frame 1.

    These nodes are the anchor field the renderer uses (``scene.anchor_field_nodes``).
    """
    blocks = BlockGrid(config.height, config.width)
    rows, cols = blocks.lattice_shape()
    return anchor_field_nodes(params, config, blocks).reshape(params.batch_size, rows, cols, 2)


def fold_over_hinge(params: SceneParams, config: RenderConfig, margin: float) -> torch.Tensor:
    """``B`` sum over lattice edges of ``max(0, margin − Δ/s)``.

    ``Δ`` is the difference along x of the x positions of horizontal neighbours (and along y
    of the y positions of vertical neighbours) after warping, ``s`` their spacing before; so
    the hinge is 0 while the anchor field's derivative along each axis stays above
    ``margin`` (any rigid motion with scale > margin and a small rotation), and grows with
    the depth of every fold.
    """
    moved = anchor_lattice(params, config)
    spacing = BlockGrid(config.height, config.width).size
    stretch_x = (moved[:, :, 1:, 0] - moved[:, :, :-1, 0]) / spacing
    stretch_y = (moved[:, 1:, :, 1] - moved[:, :-1, :, 1]) / spacing
    return F.relu(margin - stretch_x).sum(dim=(1, 2)) + F.relu(margin - stretch_y).sum(dim=(1, 2))


def noise_l1(params: SceneParams) -> torch.Tensor:
    """``B``: ``mean|N_t| + mean|N_{t+1}|`` of the texture noise, 0 for samples without noise."""
    magnitude = params.noise.abs().mean(dim=(2, 3, 4)).sum(dim=1)
    return torch.where(params.noise_on, magnitude, torch.zeros_like(magnitude))
