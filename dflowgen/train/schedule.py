"""The official RAFT optimiser and learning-rate schedule: AdamW and a linear OneCycle.

The learning rate is a function of (step, ``num_steps``) alone, so a resumed run rebuilds the
schedule at its step instead of trusting a stored one. Extending a finished run (``--resume
--steps N``) rebuilds the cycle for the new total: steps after the old end follow exactly the
rates a run planned for N steps has there (the rate rises again from the old end's near-zero
value to that of step ``old_num_steps`` of the longer cycle, then decays to the new end). Holding the
old final rate instead would continue at ``lr·100/((1 − pct_start)(num_steps + 100))`` —
0.1 % of ``lr`` after 100k steps — where the extra steps would barely move the weights.
"""

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


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   start_step: int = 0) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle to ``lr`` over ``num_steps + 100`` steps: linear warm-up for ``pct_start``, then linear decay.

    ``start_step`` > 0 resumes it after that many steps of an optimiser that has run under a
    OneCycle of the same ``lr`` (its parameter groups hold the cycle's ``initial_lr``), and sets
    the optimiser's rate to the one of that step.
    """
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=config.num_steps + SCHEDULE_EXTRA_STEPS,
        pct_start=config.pct_start,
        cycle_momentum=False,
        anneal_strategy="linear",
        last_epoch=start_step - 1,
    )
