"""The report of a reproduction: ``table.md``, ``results.json`` and ``plots/`` (matplotlib Agg), written atomically.

Rows are data: the reference networks (the initialisation, the base, the target proxy), then
one row per set, each trained once per seed. Columns are AEPE per evaluation set: the mean over
seeds ± the sample standard deviation over seeds (n − 1), with every per-seed figure in
``results.json``. AEPE is the official Sintel figure, the EPE pooled over every pixel.

Before any winner is named the report checks that the experiment can show one:

* the target proxy stands for the target: no worse than the base on the held-out scenes and
  better on the proxy scenes;
* every trained row beats its starting point (the base) on the held-out scenes; if one does
  not, the comparison measures two ways of losing accuracy and the table says it is void;
* a difference between rows counts when it exceeds twice its standard error over seeds, and
  it is shown per held-out pair and with each pair left out, so a gain resting on one pair shows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dflowgen.files import atomic_write_bytes
from dflowgen.reproduce.plots import plot_aepe, plot_flow_magnitudes, plot_training_curves
from dflowgen.recipes.reproduce import ReproduceConfig
from dflowgen.train.config import TrainConfig

TABLE_NAME = "table.md"
RESULTS_NAME = "results.json"
PLOTS_FOLDER = "plots"
METRIC = "epe_pixels"

# (row, compared with, the direction of the paper's effect for the row): DFlow's data update
# (optimised beats random data), its α combination, and its real-world effects [DFlow].
COMPARISONS = (
    ("dflow", "random", "lower", "optimised data train a better network than the random pipeline data"),
    ("dflow-alpha-mix", "dflow", "lower", "the α combination beats a single α"),
    ("dflow-no-effects", "dflow", "higher", "real-world effects help"),
    ("random-no-effects", "random", "higher", "real-world effects help"),
)


@dataclass(frozen=True)
class Report:
    """Everything the report shows, gathered from the stages' results.

    ``sets``: set name → the set stage's result (with ``statistics``); ``runs``: set name → seed →
    training result; ``evaluations``: row key (``initialisation``, ``target proxy``,
    ``<set>/seed-<s>``) → ``{"columns": {column: EvalResult dict}}``; ``samples``: set name →
    samples trained on; ``curves``: run key → log records; ``target_magnitudes``: column →
    flow magnitudes (px) of its Sintel pairs at the evaluation scale; ``columns``: column →
    its scenes; ``seconds``: stage → seconds of the call that finished it.
    """

    name: str
    config: ReproduceConfig
    train: TrainConfig
    init_name: str
    base: dict[str, Any] | None
    base_set: dict[str, Any] | None
    columns: dict[str, list[str]]
    frame_size: tuple[int, int]
    proxy: dict[str, Any]
    sets: dict[str, dict[str, Any]]
    runs: dict[str, dict[int, dict[str, Any]]]
    evaluations: dict[str, dict[str, Any]]
    samples: dict[str, int]
    curves: dict[str, list[dict[str, Any]]]
    target_magnitudes: dict[str, np.ndarray]
    seconds: dict[str, float]


def summarise(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values themselves."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "per_seed": values}


def rows(report: Report) -> list[dict[str, Any]]:
    """The table's rows with every figure: AEPE per column (mean, std, per seed) and the full evaluations."""
    result = []
    config = report.config
    references = [("initialisation", f"initialisation ({report.init_name}, not trained)", 0, 0, None)]
    if report.base is not None:
        references.append(("base", "base (trained on the base dataset; every row starts here)", config.base.num_steps,
                           config.base.batch_size, config.base_samples))
    else:
        references.append(("base", f"base ({report.init_name}; every row starts here)", 0, 0, None))
    references.append(("target proxy", "target proxy (the base fine-tuned on the proxy scenes)", config.proxy.num_steps,
                       config.proxy.batch_size, None))
    for key, label, steps, batch, samples in references:
        if key not in report.evaluations:
            continue
        columns = report.evaluations[key]["columns"]
        result.append({"data": key, "label": label, "kind": "reference", "samples": samples, "steps": steps,
                       "batch_size": batch, "seeds": [],
                       "aepe": {column: summarise([columns[column]["aggregate"][METRIC]]) for column in columns},
                       "evaluations": {"-": columns}})
    for variant in report.sets:
        seeds = sorted(report.runs[variant])
        evaluations = {seed: report.evaluations[f"{variant}/seed-{seed}"]["columns"] for seed in seeds}
        aepe = {column: summarise([evaluations[seed][column]["aggregate"][METRIC] for seed in seeds])
                for column in report.columns}
        result.append({"data": variant, "label": variant, "kind": "set", "samples": report.samples[variant],
                       "steps": report.train.num_steps, "batch_size": report.train.batch_size, "seeds": seeds,
                       "aepe": aepe, "evaluations": {str(seed): evaluations[seed] for seed in seeds}})
    return result


