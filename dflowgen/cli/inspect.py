"""``dflowgen inspect``: statistics of a generated set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.inspect import PLOT_NAME, format_statistics, plot_histogram, set_statistics


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--bins", type=int, default=20, show_default=True, help="Bins of the flow-magnitude histogram.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help=f"Where to save the histogram PNG (default: FOLDER/{PLOT_NAME}).")
@click.option("--no-plot", "no_plot", is_flag=True, help="Do not save the histogram PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def inspect(folder: Path, as_json: bool, bins: int, plot: Path | None, no_plot: bool, quiet: bool) -> None:
    """Sample count, resolution, flow statistics and effect frequencies of the set in FOLDER."""
    stats = set_statistics(folder, bins=bins, quiet=quiet)
    if not no_plot:
        plot_histogram(stats, plot or folder / PLOT_NAME)
    click.echo(json.dumps(stats.to_dict(), indent=2) if as_json else format_statistics(stats))
