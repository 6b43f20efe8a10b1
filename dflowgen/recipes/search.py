"""Search settings: the ``[search]`` table of a recipe (``Recipe.search``).

Kept free of :mod:`dflowgen.recipes` imports, because the recipe holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflowgen.fields import check_non_negative, check_positive, check_probability, nested
from dflowgen.losses.selfsup import SelfSupervisedLossConfig

Metric = Literal["self-supervised", "supervised"]


@dataclass(frozen=True)
class SearchConfig:
    """How λ is searched and how a candidate is scored; keys under ``[search]`` and ``[search.selfsup]``.

    Evolution: ``generations`` generations of ``population`` candidates (a fixed budget of
    ``population × generations``). Generation 0 is drawn uniformly inside the bounds; the
    parents of generation g are the best ``population`` of generation g−1 and of its own
    parents (elitism: a good λ survives until beaten). A child copies the winner of a
    binary tournament, or with ``crossover_prob`` takes every key from one of two
    tournament winners (uniform crossover, the second parent with ``swap_prob``); each key
    then mutates with ``mutation_prob`` (default 1/|λ|, and at least one key always does):
    a Gaussian step of ``mutation_scale`` × the key's bound width, clipped to the bounds.
    ``seed`` makes the draws of trial n a function of (seed, n).

    λ space: every range and probability of ``[render]`` (see :mod:`dflowgen.search.space`),
    bounded by the base recipe's value widened by ``spread`` on each side and clipped to
    what the key can mean; keys in ``fixed`` keep the base value.

    Scoring: ``num_samples`` (M) samples rendered with the candidate λ, the ``[train]``
    section's ``num_steps`` (K) training steps, then ``metric`` on the target:
    ``"supervised"`` = AEPE (mean over pairs; needs labelled target data),
    ``"self-supervised"`` = the ``[search.selfsup]`` loss of the trained network on the
    target frames. Both are measured whenever the target has labels; lower is better.
    ``target_pairs`` keeps that many target pairs, evenly spaced (0: all);
    ``target_scale`` resizes target frames before the network sees them (AEPE is still
    measured at full resolution); ``eval_iters`` GRU iterations at scoring time.

    Bookkeeping: ``top_k`` recipes written; a running candidate records a heartbeat every
    ``heartbeat_interval`` s, and one silent for ``grace_period`` s (its process was
    killed) is marked failed and queued again with the same λ.
    """

    metric: Metric = "self-supervised"
    population: int = 8
    generations: int = 4
    num_samples: int = 64
    crossover_prob: float = 0.9
    swap_prob: float = 0.5
    mutation_prob: float | None = None
    mutation_scale: float = 0.1
    spread: float = 0.5
    fixed: tuple[str, ...] = ()
    seed: int = 0
    target_pairs: int = 0
    target_scale: float = 1.0
    eval_iters: int = 12
    top_k: int = 3
    heartbeat_interval: int = 30
    grace_period: int = 90
    selfsup: SelfSupervisedLossConfig = nested(SelfSupervisedLossConfig)

    def __post_init__(self) -> None:
        check_positive(self, "population", "generations", "num_samples", "eval_iters", "top_k", "heartbeat_interval")
        check_probability(self, "crossover_prob", "swap_prob")
        if self.mutation_prob is not None and not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be a probability in [0, 1], got {self.mutation_prob}")
        check_positive(self, "mutation_scale")
        check_non_negative(self, "spread")
        if self.target_pairs < 0:
            raise ValueError(f"target_pairs must be >= 0 (0 = all), got {self.target_pairs}")
        if not 0.0 < self.target_scale <= 1.0:
            raise ValueError(f"target_scale must be in (0, 1], got {self.target_scale}")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval})")

    @property
    def budget(self) -> int:
        """Candidates the search evaluates: ``population × generations``."""
        return self.population * self.generations
