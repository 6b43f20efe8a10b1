"""Training hyper-parameters; every field is a recipe key under ``[train]``.

Defaults follow the official RAFT training stages (chairs stage); recipes override them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    model: Literal["raft", "raft-small"] = "raft-small"
    num_steps: int = 100_000
    batch_size: int = 10
    crop_size: tuple[int, int] = (368, 496)
    lr: float = 4e-4
    weight_decay: float = 1e-4
    epsilon: float = 1e-8
    clip: float = 1.0
    gamma: float = 0.8
    max_flow: float = 400.0
    iters: int = 12
    freeze_bn: bool = False
    mixed_precision: bool = False
    checkpoint_every: int = 5000
    log_every: int = 100
    seed: int = 1234
    num_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "iters", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
