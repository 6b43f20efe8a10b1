"""Scoring one candidate λ: render M samples, train a small flow network K steps, measure it on the target.

The M samples are rendered in memory (the same pipeline and per-sample seeds as
``dflowgen generate --mode random``: sample i of a candidate depends only on the recipe's
``generate.seed`` and i, so every candidate gets the same random draws through its own λ —
common random numbers, which make candidates comparable with few samples). Training is
:func:`dflowgen.train.trainer.train` with the recipe's ``[train]`` section, from scratch or
from ``init``, in a scratch folder that is deleted afterwards.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dflowgen.assets import LayerBank
from dflowgen.data.sample import FlowPair
from dflowgen.data.batches import render_batch
from dflowgen.models.registry import load_model
from dflowgen.recipes import Recipe, recipe_to_toml
from dflowgen.recipes.search import SearchConfig
from dflowgen.search.target import TargetSet, score_model
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import train


class RenderedSet(Dataset):
    """Rendered samples held in memory as a torch Dataset of :class:`FlowPair`."""

    def __init__(self, img1: np.ndarray, img2: np.ndarray, flow: np.ndarray, valid: np.ndarray) -> None:
        self.img1, self.img2, self.flow, self.valid = img1, img2, flow, valid

    def __len__(self) -> int:
        return len(self.img1)

    def __getitem__(self, index: int) -> FlowPair:
        return FlowPair(self.img1[index], self.img2[index], self.flow[index], self.valid[index].astype(bool),
                        f"sample-{index:07d}")


def render_set(recipe: Recipe, bank: LayerBank, num_samples: int, device: torch.device) -> RenderedSet:
    """Samples 0 … ``num_samples − 1`` of ``recipe`` (seed ``generate.seed``), ``generate.batch_size`` at a time."""
    batch_size, seed = recipe.generate.batch_size, recipe.generate.seed
    batches = [render_batch(recipe.render, bank, seed, range(start, min(start + batch_size, num_samples)), device,
                            store_params=False)
               for start in range(0, num_samples, batch_size)]
    return RenderedSet(*(np.concatenate([getattr(batch, name) for batch in batches])
                         for name in ("img1", "img2", "flow", "valid")))


def train_network(recipe: Recipe, dataset: Dataset, init: str | Path | None, device: torch.device) -> nn.Module:
    """A network trained on ``dataset`` with ``recipe.train`` (no files left behind), on ``device``."""
    config = recipe.train
    with tempfile.TemporaryDirectory(prefix="dflowgen-candidate-") as scratch:
        result = train(config, [DataSource(dataset, name="candidate")], scratch, init=init, device=str(device),
                       quiet=True, recipe_text=recipe_to_toml(recipe))
        return load_model(result.checkpoint, model_name=config.model, map_location=device)


@dataclass(frozen=True)
class CandidateScore:
    """What a candidate scored and what it cost (seconds per stage: render, train, score, total)."""

    metric: float
    selfsup: dict[str, float]
    aepe: float | None
    seconds: dict[str, float]


def score_candidate(recipe: Recipe, search: SearchConfig, target: TargetSet, bank: LayerBank,
                    init: str | Path | None, device: torch.device) -> CandidateScore:
    """Render ``search.num_samples`` samples of ``recipe``, train on them, score on ``target`` by ``search.metric``."""
    clock = _Clock()
    dataset = render_set(recipe, bank, search.num_samples, device)
    clock.lap("render")
    model = train_network(recipe, dataset, init, device)
    clock.lap("train")
    score = score_model(model, target, search.eval_iters, search.selfsup, device)
    clock.lap("score")
    metric = score.aepe if search.metric == "supervised" else score.selfsup["total"]
    return CandidateScore(metric, score.selfsup, score.aepe, clock.seconds())


class _Clock:
    """Wall-clock seconds per named stage (CUDA work is waited for, so stages are not misattributed)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def seconds(self) -> dict[str, float]:
        return {**self.laps, "total": self.last - self.start}
