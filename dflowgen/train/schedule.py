"""The official RAFT optimiser and learning-rate schedule: AdamW and a linear OneCycle."""

from __future__ import annotations

import torch
from torch import nn

from dflowgen.train.config import TrainConfig

# The official trainer sizes the cycle 100 steps longer than the run, so the rate never reaches zero.
SCHEDULE_EXTRA_STEPS = 100


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over all trainable parameters with the recipe's lr, weight decay and epsilon."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, eps=config.epsilon)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle to ``lr`` over ``num_steps + 100`` steps: linear warm-up for ``pct_start``, then linear decay."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=config.num_steps + SCHEDULE_EXTRA_STEPS,
        pct_start=config.pct_start,
        cycle_momentum=False,
        anneal_strategy="linear",
    )
