"""``dflowgen plot``: the curves of a training run as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.train.curves import CURVES_NAME, plot_curves


@cli.command("plot")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"PNG to write (default: RUN/{CURVES_NAME}).")
def plot_command(run: Path, out: Path | None) -> None:
    """Draw the training loss, learning rate and validation curves of the run in RUN to a PNG.

    RUN is a `dflowgen train --out` folder; its log.jsonl is read (the run may still be going).
    """
    click.echo(plot_curves(run, out))
