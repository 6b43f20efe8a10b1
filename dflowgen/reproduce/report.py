"""The report of a reproduction: ``table.md``, ``results.json`` and ``plots/`` (matplotlib Agg), written atomically.

Rows are data: the reference networks (the initialisation itself, the target proxy), then one
row per set, each trained once per seed. Columns are AEPE per evaluation set: the mean over
seeds ± the sample standard deviation over seeds (n − 1), with every per-seed figure in
``results.json``. AEPE is the official Sintel figure, the EPE pooled over every pixel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dflowgen.files import atomic_write_bytes, atomic_write_png
from dflowgen.reproduce.config import ReproduceConfig
from dflowgen.train.config import TrainConfig

TABLE_NAME = "table.md"
RESULTS_NAME = "results.json"
PLOTS_FOLDER = "plots"
METRIC = "epe_pixels"
HISTOGRAM_BINS = 40

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
    references = [("initialisation", f"initialisation ({report.init_name}, not trained)", 0, 0, None)]
    references.append(("target proxy", "target proxy (fine-tuned on the proxy scenes)", report.config.proxy.num_steps,
                       report.config.proxy.batch_size, None))
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


def comparisons(table_rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Each paper comparison whose two sets were run: the difference of mean AEPE per column and whether it
    exceeds seed noise (twice the standard error of the difference; "within noise" otherwise)."""
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
            found.append({"row": row, "against": other, "column": column, "difference": difference, "noise": noise,
                          "measured": measured, "paper": paper, "claim": claim,
                          "agrees": measured == paper})
    return found


def _aepe_cell(figures: dict[str, Any]) -> str:
    if figures["std"] is None:
        return f"{figures['mean']:.3f}"
    return f"{figures['mean']:.3f} ± {figures['std']:.3f}"


