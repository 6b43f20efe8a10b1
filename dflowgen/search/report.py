"""What a search leaves in its folder, and ``dflowgen search --report``.

Files (rewritten after every candidate, atomically, under a lock so workers sharing the
folder do not interleave):

* ``candidates.csv`` — every candidate: trial, generation, state, metric, AEPE (when the
  target has labels), the self-supervised loss and its terms, cost in seconds (total,
  render, train, score), the error of a failed one, and its λ (a range as ``key.lo`` and
  ``key.hi`` columns);
* ``top-1.toml`` … ``top-K.toml`` — the K best candidates as complete recipes, which
  ``dflowgen generate --mode random --recipe top-1.toml`` takes as they are;
* ``best.json`` — the best candidate's trial, metric, AEPE and λ.

The report adds, when the target has labels, the Spearman rank correlation between the
self-supervised metric and AEPE over candidates (does the label-free score rank data sets
as the labels would? [S-AF]) and their scatter plot, ``selfsup-vs-aepe.png``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dflowgen.errors import DflowgenError
from dflowgen.figures import new_figure, save_png
from dflowgen.files import atomic_write_bytes
from dflowgen.fields import flatten_keys, to_dict
from dflowgen.recipes import Recipe, recipe_to_toml, with_overrides
from dflowgen.search.evolution import EvolutionSampler

CANDIDATES_CSV = "candidates.csv"
BEST_JSON = "best.json"
PLOT_NAME = "selfsup-vs-aepe.png"
TERMS = ("census", "smooth1", "smooth2", "distill", "unscored")
STAGES = ("render", "train", "score")


@dataclass(frozen=True)
class Candidate:
    """One scored (or failed) candidate of a study."""

    trial: int
    generation: int | None
    state: str
    metric: float | None
    aepe: float | None
    selfsup: dict[str, float]
    seconds: dict[str, float]
    lam: dict[str, Any]
    error: str
    worker: str = ""

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name


def candidates(study: optuna.Study) -> list[Candidate]:
    """Every candidate of ``study`` (complete, failed or running), by trial number; budget-capped skips left out."""
    found = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.PRUNED or "lambda" not in trial.user_attrs:
            continue
        attrs = trial.user_attrs
        found.append(Candidate(trial.number, EvolutionSampler.generation_of(trial), trial.state.name, trial.value,
                               attrs.get("aepe"), attrs.get("selfsup", {}), attrs.get("seconds", {}),
                               attrs["lambda"], attrs.get("error", ""), attrs.get("worker", "")))
    return found


def ranked(found: Sequence[Candidate]) -> list[Candidate]:
    """The complete candidates, best (lowest metric) first."""
    return sorted((c for c in found if c.complete), key=lambda c: (c.metric, c.trial))


def candidate_recipe(base: Recipe, candidate: Candidate, name: str) -> Recipe:
    """The complete recipe of ``candidate``: the study's base recipe with its λ."""
    return with_overrides(base, {**candidate.lam, "name": name})


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    with open(folder / ".outputs.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lambda_columns(lam: dict[str, Any]) -> dict[str, Any]:
    columns = {}
    for key, value in lam.items():
        if isinstance(value, list):
            columns[f"{key}.lo"], columns[f"{key}.hi"] = value
        else:
            columns[key] = value
    return columns


def candidates_csv(found: Sequence[Candidate]) -> str:
    """The candidate table as CSV text."""
    rows = []
    for c in found:
        row = {"trial": c.trial, "generation": c.generation, "state": c.state, "worker": c.worker,
               "metric": c.metric, "aepe": c.aepe,
               "selfsup": c.selfsup.get("total"), **{term: c.selfsup.get(term) for term in TERMS},
               "seconds": c.seconds.get("total"), **{f"{stage}_s": c.seconds.get(stage) for stage in STAGES},
               "error": c.error, **_lambda_columns(c.lam)}
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["trial"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_outputs(folder: str | Path, study: optuna.Study, base: Recipe, top_k: int) -> list[Path]:
    """Write the candidate table, the top-k recipes and ``best.json`` into ``folder``; the paths written."""
    folder = Path(folder)
    found = candidates(study)
    best = ranked(found)[:top_k]
    written = [folder / CANDIDATES_CSV]
    with _folder_lock(folder):
        atomic_write_bytes(folder / CANDIDATES_CSV, candidates_csv(found).encode())
        for rank, candidate in enumerate(best, start=1):
            recipe = candidate_recipe(base, candidate, f"{study.study_name}-top-{rank}")
            path = folder / f"top-{rank}.toml"
            aepe = f", AEPE {candidate.aepe:.4f}" if candidate.aepe is not None else ""
            header = (f"# Search '{study.study_name}', rank {rank}: trial {candidate.trial}, "
                      f"metric {candidate.metric:.6g}{aepe}\n")
            atomic_write_bytes(path, (header + recipe_to_toml(recipe)).encode())
            written.append(path)
        if best:
            top = best[0]
            summary = {"trial": top.trial, "generation": top.generation, "metric": top.metric, "aepe": top.aepe,
                       "selfsup": top.selfsup, "seconds": top.seconds, "lambda": top.lam, "recipe": "top-1.toml"}
            atomic_write_bytes(folder / BEST_JSON, (json.dumps(summary, indent=2) + "\n").encode())
            written.append(folder / BEST_JSON)
    return written


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0…n−1 with ties sharing their mean rank."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); NaN when either side is constant or has < 2 values."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman needs two sequences of one length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = _average_ranks(x) - (len(x) - 1) / 2.0, _average_ranks(y) - (len(y) - 1) / 2.0
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else math.nan


def scatter_plot(points: Sequence[tuple[float, float, int]], path: str | Path, rho: float) -> None:
    """PNG of (self-supervised metric, AEPE) per candidate, labelled by trial number (written atomically)."""
    from matplotlib.ticker import MaxNLocator  # loads with the plot only, like new_figure's matplotlib

    figure = new_figure(5.5, 4.0)
    axes = figure.add_subplot()
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=18)
    for x, y, trial in points:
        axes.annotate(str(trial), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(MaxNLocator(5))
    axes.set_xlabel("self-supervised metric (lower is better)")
    axes.set_ylabel("AEPE (px)")
    axes.set_title(f"{len(points)} candidates, Spearman ρ = {rho:.3f}")
    figure.tight_layout()
    save_png(figure, Path(path))


@dataclass(frozen=True)
class Report:
    """A study's state: its candidates, the budget, the correlation when labelled, and the files written."""

    study_name: str
    metric: str
    target: str
    budget: int
    found: list[Candidate]
    spearman: float | None
    files: list[Path]

    def text(self, base: Recipe, limit: int | None = None) -> str:
        """The report as text: summary, table (best first), best λ where it differs from the base, files."""
        best = ranked(self.found)
        failed = sum(c.state == TrialState.FAIL.name for c in self.found)
        running = sum(c.state == TrialState.RUNNING.name for c in self.found)
        lines = [f"study '{self.study_name}': {len(best)}/{self.budget} candidates complete"
                 + (f", {failed} failed" if failed else "") + (f", {running} running" if running else "")
                 + f"; metric {self.metric} on {self.target}"]
        lines.append(f"{'rank':>4} {'trial':>5} {'gen':>3} {'metric':>10} {'selfsup':>10} {'AEPE':>8} {'seconds':>8}")
        for rank, c in enumerate(best[:limit] if limit else best, start=1):
            aepe = f"{c.aepe:8.3f}" if c.aepe is not None else f"{'-':>8}"
            generation = "-" if c.generation is None else str(c.generation)
            selfsup, seconds = c.selfsup.get("total", math.nan), c.seconds.get("total", math.nan)
            lines.append(f"{rank:>4} {c.trial:>5} {generation:>3} {c.metric:>10.4g} {selfsup:>10.4g} {aepe} "
                         f"{seconds:>8.1f}")
        generations = sorted({c.generation for c in best if c.generation is not None})
        if generations:
            per_generation = [f"{g}: {min(c.metric for c in best if c.generation == g):.4g}" for g in generations]
            lines.append("best metric per generation: " + ", ".join(per_generation))
        if best:
            base_values = flatten_keys(to_dict(base))
            changed = [f"  {key} = {value}" for key, value in best[0].lam.items() if base_values.get(key) != value]
            lines.append(f"best λ (trial {best[0].trial}), keys that differ from the base recipe:")
            lines += changed or ["  (none)"]
        if self.spearman is not None:
            lines.append(f"Spearman ρ(self-supervised metric, AEPE) over {sum(c.aepe is not None for c in best)} "
                         f"candidates: {self.spearman:.3f}")
        lines += [f"wrote {path}" for path in self.files]
        return "\n".join(lines)


def make_report(folder: str | Path, study: optuna.Study, base: Recipe, metric: str, target: str, budget: int,
                top_k: int) -> Report:
    """Rewrite the outputs of ``study`` in ``folder`` and, when candidates have AEPE, the correlation plot."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DflowgenError(f"study folder {folder} does not exist")
    files = write_outputs(folder, study, base, top_k)
    found = candidates(study)
    labelled = [(c.selfsup["total"], c.aepe, c.trial) for c in ranked(found)
                if c.aepe is not None and "total" in c.selfsup]
    rho = None
    if len(labelled) >= 3:
        rho = spearman([p[0] for p in labelled], [p[1] for p in labelled])
        scatter_plot(labelled, folder / PLOT_NAME, rho)
        files.append(folder / PLOT_NAME)
    return Report(study.study_name, metric, target, budget, found, rho, files)
