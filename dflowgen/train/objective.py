"""What one training step minimises, per mode, and the mode's bookkeeping around the loop.

The loop (:mod:`dflowgen.train.trainer`) is the same for every mode: it asks the objective
which network to update this step, for the loss of a batch, whether the data must be
re-read from some step on (pseudo labels refreshed), and what to add to a checkpoint.
An objective owns every network it needs besides the one the run trains: a frozen teacher,
or a partner it trains too (:attr:`Objective.partners`), and saves and restores them itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dflowgen.models.modes import freeze
from dflowgen.models.raft import build_raft, load_raft
from dflowgen.train.config import TrainConfig
from dflowgen.train.schedule import make_optimizer, make_scheduler


@dataclass
class Trainee:
    """A network being trained, its optimiser and schedule, and what the loop calls (itself, or DDP around it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    network: nn.Module

    @classmethod
    def of(cls, model: nn.Module, config: TrainConfig) -> Trainee:
        """``model`` with a fresh optimiser and schedule (:meth:`restore` resumes them)."""
        optimizer = make_optimizer(model, config)
        return cls(model, optimizer, make_scheduler(optimizer, config), model)

    def state(self) -> dict[str, Any]:
        """The network, optimiser and schedule as checkpoint data (see :meth:`restore`)."""
        return {**network_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def restore(self, state: dict[str, Any], config: TrainConfig, step: int) -> None:
        """Load :meth:`state`'s optimiser; the rate is a function of (step, num_steps), so the schedule is rebuilt
        at ``step`` (it then also follows an extended ``num_steps``)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler = make_scheduler(self.optimizer, config, step)


class Objective(ABC):
    """A training mode's loss and hooks; ``metric_keys`` are the log's columns (``loss`` first)."""

    metric_keys: tuple[str, ...]
    partners: tuple[Trainee, ...] = ()
    """Networks this objective trains besides the run's own (their steps: :meth:`trainee`)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss of ``model`` on ``batch`` at step ``step`` (0-based) and detached scalar metrics."""

    def prepare(self, resumed: bool) -> dict[str, Any] | None:
        """Work before the first step (of a fresh or a resumed run); an event for the log or None."""
        return None

    def trainee(self, step: int) -> int:
        """Which network step ``step`` updates: 0, the run's own; ``k`` ≥ 1, ``partners[k - 1]``."""
        return 0

    def segment_end(self, step: int, num_steps: int) -> int:
        """The first step ≥ ``step`` + 1 after which the training data changes (``num_steps``: never)."""
        return num_steps

    def after_step(self, step: int) -> dict[str, Any] | None:
        """Work after ``step`` steps are done; an event for the log (with ``"event"``) or None."""
        return None

    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold besides the run's own network to resume this objective (its partners
        included)."""
        return {}


def network_state(model: nn.Module) -> dict[str, Any]:
    """A network as checkpoint data: ``{"model_name", "model": state_dict}`` (CPU copies)."""
    weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    return {"model_name": model.model_name, "model": weights}


def network_from_state(state: dict[str, Any], device: torch.device, mixed_precision: bool = False) -> nn.Module:
    """The network of a :func:`network_state` on ``device`` (parameters as they were, not trainable)."""
    model = build_raft(state["model_name"], mixed_precision=mixed_precision)
    model.load_state_dict(state["model"])
    return model.to(device).requires_grad_(False)


def frozen_network(weights: str | Path, device: torch.device, mixed_precision: bool = False) -> nn.Module:
    """A network loaded from a checkpoint file (architecture inferred), on ``device``, not trainable, eval mode."""
    model = load_raft(weights, mixed_precision=mixed_precision, map_location=device)
    return freeze(model.to(device))
