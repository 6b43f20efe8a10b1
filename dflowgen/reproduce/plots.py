"""The reproduction's plots: training curves, flow magnitudes of the sets against the target's, AEPE per row."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dflowgen.figures import new_figure, save_png

if TYPE_CHECKING:
    from dflowgen.reproduce.report import Report

HISTOGRAM_BINS = 40
"""Bins of the flow-magnitude histograms the sets' statistics keep and the plots draw."""


def _colours(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(index % 10) for index, name in enumerate(names)}


def plot_training_curves(report: Report, path: Path) -> None:
    """Training loss and EPE against the step: the base's and target proxy's runs, and every set's runs (one line per seed)."""
    figure = new_figure(13, 3.8)
    proxy_axes, loss_axes, epe_axes = figure.subplots(1, 3)
    for name, colour in (("base", "grey"), ("target proxy", "black")):
        records = report.curves.get(name, [])
        if records:
            proxy_axes.plot([r["step"] for r in records], [r.get("epe") for r in records], color=colour, label=name)
    proxy_axes.set_title("base training and target proxy fine-tuning")
    proxy_axes.legend(fontsize=7)
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
    save_png(figure, path)


def plot_flow_magnitudes(report: Report, path: Path) -> None:
    """Each set's flow-magnitude distribution beside those of the Sintel scenes (density over valid pixels)."""
    figure = new_figure(7, 4)
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
    save_png(figure, path)


def plot_aepe(table_rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    """AEPE per row and column: bars at the mean, one dot per seed."""
    figure = new_figure(4 + 1.2 * len(table_rows), 4)
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
    save_png(figure, path)
