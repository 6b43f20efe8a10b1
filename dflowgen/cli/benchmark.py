"""``dflowgen benchmark``: every method of the tool against hidden target domains whose truth is known (``make benchmark``)."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.recipes.benchmark import BenchmarkConfig
from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import load_recipe


@cli.command("benchmark")
@click.option("--recipe", default="known-target-mini", show_default=True, metavar="FILE|NAME",
              help="Benchmark recipe with a [benchmark] table (bundled: known-target-mini for 2 CPU cores, "
                   "known-target-paper for a GPU).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Results folder: table.md, results.json, plots/, and every stage's outputs. Rerunning into it "
                   "skips finished stages.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress lines, bars or table.")
def benchmark_command(recipe: str, out: Path, device: str | None, quiet: bool) -> None:
    """Can DFlow and the searches find a target domain whose answer we know?

    \b
    1. train the base on the recipe's own (default) domain;
    2. per hidden target recipe: render target-train, target-frames and target-test;
    3. make DFlow's target proxy (labelled) and a label-free proxy, and run both searches;
    4. make one set per method (random, DFlow, label-free DFlow, searches, search + DFlow, oracle),
       train the base on each once per seed, and measure every network on target-test;
    5. write OUT/table.md, OUT/results.json and OUT/plots/.

    Every stage resumes where an interrupted run stopped and is skipped once done:

    \b
        dflowgen benchmark --recipe known-target-mini --out results/known-target-mini
    """
    # The training and generation stack loads only when this command runs.
    from dflowgen.benchmark.pipeline import run_benchmark

    resolved = load_recipe(recipe)
    if resolved.benchmark == BenchmarkConfig():
        raise DflowgenError(f"recipe {recipe!r} has no [benchmark] table (bundled: known-target-mini, "
                            "known-target-paper)")
    summary = run_benchmark(resolved, out, device=device, quiet=quiet,
                            echo=None if quiet else lambda line: click.echo(line, err=True))
    if not quiet:
        click.echo(summary.table)
        click.echo(f"{out}: {len(summary.stages_run)} stages run, {len(summary.stages_skipped)} skipped "
                   f"({summary.seconds / 60:.1f} min); table {out / 'table.md'}, figures {out / 'results.json'}, "
                   f"plots {out / 'plots'}")
