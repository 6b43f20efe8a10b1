"""Supervised training: the network's own loss on labelled batches, and one optimiser update."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dflowgen.models.registry import training_loss
from dflowgen.train.config import TrainConfig
from dflowgen.train.distributed import DistContext, mean_across
from dflowgen.train.log import METRIC_KEYS
from dflowgen.train.objective import Objective


def supervised_loss(model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig,
                    device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The network's supervised loss on a labelled batch (RAFT's sequence loss, FlowNet's multi-scale EPE),
    and its metrics (``epe``, ``1px``, ``3px``, ``5px``)."""
    img1, img2, flow_gt, valid = (batch[key].to(device, non_blocking=True) for key in ("img1", "img2", "flow", "valid"))
    return training_loss(model, img1, img2, flow_gt, valid, iters=config.iters, gamma=config.gamma,
                         max_flow=config.max_flow)


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                 metrics: dict[str, torch.Tensor], clip: float, context: DistContext = DistContext(),
                 keys: Sequence[str] = METRIC_KEYS) -> dict[str, float] | None:
    """Backpropagate ``loss`` and step ``optimizer`` unless the loss (on any process) or the gradient norm is
    not finite; returns the process-averaged ``keys`` (``loss`` first, then ``metrics``), or None when skipped."""
    stats = mean_across(torch.stack([loss.detach().float(), *(metrics[key].float() for key in keys[1:])]), context)
    if not torch.isfinite(stats[0]):
        return None
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(zip(keys, stats.tolist()))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               config: TrainConfig, device: torch.device, context: DistContext = DistContext()) -> dict[str, float] | None:
    """One supervised optimisation step on ``batch``; returns the process-averaged metrics, or None when skipped.

    ``batch`` holds ``img1``, ``img2`` (B×3×H×W in [0, 255]), ``flow`` (B×2×H×W), ``valid`` (B×H×W).
    A non-finite loss (on any process) or gradient norm leaves the parameters untouched. Mixed
    precision is the model's own setting (bf16 autocast around its convolutions).
    """
    loss, metrics = supervised_loss(model, batch, config, device)
    return apply_update(model, optimizer, loss, metrics, config.clip, context)


class SupervisedObjective(Objective):
    """``--mode supervised``: RAFT's sequence loss against the ground truth of ``--data``."""

    metric_keys = METRIC_KEYS

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return supervised_loss(model, batch, self.config, self.device)
