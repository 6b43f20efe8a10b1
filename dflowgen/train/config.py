"""Training hyper-parameters; every field is a recipe key under ``[train]`` (and ``[train.augment]``).

Defaults follow the official RAFT chairs stage (``train_standard.sh`` and ``datasets.py`` of
princeton-vl/RAFT); the other stages are recipes (``recipes/train-*.toml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflowgen.fields import nested


@dataclass(frozen=True)
class AugmentConfig:
    """RAFT-style augmentation of every training pair (:class:`dflowgen.data.augment.FlowAugmentor`).

    With probability ``spatial_prob`` a pair is zoomed by ``2**u``, ``u`` uniform in
    ``[min_scale, max_scale]`` (official stages: chairs −0.1…1.0, things −0.4…0.8,
    sintel −0.2…0.6, kitti −0.2…0.4), each axis further stretched by ``2**v``,
    ``|v| <= max_stretch``, with probability ``stretch_prob`` (dense flow only); then
    flipped (``do_flip``), colour-jittered (``photometric``), partly erased (``eraser``)
    and randomly cropped. ``spatial_prob = 0`` with the switches off leaves the random crop
    only, as the DFlow target proxy is trained.
    """

    min_scale: float = -0.1
    max_scale: float = 1.0
    spatial_prob: float = 0.8
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    do_flip: bool = True
    photometric: bool = True
    eraser: bool = True

    def __post_init__(self) -> None:
        if self.min_scale > self.max_scale:
            raise ValueError(f"augment.min_scale ({self.min_scale}) must not exceed augment.max_scale ({self.max_scale})")
        for name in ("spatial_prob", "stretch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.max_stretch < 0:
            raise ValueError(f"augment.max_stretch must be >= 0, got {self.max_stretch}")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage: model, optimiser, schedule, loss, data handling and bookkeeping.

    ``batch_size`` is the *global* batch: under torchrun each of the ``W`` processes takes
    ``batch_size / W`` samples of every step, so a recipe means the same thing on any
    number of GPUs. The learning rate follows OneCycle with linear annealing over
    ``num_steps + 100`` steps and ``pct_start`` warm-up, as the official trainer does.
    """

    model: Literal["raft", "raft-small"] = "raft-small"
    num_steps: int = 100_000
    batch_size: int = 10
    crop_size: tuple[int, int] = (368, 496)
    lr: float = 4e-4
    weight_decay: float = 1e-4
    epsilon: float = 1e-8
    pct_start: float = 0.05
    clip: float = 1.0
    gamma: float = 0.8
    max_flow: float = 400.0
    iters: int = 12
    freeze_bn: bool = False
    mixed_precision: bool = False
    max_nonfinite: int = 5
    checkpoint_every: int = 5000
    log_every: int = 100
    seed: int = 1234
    num_workers: int = 2
    augment: AugmentConfig = nested(AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "iters", "checkpoint_every", "log_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if any(side < 8 or side % 8 for side in self.crop_size):
            raise ValueError(f"crop_size must be positive multiples of 8 (RAFT works at 1/8), got {list(self.crop_size)}")
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        for name in ("lr", "clip", "gamma", "max_flow"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


# Fields that change how a run is watched or stored, not the parameters it produces;
# a resumed run may change them.
BOOKKEEPING_FIELDS = frozenset({"num_workers", "log_every", "checkpoint_every", "max_nonfinite"})
