"""``dflowgen train``: RAFT training, supervised on data specs or label-free on unlabelled frames."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.spec import SPEC_HELP, open_spec
from dflowgen.evaluate import Validation
from dflowgen.models.registry import MODEL_NAMES
from dflowgen.recipes import load_recipe, parse_recipe, recipe_to_toml, with_overrides
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import TRAIN_MODES
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME, TrainResult, train


def open_sources(specs: tuple[str, ...]) -> list[DataSource]:
    """One :class:`DataSource` per data spec (its repeat weight and sparsity from the spec)."""
    sources = []
    for spec in specs:
        opened = open_spec(spec)
        sources.append(DataSource(opened.dataset, opened.weight, opened.sparse, name=spec))
    return sources


def summary_line(out: Path, result: TrainResult) -> str:
    """The one-line summary of a finished run: steps, the last logged loss (and EPE), skipped steps, checkpoint."""
    record = result.last_record or {}
    figures = f", loss {record['loss']:.4f}" if record.get("loss") is not None else ""
    figures += f", EPE {record['epe']:.3f}" if record.get("epe") is not None else ""
    skipped = f", {result.nonfinite_steps} non-finite steps skipped" if result.nonfinite_steps else ""
    return f"{out}: {result.step} steps{figures}{skipped}; checkpoint {result.checkpoint}"


@cli.command("train")
@click.option("--data", "data_specs", multiple=True, metavar="SPEC",
              help=f"Labelled training data, repeatable (a mix); with --mode pseudo-label, mixed with the "
                   f"pseudo-labelled frames. {SPEC_HELP}.")
@click.option("--mode", type=click.Choice(TRAIN_MODES), default=None,
              help="Overrides train.mode: supervised (--data), or learn from unlabelled --frames: "
                   "self-supervised (SMURF), pseudo-label (CLIP-Flow), distill (MDFlow).")
@click.option("--frames", "frame_specs", multiple=True, metavar="SPEC",
              help="Unlabelled target data for the label-free modes, repeatable, e.g. frames:my_video/ "
                   "(labels of a labelled spec are ignored).")
@click.option("--val", "val_specs", multiple=True, metavar="SPEC",
              help="Labelled data to measure the network on every train.val_every steps and after the last "
                   "(train.val_iters GRU iterations, the `dflowgen eval` protocol), repeatable; logged to "
                   "log.jsonl and the TensorBoard event file.")
@click.option("--teacher", default=None, metavar="CKPT",
              help="Teacher of --mode pseudo-label and distill (file or weights-store name; default: --init).")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=None, help="Overrides train.model.")
@click.option("--recipe", default=None, metavar="FILE|NAME",
              help="Recipe file or bundled name, e.g. train-chairs (default: built-in defaults; on --resume: "
                   "the checkpoint's recipe).")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from these weights: an official release or a dflowgen checkpoint, as a file or a "
                   "weights-store name.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help=f"Folder for checkpoints ({LAST_NAME}, step_NNNNNNN.pth) and {LOG_NAME}.")
@click.option("--resume", is_flag=True,
              help=f"Continue the run in OUT from {LAST_NAME}; with --steps N, also extend a finished run to N "
                   "steps (the learning-rate cycle is rebuilt for N).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Overrides train.num_steps.")
@click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Overrides train.batch_size (the global batch under torchrun).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def train_command(data_specs: tuple[str, ...], mode: str | None, frame_specs: tuple[str, ...],
                  val_specs: tuple[str, ...], teacher: str | None,
                  model: str | None, recipe: str | None, init: Path | None, out: Path, resume: bool,
                  steps: int | None, batch_size: int | None, device: str | None, quiet: bool) -> None:
    """Train RAFT with a recipe's [train] section; checkpoints and a JSONL log go to OUT.

    \b
    supervised:       dflowgen train --data sintel:/data/Sintel:final --init raft-small.pth --out runs/ft
    self-supervised:  dflowgen train --mode self-supervised --frames frames:video/ --init raft-small.pth --out runs/ss
    pseudo-label:     dflowgen train --mode pseudo-label --frames frames:video/ --init raft-small.pth --out runs/pl
    distill:          dflowgen train --mode distill --frames frames:video/ --init raft-small.pth --out runs/md

    Multi-GPU supervised training (or multi-process CPU): torchrun --nproc_per_node N -m dflowgen train ...
    """
    if resume and recipe is None and (out / LAST_NAME).is_file():
        resolved = parse_recipe(load_checkpoint(out / LAST_NAME)["recipe"], source=str(out / LAST_NAME))
    else:
        resolved = load_recipe(recipe)
    overrides = {"train.mode": mode, "train.model": model, "train.num_steps": steps, "train.batch_size": batch_size}
    resolved = with_overrides(resolved, {key: value for key, value in overrides.items() if value is not None})
    validation = Validation(open_sources(val_specs), resolved.train.val_iters) if val_specs else None
    result = train(resolved.train, open_sources(data_specs), out, frames=open_sources(frame_specs), init=init,
                   teacher=teacher, resume=resume, device=device, quiet=quiet, recipe_text=recipe_to_toml(resolved),
                   validation=validation)
    if not quiet and result.is_main:
        click.echo(summary_line(out, result))
