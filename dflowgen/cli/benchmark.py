"""``dflowgen benchmark``: every method of the tool against hidden target domains whose truth is known (``make benchmark``)."""

from __future__ import annotations

from pathlib import Path

from dflowgen.cli import cli
from dflowgen.cli.experiment import experiment_options, run_experiment


@cli.command("benchmark")
@experiment_options("known-target-mini", "Benchmark recipe with a [benchmark] table (bundled: known-target-mini for 2 "
                                        "CPU cores, known-target-paper for a GPU).")
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

    run_experiment(recipe, "benchmark", "known-target-mini, known-target-paper", run_benchmark, out, device, quiet)
