"""``dflowgen reproduce``: the papers' key comparison, end to end, into a results folder (``make reproduce-table``)."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import load_recipe
from dflowgen.recipes.reproduce import ReproduceConfig


@cli.command("reproduce")
@click.option("--recipe", default="reproduce-mini", show_default=True, metavar="FILE|NAME",
              help="Reproduction recipe with a [reproduce] table (bundled: reproduce-mini for 2 CPU cores, "
                   "reproduce-paper for a GPU).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Results folder: table.md, results.json, plots/, and every stage's outputs. Rerunning into it "
                   "skips finished stages.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress lines, bars or table.")
def reproduce_command(recipe: str, out: Path, device: str | None, quiet: bool) -> None:
    """Does DFlow data train better networks? Measure it on held-out Sintel scenes.

    \b
    1. fine-tune the target proxy (the [optimize] base network) on the recipe's proxy scenes;
    2. make equal-sized sets: random pipeline data, DFlow-optimised data (and the variants listed);
    3. train the same network from the same weights with the same budget on each, once per seed;
    4. evaluate every network, the initialisation and the proxy on the held-out scenes;
    5. write OUT/table.md, OUT/results.json and OUT/plots/.

    Every stage resumes where an interrupted run stopped and is skipped once done:

    \b
        dflowgen reproduce --recipe reproduce-mini --out results/reproduce-mini
    """
    # The training and generation stack loads only when this command runs.
    from dflowgen.reproduce.pipeline import run_reproduction

    resolved = load_recipe(recipe)
    if resolved.reproduce == ReproduceConfig():
        raise DflowgenError(f"recipe {recipe!r} has no [reproduce] table (bundled: reproduce-mini, reproduce-paper)")
    summary = run_reproduction(resolved, out, device=device, quiet=quiet,
                               echo=None if quiet else lambda line: click.echo(line, err=True))
    if not quiet:
        click.echo(summary.table)
        minutes = summary.seconds / 60
        click.echo(f"{out}: {len(summary.stages_run)} stages run, {len(summary.stages_skipped)} skipped "
                   f"({minutes:.1f} min); table {out / 'table.md'}, figures {out / 'results.json'}, "
                   f"plots {out / 'plots'}")