def format_table(report: Report, table_rows: list[dict[str, Any]], found: list[dict[str, Any]]) -> str:
    """``table.md``: the split, the protocol, the table and the comparisons with the paper's direction."""
    config = report.config
    width, height = report.frame_size
    column_names = list(report.columns)
    lines = [f"# Reproduction `{report.name}`", ""]
    for column, scenes in report.columns.items():
        pairs = report.evaluations[next(iter(report.evaluations))]["columns"][column]["aggregate"]["pairs"]
        lines.append(f"- **{column}**: Sintel scenes {', '.join(scenes)} (both passes where present; {pairs} pairs)")
    lines += [
        "- The target proxy is the base proxy fine-tuned on the proxy scenes only; the held-out scenes are seen by "
        "nothing but this evaluation.",
        f"- AEPE in px at {width}×{height} (Sintel resized ×{config.sintel_scale:g}), pooled over all pixels, "
        f"{config.eval_iters} GRU iterations; `mean ± sd` over training seeds (sample standard deviation).",
        f"- Every set row: {report.train.model} from {report.init_name}, {report.train.num_steps} steps of batch "
        f"{report.train.batch_size}, one run per seed (the seed orders and augments the data).",
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
    lines.append("")
    for variant, result in report.sets.items():
        statistics = result["statistics"]
        losses = statistics["losses"]
        line = (f"- set {variant}: {statistics['num_samples']} samples written, mean flow "
                f"{statistics['flow_mean']:.1f} px")
        if losses:
            line += (f"; proxy losses over the optimisation (means): target {losses['target_loss_initial']:.2f} → "
                     f"{losses['target_loss_final']:.2f}, base {losses['base_loss_initial']:.2f} → "
                     f"{losses['base_loss_final']:.2f}")
        if statistics["dropped"]:
            line += "; dropped " + ", ".join(f"{count} {reason}" for reason, count in statistics["dropped"].items())
        lines.append(line)
    if found:
        lines += ["", "Compared with the paper's direction of effect (a difference counts when it exceeds twice "
                      "its standard error over seeds, a rough test with this few seeds):", ""]
        for item in found:
            noise = "" if item["noise"] is None else f" (noise ±{item['noise']:.3f})"
            verdict = "agrees" if item["agrees"] else "does not show it"
            lines.append(f"- {item['column']}: {item['row']} − {item['against']} = {item['difference']:+.3f} px"
                         f"{noise}: {item['measured']}; paper: {item['paper']} ({item['claim']}) — {verdict}")
    return "\n".join(lines) + "\n"


def results_json(report: Report, table_rows: list[dict[str, Any]], found: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure of the reproduction, for ``results.json``."""
    return {
        "name": report.name,
        "metric": f"AEPE ({METRIC}: EPE pooled over all pixels), px at the evaluation size",
        "evaluation": {"iters": report.config.eval_iters, "sintel_scale": report.config.sintel_scale,
                       "frame_size": list(report.frame_size), "all_pixels": True, "columns": report.columns},
        "rows": table_rows,
        "comparisons": found,
        "target_proxy": report.proxy,
        "sets": report.sets,
        "runs": {variant: {str(seed): run for seed, run in seeds.items()} for variant, seeds in report.runs.items()},
        "seconds": report.seconds,
    }


def _figure(width: float, height: float) -> Any:
    # matplotlib loads here, not with the module: only the report needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _colours(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(index % 10) for index, name in enumerate(names)}


def plot_training_curves(report: Report, path: Path) -> None:
    """Training loss and EPE against the step: the target proxy's run, and every set's runs (one line per seed)."""
    figure = _figure(13, 3.8)
    proxy_axes, loss_axes, epe_axes = figure.subplots(1, 3)
    proxy = report.curves.get("target proxy", [])
    proxy_axes.plot([r["step"] for r in proxy], [r.get("epe") for r in proxy], color="black")
    proxy_axes.set_title("target proxy fine-tuning")
    proxy_axes.set_ylabel("training EPE (px)")
    colours = _colours(list(report.sets))
    styles = ["-", "--", ":", "-."]
    for variant, seeds in report.runs.items():
        for index, seed in enumerate(sorted(seeds)):
            records = report.curves.get(f"{variant}/seed-{seed}", [])
            steps = [record["step"] for record in records]
            style = {"color": colours[variant], "linestyle": styles[index % len(styles)],
                     "label": f"{variant} seed {seed}"}
            loss_axes.plot(steps, [record.get("loss") for record in records], **style)
            epe_axes.plot(steps, [record.get("epe") for record in records], **style)
    loss_axes.set_title("training loss (sequence L1)")
    epe_axes.set_title("training EPE (px) on the set")
    for axes in (proxy_axes, loss_axes, epe_axes):
        axes.set_xlabel("step")
    if report.runs:
        epe_axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_write_png(path, figure)


def plot_flow_magnitudes(report: Report, path: Path) -> None:
    """Each set's flow-magnitude distribution beside those of the Sintel scenes (density over valid pixels)."""
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    colours = _colours(list(report.sets))
    for variant, result in report.sets.items():
        statistics = result["statistics"]
        edges, counts = np.asarray(statistics["histogram_edges"]), np.asarray(statistics["histogram_counts"], float)
        density = counts / max(counts.sum(), 1.0) / np.diff(edges)
        axes.stairs(density, edges, color=colours[variant], label=f"{variant} (mean {statistics['flow_mean']:.1f})")
    for style, (column, magnitudes) in zip(("--", ":"), report.target_magnitudes.items()):
        density, edges = np.histogram(magnitudes, bins=HISTOGRAM_BINS, density=True)
        axes.stairs(density, edges, color="black", linestyle=style,
                    label=f"Sintel {column} (mean {float(magnitudes.mean()):.1f})")
    axes.set_xlabel("flow magnitude (px)")
    axes.set_ylabel("density")
    axes.set_yscale("log")
    axes.set_title("flow magnitude: sets (render size) vs Sintel (evaluation size)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_write_png(path, figure)


def plot_aepe(table_rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    """AEPE per row and column: bars at the mean, one dot per seed."""
    figure = _figure(4 + 1.2 * len(table_rows), 4)
    axes = figure.add_subplot()
    width = 0.8 / len(columns)
    for offset, column in enumerate(columns):
        positions = np.arange(len(table_rows)) + (offset - (len(columns) - 1) / 2) * width
        means = [row["aepe"][column]["mean"] for row in table_rows]
        axes.bar(positions, means, width=width, label=column, alpha=0.7)
        for position, row in zip(positions, table_rows):
            seeds = row["aepe"][column]["per_seed"]
            axes.plot([position] * len(seeds), seeds, "k.", markersize=4)
    axes.set_xticks(np.arange(len(table_rows)), [row["data"] for row in table_rows], rotation=20, fontsize=8)
    axes.set_ylabel("AEPE (px)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write_png(path, figure)



def write_report(out: Path, report: Report) -> tuple[str, dict[str, Any]]:
    """Write ``table.md``, ``results.json`` and ``plots/`` into ``out``; the table and the results."""
    table_rows = rows(report)
    found = comparisons(table_rows, list(report.columns))
    table = format_table(report, table_rows, found)
    results = results_json(report, table_rows, found)
    atomic_write_bytes(out / TABLE_NAME, table.encode())
    atomic_write_bytes(out / RESULTS_NAME, (json.dumps(results, indent=1) + "\n").encode())
    plots = out / PLOTS_FOLDER
    plots.mkdir(exist_ok=True)
    plot_training_curves(report, plots / "training-curves.png")
    plot_flow_magnitudes(report, plots / "flow-magnitude.png")
    plot_aepe(table_rows, list(report.columns), plots / "aepe.png")
    return table, results
