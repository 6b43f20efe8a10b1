"""An elitist genetic algorithm as an optuna sampler [AutoFlow §3.2].

Optuna keeps the state (trials, their λ and scores, generations, the parents chosen for
each generation) in its storage, so any number of processes sharing the storage evolve one
population, and a restarted process continues where the storage stands.
:class:`optuna.samplers.BaseGASampler` assigns generations: a trial belongs to the
newest generation until that generation has ``population`` completed trials.

* Generation 0: trial 0 is ``first`` when given (the base recipe's own λ, so the search
  never ends worse by its own metric than the recipe it started from: with a few dozen
  candidates in twenty-odd dimensions, uniform draws alone can all land further from a
  target than the base recipe is); every other parameter set uniform inside its bounds.
* Parents of generation g ≥ 1: the best ``population`` trials among generation g−1 and the
  parents of generation g−1 (μ+λ elitism). They are computed once and cached in the
  storage, so every process breeds from the same parents.
* A child: the winner of a binary tournament, or, with ``crossover_prob``, a uniform
  crossover of two tournament winners (each parameter from the second with
  ``swap_prob``); then each parameter mutates with ``mutation_prob`` (default
  1/#parameters; at least one always does, so a child never repeats its parent): a
  Gaussian step of ``mutation_scale`` × the parameter's bound width, clipped to the bounds.

Randomness for trial n comes from a generator seeded with (seed, n) only, so a resumed
search draws what an uninterrupted one would have, and concurrent processes never draw
the same values.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import BaseGASampler
from optuna.trial import FrozenTrial


class EvolutionSampler(BaseGASampler):
    """Elitist GA over a fixed set of parameters (λ); minimises the study's single objective."""

    def __init__(self, distributions: Mapping[str, BaseDistribution], population: int, *, crossover_prob: float = 0.9,
                 swap_prob: float = 0.5, mutation_prob: float | None = None, mutation_scale: float = 0.1,
                 seed: int = 0, first: Mapping[str, Any] | None = None) -> None:
        super().__init__(population_size=population)
        self.first = dict(first) if first is not None else None
        self.distributions = dict(sorted(distributions.items()))
        self.crossover_prob = crossover_prob
        self.swap_prob = swap_prob
        self.mutation_prob = mutation_prob if mutation_prob is not None else 1.0 / max(1, len(self.distributions))
        self.mutation_scale = mutation_scale
        self.seed = seed

    @classmethod
    def generation_of(cls, trial: FrozenTrial) -> int | None:
        """The generation a trial was bred for (None before the sampler saw it)."""
        return trial.system_attrs.get(cls._get_generation_key())

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.distributions)

    def select_parent(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """The best ``population`` of generation ``generation − 1`` and of its own parents."""
        previous = generation - 1
        candidates = self.get_population(study, previous) + self.get_parent_population(study, previous)
        pool = {t.number: t for t in candidates}
        ranked = sorted(pool.values(), key=lambda t: (t.value, t.number))
        return ranked[: self.population_size]

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, trial.number])
        generation = self.get_trial_generation(study, trial)
        parents = self.get_parent_population(study, generation)
        if not parents:
            if trial.number == 0 and self.first is not None:
                return {name: self.first[name] for name in search_space}
            return {name: _uniform(distribution, rng) for name, distribution in search_space.items()}
        return self._child(parents, search_space, rng)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Only reached for parameters outside λ; draw them uniformly, still from (seed, trial, name).
        rng = np.random.default_rng([self.seed, trial.number, zlib.crc32(param_name.encode())])
        return _uniform(param_distribution, rng)

    def _child(self, parents: list[FrozenTrial], search_space: dict[str, BaseDistribution],
               rng: np.random.Generator) -> dict[str, Any]:
        def tournament() -> FrozenTrial:
            first, second = (parents[i] for i in rng.integers(len(parents), size=2))
            return min(first, second, key=lambda t: (t.value, t.number))

        names = sorted(search_space)
        base = tournament()
        child = {name: base.params[name] for name in names}
        if len(parents) > 1 and rng.random() < self.crossover_prob:
            other = tournament()
            for name in names:
                if rng.random() < self.swap_prob:
                    child[name] = other.params[name]
        mutate = rng.random(len(names)) < self.mutation_prob
        if not mutate.any():
            mutate[rng.integers(len(names))] = True
        for name, flag in zip(names, mutate):
            if flag:
                child[name] = _mutated(child[name], search_space[name], self.mutation_scale, rng)
        return child


def _uniform(distribution: BaseDistribution, rng: np.random.Generator) -> Any:
    if isinstance(distribution, IntDistribution):
        return int(rng.integers(distribution.low, distribution.high + 1))
    return float(rng.uniform(distribution.low, distribution.high))


def _mutated(value: Any, distribution: BaseDistribution, scale: float, rng: np.random.Generator) -> Any:
    """A Gaussian step of ``scale`` × the bound width, clipped; integers move by at least one."""
    low, high = distribution.low, distribution.high
    step = rng.normal(0.0, scale * (high - low))
    if isinstance(distribution, IntDistribution):
        step = int(round(step)) or (1 if step >= 0 else -1)
        return int(min(max(value + step, low), high))
    return float(min(max(value + step, low), high))
