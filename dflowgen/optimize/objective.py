"""The DFlow objective: per-sample proxy losses and the task loss built from them [DFlow §3.1, App. B.1].

With ``L_t`` the target proxy's loss and ``L_b`` the base proxy's loss on a sample, and

    r = L_b / (L_t + ε)

(large when the base proxy finds the sample much harder than the target does), a *gate*
``g(r)`` falls from about 1 towards 0 as ``r`` grows:

    g_exp(r)     = exp(−β·r + γ)
    g_sigmoid(r) = sigmoid(−β·r + γ)
    g_tanh(r)    = 1 − tanh(β·r − γ)

and the task loss combines it with ``L_t`` by addition or by multiplication:

    add:  L_t + α·g(r)
    mul:  α·L_t·g(r)

Both fall as ``L_b`` rises and rise with ``L_t`` (for α, β ≥ 0), so minimising them makes a
sample familiar to the target proxy and hard for the base proxy. The paper's default is
``add-exp`` with β = 1, γ = 0, α = 20. Every function here is pure and works elementwise on
vectors, one entry per augmented copy; :func:`task_loss` averages the copies of a sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dflowgen.models.registry import training_loss



def exp_gate(ratio: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``exp(−β·r + γ)``: in (0, e^γ] for r ≥ 0."""
    return torch.exp(-beta * ratio + gamma)


def sigmoid_gate(ratio: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``sigmoid(−β·r + γ)``: in (0, 1)."""
    return torch.sigmoid(-beta * ratio + gamma)


def tanh_gate(ratio: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``1 − tanh(β·r − γ)``: in (0, 2)."""
    return 1.0 - torch.tanh(beta * ratio - gamma)


GATES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "exp": exp_gate,
    "sigmoid": sigmoid_gate,
    "tanh": tanh_gate,
}
"""``g(r)`` by name: elementwise, decreasing in ``r`` for β > 0."""


def proxy_losses(
    model: nn.Module,
    img1: torch.Tensor,
    img2: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor,
    iters: int,
    sequence_gamma: float,
    max_flow: float,
) -> torch.Tensor:
    """Per-pair training loss of a frozen proxy: RAFT's sequence loss, or FlowNet's multi-scale EPE.

    Differentiable with respect to the images and the flow while grad mode is on; the
    proxy's own parameters never want gradients.

    Args:
        model: a frozen RAFT or FlowNet (see ``optimize.proxies``).
        img1, img2: ``n×3×H×W`` in [0, 1].
        flow: ``n×2×H×W`` ground truth, px.
        valid: ``n×1×H×W`` (or ``n×H×W``) 0/1.
        iters: GRU iterations (RAFT only).
        sequence_gamma, max_flow: see :func:`dflowgen.losses.sequence.sequence_loss`.

    Returns:
        ``n`` losses. Sizes that are not multiples of 8 are replicate-padded for the proxy and
        its predictions cropped back, so only the rendered pixels are scored.
    """
    loss, _ = training_loss(model, 255.0 * img1, 255.0 * img2, flow, valid, iters=iters, gamma=sequence_gamma,
                            max_flow=max_flow, reduction="none")
    return loss


def gated_ratio(
    target_loss: torch.Tensor, base_loss: torch.Tensor, gate: str, beta: float, gamma: float, epsilon: float
) -> torch.Tensor:
    """``g(L_b / (L_t + ε))`` elementwise (same shapes in and out)."""
    return GATES[gate](base_loss / (target_loss + epsilon), beta, gamma)


def task_loss_per_copy(
    form: str,
    target_loss: torch.Tensor,
    base_loss: torch.Tensor,
    alpha: torch.Tensor | float,
    beta: float = 1.0,
    gamma: float = 0.0,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """The task loss of ``form`` (``"add-exp"``, ``"mul-tanh"``, ...) elementwise.

    Args:
        target_loss, base_loss: ``…`` proxy losses ``L_t``, ``L_b``.
        alpha: ``…`` (or a float) weight α of each entry.

    Returns:
        ``…``: ``L_t + α·g(r)`` for ``add-*``, ``α·L_t·g(r)`` for ``mul-*``.
    """
    combine, _, gate = form.partition("-")
    if combine not in ("add", "mul") or gate not in GATES:
        raise ValueError(f"unknown task loss form {form!r}: expected add|mul-exp|sigmoid|tanh")
    gated = gated_ratio(target_loss, base_loss, gate, beta, gamma, epsilon)
    if combine == "add":
        return target_loss + alpha * gated
    return alpha * target_loss * gated


def task_loss(
    form: str,
    target_loss: torch.Tensor,
    base_loss: torch.Tensor,
    alpha: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 0.0,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Per-sample task loss: the per-copy task loss averaged over each sample's copies.

    Args:
        form: see :func:`task_loss_per_copy`.
        target_loss, base_loss: ``B×C`` proxy losses of ``C`` augmented copies per sample.
        alpha: ``B`` α of each sample.

    Returns:
        ``B``. For ``add-exp`` this is ``mean(L_t) + α·mean(exp(−β·L_b/(L_t+ε) + γ))`` over the
        copies, the form the authors' scripts use.
    """
    if target_loss.ndim != 2 or base_loss.shape != target_loss.shape:
        raise ValueError(
            f"target_loss and base_loss must both be B×C, got {tuple(target_loss.shape)} and {tuple(base_loss.shape)}"
        )
    per_copy = task_loss_per_copy(form, target_loss, base_loss, alpha[:, None], beta, gamma, epsilon)
    return per_copy.mean(dim=1)
