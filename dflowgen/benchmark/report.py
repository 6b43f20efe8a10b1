"""The benchmark's report: per hidden target, every method against random data and the oracle; ``table.md``,
``results.json`` and ``plots/`` (matplotlib Agg), written atomically.

Per target and row: the target-test AEPE (EPE pooled over every pixel; mean ± sd over seeds), the
difference from the random row with its noise bound (twice the standard error over seeds), the
share of the oracle's gain over random that the row recovers, ``(random − row) / (random −
oracle)``, and how far its flow magnitudes lie from target-test's (1-Wasserstein distance, px).
For the searches: the Spearman ρ between the self-supervised metric and AEPE over their
candidates, and how far the found ranges lie from the hidden ones, each key's distance divided
by the width of its search bounds (0 = found exactly, 1 = a bound's width off), beside the same
distance of the default recipe.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dflowgen.figures import new_figure, save_png
from dflowgen.files import atomic_write_bytes
from dflowgen.fields import flatten_keys, to_dict
from dflowgen.recipes import Recipe
from dflowgen.search.report import spearman
from dflowgen.search.space import LambdaSpace, derive_space

METRIC = "epe_pixels"
TABLE_NAME = "table.md"
RESULTS_NAME = "results.json"
PLOTS_FOLDER = "plots"


@dataclass(frozen=True)
class TargetReport:
    """What one hidden target's stages produced (see :func:`dflowgen.benchmark.pipeline.run_benchmark`).

    ``rows``: row → ``{"set", "samples", "runs": {seed: ...}, "evaluations": {seed: {"aggregate": ...}}}``;
    ``base``: the base's evaluation; ``searches``: metric → the search stage's result (candidates with
    ``metric``, ``aepe``, ``selfsup``, ``lambda``); ``test_statistics``: target-test's set statistics.
    """

    name: str
    hidden: Recipe
    rows: dict[str, dict[str, Any]]
    base: dict[str, Any]
    searches: dict[str, dict[str, Any]]
    test_statistics: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class BenchmarkReport:
    name: str
    recipe: Recipe
    targets: dict[str, TargetReport]
    seconds: dict[str, float]


def summarise(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values."""
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "per_seed": list(values)}


