"""``dflowgen inspect``: statistics of a generated set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.manifest import set_folders
from dflowgen.data.statistics import PLOT_NAME, format_statistics, plot_histogram, set_statistics


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--bins", type=int, default=20, show_default=True, help="Bins of the flow-magnitude histogram.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help=f"Where to save the histogram PNG (default: FOLDER/{PLOT_NAME}).")
@click.option("--no-plot", "no_plot", is_flag=True, help="Do not save the histogram PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def inspect(folder: Path, as_json: bool, bins: int, plot: Path | None, no_plot: bool, quiet: bool) -> None:
    """Sample count, resolution, flow statistics, effect frequencies and proxy losses of the set in FOLDER.

    For a mix (``generate --recipe A --recipe B``) every part is reported, and plotted in its own folder.
    """
    parts = set_folders(folder)
    if plot is not None and len(parts) > 1:
        raise click.UsageError("--plot names one file; a mixed set has one plot per part (use the default)")
    reports = []
    for part in parts:
        stats = set_statistics(part, bins=bins, quiet=quiet)
        if not no_plot:
            plot_histogram(stats, plot or part / PLOT_NAME)
        reports.append(stats)
    if as_json:
        data = [stats.to_dict() for stats in reports]
        click.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        click.echo("\n\n".join(format_statistics(stats) for stats in reports))
