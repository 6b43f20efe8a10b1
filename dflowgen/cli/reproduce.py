"""``dflowgen reproduce``: the papers' key comparison, end to end, into a results folder (``make reproduce-table``)."""

from __future__ import annotations

from pathlib import Path

from dflowgen.cli import cli
from dflowgen.cli.experiment import experiment_options, run_experiment


@cli.command("reproduce")
@experiment_options("reproduce-mini", "Reproduction recipe with a [reproduce] table (bundled: reproduce-mini "
                                     "for 2 CPU cores, reproduce-paper for a GPU).")
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

    run_experiment(recipe, "reproduce", "reproduce-mini, reproduce-paper", run_reproduction, out, device, quiet)