def noise_bound(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Twice the standard error of the difference of two means over seeds (None without a spread)."""
    if a["std"] is None or b["std"] is None:
        return None
    return 2 * math.sqrt(a["std"] ** 2 / len(a["per_seed"]) + b["std"] ** 2 / len(b["per_seed"]))


def magnitude_density(statistics: list[dict[str, Any]], edges: np.ndarray) -> np.ndarray:
    """The flow-magnitude distribution of one set (or the parts of a mix) on ``edges``, summing to 1."""
    total = np.zeros(len(edges) - 1)
    for part in statistics:
        part_edges = np.asarray(part["histogram_edges"])
        centres = (part_edges[:-1] + part_edges[1:]) / 2
        total += np.histogram(np.clip(centres, edges[0], edges[-1]), bins=edges, weights=part["histogram_counts"])[0]
    return total / max(total.sum(), 1.0)


def magnitude_distance(statistics: list[dict[str, Any]], target: dict[str, Any], bins: int = 200) -> float:
    """1-Wasserstein distance (px) between a set's flow magnitudes and the target's, on a common grid."""
    top = max(max(part["histogram_edges"][-1] for part in statistics), target["histogram_edges"][-1])
    edges = np.linspace(0.0, top, bins + 1)
    difference = np.cumsum(magnitude_density(statistics, edges) - magnitude_density([target], edges))
    return float(np.abs(difference).sum() * (edges[1] - edges[0]))


def range_distance(values: dict[str, Any], hidden: Recipe, space: LambdaSpace) -> dict[str, Any]:
    """Per searched key, ``|found − hidden| / bound width`` (a range: the mean over its two ends); and the mean."""
    truth = flatten_keys(to_dict(hidden))
    per_key = {}
    for key in space.keys:
        width = max(key.high - key.low, 1e-12)
        found, wanted = values[key.key], truth[key.key]
        if key.is_range:
            per_key[key.key] = float(np.mean([abs(f - w) for f, w in zip(found, wanted)]) / width)
        else:
            per_key[key.key] = float(abs(found - wanted) / width)
    return {"mean": float(np.mean(list(per_key.values()))), "per_key": per_key}


def target_results(report: BenchmarkReport, target: TargetReport) -> dict[str, Any]:
    """Every figure of one target: rows (AEPE, against random, oracle share, magnitude distance), searches."""
    rows: dict[str, dict[str, Any]] = {}
    for row, result in target.rows.items():
        values = [result["evaluations"][seed]["aggregate"][METRIC] for seed in sorted(result["evaluations"])]
        rows[row] = {"aepe": summarise(values), "samples": result["samples"],
                     "magnitude_distance": magnitude_distance(result["set"]["statistics"], target.test_statistics)}
    random, oracle = rows.get("random"), rows.get("oracle")
    for row, figures in rows.items():
        if random is not None and row != "random":
            difference = figures["aepe"]["mean"] - random["aepe"]["mean"]
            noise = noise_bound(figures["aepe"], random["aepe"])
            verdict = ("no noise estimate" if noise is None else "within noise" if abs(difference) <= noise
                       else "better" if difference < 0 else "worse")
            figures["against_random"] = {"difference": difference, "noise": noise, "verdict": verdict}
        if random is not None and oracle is not None:
            gap = random["aepe"]["mean"] - oracle["aepe"]["mean"]
            figures["oracle_share"] = (random["aepe"]["mean"] - figures["aepe"]["mean"]) / gap if gap > 0 else None

    search = report.recipe.search
    space = derive_space(report.recipe.render, search.spread, search.fixed)
    default = flatten_keys(to_dict(report.recipe))
    searches = {"default recipe": {"range_distance": range_distance(default, target.hidden, space)}}
    for metric, stage in target.searches.items():
        found = [c for c in stage["candidates"] if c["metric"] is not None]
        best = min(found, key=lambda c: (c["metric"], c["trial"]))
        paired = [(c["selfsup"], c["aepe"]) for c in found if c["selfsup"] is not None and c["aepe"] is not None]
        rho = spearman([p[0] for p in paired], [p[1] for p in paired]) if len(paired) >= 3 else None
        searches[metric] = {"candidates": len(found), "spearman": rho, "best_trial": best["trial"],
                            "best_aepe": best["aepe"], "range_distance": range_distance(best["lambda"], target.hidden,
                                                                                      space)}
    base = target.base["aggregate"][METRIC]
    clear = (oracle is not None and random is not None and "against_random" in oracle
             and oracle["against_random"]["verdict"] == "better")
    return {"rows": rows, "base": base, "searches": searches, "oracle_beats_random": clear}


def _cell(figures: dict[str, Any]) -> str:
    std = figures["std"]
    return f"{figures['mean']:.3f}" + ("" if std is None else f" ± {std:.3f}")


def format_target(name: str, results: dict[str, Any], hidden_path: str) -> list[str]:
    """The markdown section of one hidden target."""
    lines = [f"## Target `{name}`", "",
             f"Base (every row's start) on target-test: AEPE {results['base']:.3f}. "
             + ("The oracle beats random beyond the noise bound: the target differs enough from the default domain."
                if results["oracle_beats_random"] else
                "**The oracle does not beat random beyond the noise bound**: this target is not different enough from "
                "the default domain to rank the methods."),
             "", "| row | samples | target-test AEPE | − random (± noise) | vs random | oracle gain recovered "
                 "| \\|flow\\| distance to target (px) |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for row, figures in results["rows"].items():
        against = figures.get("against_random")
        if against is None:
            difference, verdict = "—", "—"
        else:
            noise = "" if against["noise"] is None else f" ± {against['noise']:.3f}"
            difference, verdict = f"{against['difference']:+.3f}{noise}", against["verdict"]
        share = figures.get("oracle_share")
        share_text = "—" if share is None or row in ("random", "oracle") else f"{share:.0%}"
        lines.append(f"| {row} | {figures['samples']} | {_cell(figures['aepe'])} | {difference} | {verdict} | "
                     f"{share_text} | {figures['magnitude_distance']:.2f} |")
    lines += ["", f"Searches (ranges compared with the hidden recipe `{hidden_path}`, each key's distance divided by "
                  "the width of its search bounds; the default recipe for reference):", ""]
    for label, figures in results["searches"].items():
        distance = figures["range_distance"]["mean"]
        if label == "default recipe":
            lines.append(f"- default recipe: mean range distance {distance:.3f}")
            continue
        rho = "—" if figures["spearman"] is None else f"{figures['spearman']:+.2f}"
        lines.append(f"- {label} search: {figures['candidates']} candidates, Spearman ρ(self-supervised metric, AEPE) "
                     f"= {rho}; best candidate (trial {figures['best_trial']}) mean range distance {distance:.3f}")
    return lines + [""]


def format_table(report: BenchmarkReport, results: dict[str, dict[str, Any]]) -> str:
    recipe, config = report.recipe, report.recipe.benchmark
    lines = [f"# Known-target benchmark `{report.name}`", "",
             f"- Renders {recipe.render.width}×{recipe.render.height}; every row: {recipe.train.model} from the base, "
             f"{recipe.train.num_steps} steps of batch {recipe.train.batch_size} on {config.num_samples} samples (cut "
             f"to the smallest set), one run per seed ({len(config.seeds)} seeds).",
             f"- The base: {config.base.model} trained {config.base.num_steps} steps on {config.base_samples} "
             "default-domain samples; it is the base proxy and the start of every proxy, candidate and row.",
             f"- Each hidden target: target-train {config.train_pairs} labelled pairs, target-frames "
             f"{config.frames_pairs} pairs used without labels, target-test {config.test_pairs} pairs read only here; "
             f"AEPE pooled over every pixel at {config.eval_iters} GRU iterations.",
             "- A row beats random when its mean is lower by more than twice the standard error over seeds.", ""]
    for name, target_results_ in results.items():
        lines += format_target(name, target_results_, name)
    return "\n".join(lines) + "\n"


def plot_correlation(target: TargetReport, path: Path) -> None:
    """Self-supervised metric against AEPE for every candidate of both searches of a target."""
    figure = new_figure(6, 4)
    axes = figure.add_subplot()
    for (metric, stage), marker in zip(target.searches.items(), ("o", "s")):
        points = [(c["selfsup"], c["aepe"]) for c in stage["candidates"]
                  if c["selfsup"] is not None and c["aepe"] is not None]
        if points:
            rho = spearman(*zip(*points)) if len(points) >= 3 else float("nan")
            axes.scatter(*zip(*points), marker=marker, label=f"{metric} search (ρ = {rho:+.2f}, n = {len(points)})")
    axes.set_xlabel("self-supervised metric (lower is better)")
    axes.set_ylabel("AEPE on the scored target set (px)")
    axes.set_title(f"{target.name}: does the label-free metric rank candidates like AEPE?")
    axes.legend(fontsize=7)
    figure.tight_layout()
    save_png(figure, path)


def plot_magnitudes(target: TargetReport, path: Path) -> None:
    """Each row's flow-magnitude distribution against target-test's."""
    figure = new_figure(7, 4)
    axes = figure.add_subplot()
    top = max(max(part["histogram_edges"][-1] for row in target.rows.values() for part in row["set"]["statistics"]),
              target.test_statistics["histogram_edges"][-1])
    edges = np.linspace(0.0, top, 41)
    for row, result in target.rows.items():
        axes.stairs(magnitude_density(result["set"]["statistics"], edges) / np.diff(edges), edges, label=row)
    axes.stairs(magnitude_density([target.test_statistics], edges) / np.diff(edges), edges, color="black",
                linewidth=2, label="target-test")
    axes.set_xlabel("flow magnitude (px)")
    axes.set_ylabel("density")
    axes.set_yscale("log")
    axes.set_title(f"{target.name}: flow magnitude of each row's set and of the target")
    axes.legend(fontsize=6)
    figure.tight_layout()
    save_png(figure, path)


def write_report(out: Path, report: BenchmarkReport) -> tuple[str, dict[str, Any]]:
    """Write ``table.md``, ``results.json`` and ``plots/`` into ``out``; the table and the results."""
    per_target = {name: target_results(report, target) for name, target in report.targets.items()}
    table = format_table(report, per_target)
    results = {"name": report.name, "metric": f"AEPE ({METRIC}) on target-test", "targets": per_target,
               "searches": {name: target.searches for name, target in report.targets.items()},
               "seconds": report.seconds}
    atomic_write_bytes(out / TABLE_NAME, table.encode())
    atomic_write_bytes(out / RESULTS_NAME, (json.dumps(results, indent=1) + "\n").encode())
    plots = out / PLOTS_FOLDER
    plots.mkdir(exist_ok=True)
    for name, target in report.targets.items():
        plot_correlation(target, plots / f"{name}-correlation.png")
        plot_magnitudes(target, plots / f"{name}-flow-magnitude.png")
    return table, results