HELD_OUT = "held-out"
PROXY_SCENES = "proxy scenes"


def pooled_epe(pairs: list[dict[str, Any]], leave_out: str | None = None) -> float:
    """EPE pooled over the pixels of ``pairs`` (per-pair dicts with ``name``, ``epe``, ``pixels``), one left out."""
    kept = [pair for pair in pairs if pair["name"] != leave_out]
    return sum(pair["epe"] * pair["pixels"] for pair in kept) / sum(pair["pixels"] for pair in kept)


def _seed_pairs(row: dict[str, Any], column: str) -> list[list[dict[str, Any]]]:
    """The per-pair results of ``column`` for each seed's network of a row (one list for a reference row)."""
    return [evaluation[column]["pairs"] for evaluation in row["evaluations"].values()]


def checks(report: Report, table_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the experiment can show a winner: the target proxy's two checks, and every row against its start.

    ``void`` is True when some trained row does not beat its starting point on the held-out scenes (mean over
    seeds); the comparisons between rows then measure nothing.
    """
    by_name = {row["data"]: row for row in table_rows}
    base, proxy = by_name["base"]["aepe"], by_name["target proxy"]["aepe"]
    result: dict[str, Any] = {"target_proxy": {
        HELD_OUT: {"target": proxy[HELD_OUT]["mean"], "base": base[HELD_OUT]["mean"],
                   "passes": proxy[HELD_OUT]["mean"] <= base[HELD_OUT]["mean"], "wanted": "no worse than the base"}}}
    if PROXY_SCENES in proxy:
        result["target_proxy"][PROXY_SCENES] = {
            "target": proxy[PROXY_SCENES]["mean"], "base": base[PROXY_SCENES]["mean"],
            "passes": proxy[PROXY_SCENES]["mean"] < base[PROXY_SCENES]["mean"], "wanted": "better than the base"}
    if report.config.rows_start != "base":
        result["rows"] = {}
        result["void"] = False
        return result
    start = base[HELD_OUT]["mean"]
    result["rows"] = {row["data"]: {"aepe": row["aepe"][HELD_OUT]["mean"], "start": start,
                                    "beats_start": row["aepe"][HELD_OUT]["mean"] < start,
                                    "seeds_beating_start": sum(value < start
                                                               for value in row["aepe"][HELD_OUT]["per_seed"]),
                                    "seeds": len(row["aepe"][HELD_OUT]["per_seed"])}
                      for row in table_rows if row["kind"] == "set"}
    result["void"] = not all(row["beats_start"] for row in result["rows"].values())
    return result


def per_pair(row: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Held-out figures of ``row`` against ``other`` pair by pair, and the pooled difference with each pair left out.

    Each figure is a mean over the rows' seeds. ``pairs``: name → (row, other, difference);
    ``leave_one_out``: name → the pooled difference without that pair; ``rests_on_one_pair``: leaving some
    pair out changes the sign of the difference.
    """
    row_seeds, other_seeds = _seed_pairs(row, HELD_OUT), _seed_pairs(other, HELD_OUT)
    names = [pair["name"] for pair in row_seeds[0]]

    def mean_epe(seeds: list[list[dict[str, Any]]], name: str) -> float:
        return float(np.mean([next(pair["epe"] for pair in pairs if pair["name"] == name) for pairs in seeds]))

    def mean_pooled(seeds: list[list[dict[str, Any]]], leave_out: str | None) -> float:
        return float(np.mean([pooled_epe(pairs, leave_out) for pairs in seeds]))

    pairs = {}
    for name in names:
        a, b = mean_epe(row_seeds, name), mean_epe(other_seeds, name)
        pairs[name] = {"row": a, "other": b, "difference": a - b}
    full = mean_pooled(row_seeds, None) - mean_pooled(other_seeds, None)
    leave_one_out = ({name: mean_pooled(row_seeds, name) - mean_pooled(other_seeds, name) for name in names}
                     if len(names) > 1 else {})
    flips = [name for name, value in leave_one_out.items() if np.sign(value) != np.sign(full)]
    return {"pairs": pairs, "leave_one_out": leave_one_out, "rests_on_one_pair": bool(flips), "sign_flips_without": flips}


def comparisons(table_rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Each paper comparison whose two sets were run: the difference of mean AEPE per column and whether it
    exceeds seed noise (twice the standard error of the difference; "within noise" otherwise). On the held-out
    column the figures per pair and with each pair left out come too (:func:`per_pair`)."""
    by_name = {row["data"]: row for row in table_rows if row["kind"] == "set"}
    found = []
    for row, other, paper, claim in COMPARISONS:
        if row not in by_name or other not in by_name:
            continue
        for column in columns:
            a, b = by_name[row]["aepe"][column], by_name[other]["aepe"][column]
            difference = a["mean"] - b["mean"]
            if a["std"] is None or b["std"] is None:
                noise = None
            else:
                noise = 2 * math.sqrt(a["std"] ** 2 / len(a["per_seed"]) + b["std"] ** 2 / len(b["per_seed"]))
            if noise is None:
                measured = "no noise estimate (one seed)"
            elif abs(difference) <= noise:
                measured = "within noise"
            else:
                measured = "lower" if difference < 0 else "higher"
            item = {"row": row, "against": other, "column": column, "difference": difference, "noise": noise,
                    "measured": measured, "paper": paper, "claim": claim, "agrees": measured == paper}
            if column == HELD_OUT:
                item["per_pair"] = per_pair(by_name[row], by_name[other])
            found.append(item)
    return found


def _aepe_cell(figures: dict[str, Any]) -> str:
    if figures["std"] is None:
        return f"{figures['mean']:.3f}"
    return f"{figures['mean']:.3f} ± {figures['std']:.3f}"


def _verdict(found: list[dict[str, Any]], verdicts: dict[str, Any]) -> str:
    """One line: void, or what the first held-out comparison (DFlow against random) measured."""
    if verdicts["void"]:
        losers = [name for name, row in verdicts["rows"].items() if not row["beats_start"]]
        return (f"**The comparison is void**: {', '.join(losers)} did not beat the starting point on the held-out "
                "scenes, so the rows compare ways of losing accuracy.")
    held_out = [item for item in found if item["column"] == HELD_OUT]
    if not held_out:
        return "No two sets to compare."
    item = held_out[0]
    noise = "no noise estimate" if item["noise"] is None else f"noise bound ±{item['noise']:.3f}"
    rests = item["per_pair"]["rests_on_one_pair"]
    word = {"lower": "better", "higher": "worse"}.get(item["measured"], item["measured"])
    return (f"Every trained row beats its start. On the held-out scenes {item['row']} − {item['against']} = "
            f"{item['difference']:+.3f} px ({noise}): {word}"
            + ("; the sign changes when one pair is left out" if rests else "") + ".")


def format_table(report: Report, table_rows: list[dict[str, Any]], found: list[dict[str, Any]],
                 verdicts: dict[str, Any]) -> str:
    """``table.md``: the verdict, the split, the table, the checks, the per-pair comparison and the sets."""
    config = report.config
    width, height = report.frame_size
    column_names = list(report.columns)
    lines = [f"# Reproduction `{report.name}`", "", _verdict(found, verdicts), ""]
    for column, scenes in report.columns.items():
        pairs = report.evaluations[next(iter(report.evaluations))]["columns"][column]["aggregate"]["pairs"]
        lines.append(f"- **{column}**: Sintel scenes {', '.join(scenes)} (both passes where present; {pairs} pairs), "
                     "fixed in the recipe before any run")
    start = "the base" if config.rows_start == "base" else "a fresh network"
    lines += [
        "- The target proxy is the base fine-tuned on the proxy scenes only; the held-out scenes are seen by "
        "nothing but this evaluation.",
        f"- AEPE in px at {width}×{height} (Sintel resized ×{config.sintel_scale:g}), pooled over all pixels, "
        f"{config.eval_iters} GRU iterations; `mean ± sd` over training seeds (sample standard deviation).",
        f"- Every set row: {report.train.model} from {start}, {report.train.num_steps} steps of batch "
        f"{report.train.batch_size}, one run per seed (the seed orders and augments the data); networks in "
        "`runs/<set>/seed-<k>/last.pth`.",
    ]
    if report.base is not None:
        lines.append(f"- The base: {config.base.model} from {report.init_name}, {config.base.num_steps} steps of batch "
                     f"{config.base.batch_size} on {config.base_samples} random samples (seed {config.base_seed}); "
                     "it is the base proxy and every row's start.")
    lines += [
        "",
        "| data | samples | steps × batch | seeds | " + " | ".join(f"{c} AEPE" for c in column_names) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(column_names),
    ]
    for row in table_rows:
        samples = "—" if row["samples"] is None else str(row["samples"])
        steps = "—" if not row["steps"] else f"{row['steps']} × {row['batch_size']}"
        seeds = "—" if not row["seeds"] else str(len(row["seeds"]))
        cells = " | ".join(_aepe_cell(row["aepe"][column]) for column in column_names)
        lines.append(f"| {row['label']} | {samples} | {steps} | {seeds} | {cells} |")

    lines += ["", "## Checks", ""]
    for column, check in verdicts["target_proxy"].items():
        where = "the held-out scenes" if column == HELD_OUT else "the proxy scenes"
        lines.append(f"- target proxy on {where}: {check['target']:.3f} against the base's "
                     f"{check['base']:.3f} (wanted: {check['wanted']}): {'passes' if check['passes'] else 'FAILS'}")
    if not verdicts["rows"]:
        lines.append("- rows start from a fresh network: no starting point to beat")
    for name, row in verdicts["rows"].items():
        lines.append(f"- {name} on the held-out scenes: {row['aepe']:.3f} against its start's {row['start']:.3f} "
                     f"({row['seeds_beating_start']} of {row['seeds']} seeds better): "
                     f"{'beats its start' if row['beats_start'] else 'DOES NOT beat its start'}")

    by_name = {row["data"]: row for row in table_rows}
    for item in found:
        if item["column"] != HELD_OUT:
            continue
        detail = item["per_pair"]
        lines += ["", f"## {item['row']} − {item['against']}, held-out pair by pair (means over seeds)", "",
                  f"| pair | base | {item['against']} | {item['row']} | difference |", "|---|---:|---:|---:|---:|"]
        base_pairs = {pair["name"]: pair["epe"] for pair in _seed_pairs(by_name["base"], HELD_OUT)[0]}
        for name, figures in detail["pairs"].items():
            lines.append(f"| {name} | {base_pairs[name]:.3f} | {figures['other']:.3f} | {figures['row']:.3f} | "
                         f"{figures['difference']:+.3f} |")
        noise = "" if item["noise"] is None else f" ± {item['noise']:.3f} (twice the standard error over seeds)"
        lines += ["", f"Pooled: {item['difference']:+.3f}{noise}."]
        if detail["leave_one_out"]:
            values = detail["leave_one_out"].values()
            lines.append(f"With any one pair left out the pooled difference lies in [{min(values):+.3f}, "
                         f"{max(values):+.3f}]" + (f"; its sign changes without {', '.join(detail['sign_flips_without'])}"
                                                   if detail["rests_on_one_pair"] else "; its sign never changes") + ".")

    lines += ["", "## Sets", ""]
    for variant, result in report.sets.items():
        lines.append(_set_line(variant, result["statistics"]))
    if report.base_set is not None:
        lines.append(_set_line("base dataset", report.base_set["statistics"]))
    if found:
        lines += ["", "## Compared with the paper's direction of effect", "",
                  "A difference counts when it exceeds twice its standard error over seeds, a rough test with this "
                  "few seeds" + (" (void: see the checks)" if verdicts["void"] else "") + ".", ""]
        for item in found:
            noise = "" if item["noise"] is None else f" (noise ±{item['noise']:.3f})"
            verdict = "agrees" if item["agrees"] and not verdicts["void"] else "does not show it"
            lines.append(f"- {item['column']}: {item['row']} − {item['against']} = {item['difference']:+.3f} px"
                         f"{noise}: {item['measured']}; paper: {item['paper']} ({item['claim']}) — {verdict}")
    return "\n".join(lines) + "\n"


def _set_line(name: str, statistics: dict[str, Any]) -> str:
    """One line about a set: samples, labels, flow, the proxies' losses and ratio over the optimisation, drops."""
    line = (f"- {name}: {statistics['num_samples']} samples, {statistics['valid_fraction']:.1%} of pixels labelled, "
            f"mean flow {statistics['flow_mean']:.1f} px")
    losses = statistics["losses"]
    if losses:
        line += (f"; proxy losses over the optimisation (means): target {losses['target_loss_initial']:.2f} → "
                 f"{losses['target_loss_final']:.2f}, base {losses['base_loss_initial']:.2f} → "
                 f"{losses['base_loss_final']:.2f}, ratio r = base/target {losses['ratio_initial']:.3f} → "
                 f"{losses['ratio_final']:.3f}")
    if statistics["dropped"]:
        line += "; dropped " + ", ".join(f"{count} {reason}" for reason, count in statistics["dropped"].items())
    return line


def results_json(report: Report, table_rows: list[dict[str, Any]], found: list[dict[str, Any]],
                 verdicts: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the reproduction, for ``results.json``."""
    return {
        "name": report.name,
        "metric": f"AEPE ({METRIC}: EPE pooled over all pixels), px at the evaluation size",
        "evaluation": {"iters": report.config.eval_iters, "sintel_scale": report.config.sintel_scale,
                       "frame_size": list(report.frame_size), "all_pixels": True, "columns": report.columns},
        "rows": table_rows,
        "comparisons": found,
        "checks": verdicts,
        "base": report.base,
        "base_set": report.base_set,
        "target_proxy": report.proxy,
        "sets": report.sets,
        "runs": {variant: {str(seed): run for seed, run in seeds.items()} for variant, seeds in report.runs.items()},
        "seconds": report.seconds,
    }


def write_report(out: Path, report: Report) -> tuple[str, dict[str, Any]]:
    """Write ``table.md``, ``results.json`` and ``plots/`` into ``out``; the table and the results."""
    table_rows = rows(report)
    found = comparisons(table_rows, list(report.columns))
    verdicts = checks(report, table_rows)
    table = format_table(report, table_rows, found, verdicts)
    results = results_json(report, table_rows, found, verdicts)
    atomic_write_bytes(out / TABLE_NAME, table.encode())
    atomic_write_bytes(out / RESULTS_NAME, (json.dumps(results, indent=1) + "\n").encode())
    plots = out / PLOTS_FOLDER
    plots.mkdir(exist_ok=True)
    plot_training_curves(report, plots / "training-curves.png")
    plot_flow_magnitudes(report, plots / "flow-magnitude.png")
    plot_aepe(table_rows, list(report.columns), plots / "aepe.png")
    return table, results
