"""Composition weights: how much each layer shows at each pixel [DFlow §3.2 step 4].

Both functions take the foreground fragments' masks (``n×s²``, see ``raster``) and return
weights ``K`` for the background of every block and for every fragment; at each pixel the
background's weight plus its fragments' weights sum to 1. The background's mask is 1
everywhere, so no pixel is ever empty.

Softmax splatting: ``Z_l = a_l·M_l`` with depth logits ``a_l`` and
``K_l = M_l·exp(Z_l) / Σ_k M_k·exp(Z_k)``: a softmax over layers in which a layer counts
as much as its mask covers the pixel, so a layer contributes nothing where it has no
content, and among covering layers the deeper-numbered (larger ``a``) wins by ``e^{c}`` per
step. Alpha blending: ``K_l = M_l·Π_{k>l}(1 − M_k)`` in slot order (background at the bottom).
"""

from __future__ import annotations

import torch

from dflowgen.render.raster import Fragments, gather_blocks, scatter_blocks

_EXP_FLOOR = -80.0
"""Lowest softmax exponent: e^-80 is still a normal float32, so sums stay positive."""

_ALPHA_FLOOR = 1e-12
"""Smallest transmittance factor ``1 − M`` taken to the log (an opaque layer passes 1e-12)."""


def softmax_weights(
    masks: torch.Tensor, depth: torch.Tensor, background_depth: torch.Tensor, fragments: Fragments, num_blocks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-splatting weights of the background (``(B·nb)×s²``) and of the fragments (``n×s²``).

    Args:
        masks: ``n×s²`` foreground masks; the background's mask is 1 everywhere.
        depth: ``n`` depth logit of each fragment's layer.
        background_depth: ``B·nb`` depth logit of each block's background.

    ``Z`` is shifted by the largest ``max(a, 0)`` of each block (it cancels in the ratio, so
    it is taken without gradient), which bounds every term by 1; exponents are floored at
    ``_EXP_FLOOR`` so a pixel never sums to zero.
    """
    with torch.no_grad():
        ceiling = background_depth.clamp_min(0).scatter_reduce(0, fragments.block, depth, "amax", include_self=True)
    background = torch.exp((background_depth - ceiling).clamp_min(_EXP_FLOOR))[:, None]
    exponent = depth[:, None] * masks - ceiling.index_select(0, fragments.block)[:, None]
    terms = masks * torch.exp(exponent.clamp_min(_EXP_FLOOR))
    total = background + scatter_blocks(terms[None], fragments, num_blocks).squeeze(0)
    return background / total, terms / gather_blocks(total[None], fragments).squeeze(0)


def alpha_weights(
    masks: torch.Tensor, fragments: Fragments, num_blocks: int, num_slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-blending weights of the background (``(B·nb)×s²``) and of the fragments (``n×s²``).

    Each layer lies over the lower slots; the transmittance ``Π_{k>l}(1 − M_k)`` is a suffix
    sum of ``log(1 − M)`` over slots, taken on a dense ``blocks×slots×s²`` stack.
    """
    log_pass = torch.log((1.0 - masks).clamp_min(_ALPHA_FLOOR))
    row = fragments.block * num_slots + fragments.slot
    stack = masks.new_zeros(num_blocks * num_slots, masks.shape[1]).index_add(0, row, log_pass)
    stack = stack.reshape(num_blocks, num_slots, -1)
    above = stack.flip(1).cumsum(1).flip(1) - stack
    background = torch.exp(stack.sum(dim=1))
    return background, masks * torch.exp(above.reshape(num_blocks * num_slots, -1).index_select(0, row))
