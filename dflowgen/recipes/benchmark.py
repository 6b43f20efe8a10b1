"""Known-target benchmark settings: the ``[benchmark]`` table of a recipe (``Recipe.benchmark``).

Kept free of :mod:`dflowgen.recipes` imports, because the recipe holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from dflowgen.fields import check_positive, nested
from dflowgen.train.config import TrainConfig

Row = Literal[
    "random",
    "dflow",
    "dflow-label-free",
    "search-supervised-top1",
    "search-supervised-top3",
    "search-selfsup-top1",
    "search-selfsup-top3",
    "search-dflow",
    "oracle",
]
ROWS: tuple[str, ...] = get_args(Row)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``dflowgen benchmark`` compares, on which hidden targets; keys under ``[benchmark]``.

    Hidden targets: ``targets`` names recipes (bundled names or paths) whose ``[render]`` table is a
    target domain. No method reads them: from each, three sets are rendered with the seeds
    ``target_seeds`` — *target-train* (``train_pairs`` labelled pairs), *target-frames*
    (``frames_pairs`` pairs whose labels no method uses) and *target-test* (``test_pairs`` pairs
    that only the final evaluation reads). The oracle row and the report's range distances are the
    only other readers.

    The start: one base network for every target, ``init`` ("" = a fresh network seeded by
    ``base.seed``) trained with ``[benchmark.base]`` on ``base_samples`` samples of the recipe's
    own ``[render]`` (the default domain) drawn with ``base_seed``. It is the base proxy, the start
    of both target proxies, of every search candidate and of every row.

    Methods, each making a set of ``num_samples`` samples (seed ``generate.seed``, common to all):
    ``random`` (the recipe's ``[render]``); ``dflow`` (optimised with ``[optimize]`` against the base
    and a target proxy, the base fine-tuned on target-train with ``[benchmark.proxy]``);
    ``dflow-label-free`` (against a proxy made from target-frames alone with
    ``[benchmark.label_free_proxy]``, as ``dflowgen proxy`` does); ``search-supervised-*`` and
    ``search-selfsup-*`` (the top-1 recipe, or the top-3 mix, of a ``[search]`` evolution whose
    candidates train with ``[benchmark.search_train]`` from the base and are scored by AEPE on
    target-train, or by the self-supervised loss on target-frames); ``search-dflow`` (DFlow on the
    supervised search's top-1 recipe); ``oracle`` (the hidden recipe itself). ``rows`` picks them.

    Every row trains ``[train]`` from the base once per seed in ``seeds`` and is measured on
    target-test with ``eval_iters`` GRU iterations (EPE pooled over every pixel).
    """

    targets: tuple[str, ...] = ("hidden-drift-fog", "hidden-slow-blur")
    train_pairs: int = 64
    frames_pairs: int = 64
    test_pairs: int = 256
    target_seeds: tuple[int, int, int] = (101, 102, 103)
    num_samples: int = 256
    init: str = ""
    base_samples: int = 512
    base_seed: int = 1000
    rows: tuple[Row, ...] = ROWS
    seeds: tuple[int, ...] = (0, 1)
    eval_iters: int = 12
    base: TrainConfig = nested(TrainConfig)
    proxy: TrainConfig = nested(TrainConfig)
    label_free_proxy: TrainConfig = field(default_factory=lambda: TrainConfig(mode="pseudo-label"))
    search_train: TrainConfig = nested(TrainConfig)

    def __post_init__(self) -> None:
        check_positive(self, "train_pairs", "frames_pairs", "test_pairs", "num_samples", "base_samples", "eval_iters")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets lists a target twice: {list(self.targets)}")
        if len(set(self.target_seeds)) != 3:
            raise ValueError(f"target_seeds needs three different seeds (train, frames, test), got "
                             f"{list(self.target_seeds)}")
        if self.base_seed in self.target_seeds:
            raise ValueError(f"base_seed {self.base_seed} is one of target_seeds: the base would see target data")
        unknown = [row for row in self.rows if row not in ROWS]
        if unknown:
            raise ValueError(f"unknown row(s) {', '.join(unknown)} (choose from {', '.join(ROWS)})")
        if not self.rows or len(set(self.rows)) != len(self.rows):
            raise ValueError(f"rows needs at least one row and no repeats, got {list(self.rows)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds needs at least one seed and no repeats, got {list(self.seeds)}")
        for name in ("base", "proxy", "search_train"):
            if getattr(self, name).mode != "supervised":
                raise ValueError(f"{name}.mode must be 'supervised', got {getattr(self, name).mode!r}")
        if self.label_free_proxy.mode == "supervised":
            raise ValueError("label_free_proxy.mode must be a label-free mode (self-supervised, pseudo-label or "
                             "distill): it learns from target-frames alone")
