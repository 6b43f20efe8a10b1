"""``dflowgen train``: supervised RAFT training on a mix of data specs."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.spec import SPEC_HELP, open_spec
from dflowgen.models.raft import MODEL_NAMES
from dflowgen.recipes import load_recipe, parse_recipe, recipe_to_toml, with_overrides
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME, train


@cli.command("train")
@click.option("--data", "data_specs", multiple=True, required=True, metavar="SPEC",
              help=f"Training data, repeatable (a mix). {SPEC_HELP}.")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=None, help="Overrides train.model.")
@click.option("--recipe", default=None, metavar="FILE|NAME",
              help="Recipe file or bundled name, e.g. train-chairs (default: built-in defaults; on --resume: "
                   "the checkpoint's recipe).")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from these weights (official release or dflowgen checkpoint).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help=f"Folder for checkpoints ({LAST_NAME}, step_NNNNNNN.pth) and {LOG_NAME}.")
@click.option("--resume", is_flag=True, help=f"Continue the run in OUT from {LAST_NAME}.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Overrides train.num_steps.")
@click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Overrides train.batch_size (the global batch under torchrun).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def train_command(data_specs: tuple[str, ...], model: str | None, recipe: str | None, init: Path | None, out: Path,
                  resume: bool, steps: int | None, batch_size: int | None, device: str | None, quiet: bool) -> None:
    """Train RAFT on the data SPECs with a recipe's [train] section; checkpoints and a JSONL log go to OUT.

    Multi-GPU (or multi-process CPU): torchrun --nproc_per_node N -m dflowgen train ...
    """
    if resume and recipe is None and (out / LAST_NAME).is_file():
        resolved = parse_recipe(load_checkpoint(out / LAST_NAME)["recipe"], source=str(out / LAST_NAME))
    else:
        resolved = load_recipe(recipe)
    overrides = {"train.model": model, "train.num_steps": steps, "train.batch_size": batch_size}
    resolved = with_overrides(resolved, {key: value for key, value in overrides.items() if value is not None})
    sources = []
    for spec in data_specs:
        opened = open_spec(spec)
        sources.append(DataSource(opened.dataset, opened.weight, opened.sparse, name=spec))
    result = train(resolved.train, sources, out, init=init, resume=resume, device=device, quiet=quiet,
                   recipe_text=recipe_to_toml(resolved))
    if not quiet and result.is_main:
        record = result.last_record or {}
        figures = f", loss {record['loss']:.4f}, EPE {record['epe']:.3f}" if record.get("loss") is not None else ""
        skipped = f", {result.nonfinite_steps} non-finite steps skipped" if result.nonfinite_steps else ""
        click.echo(f"{out}: {result.step} steps{figures}{skipped}; checkpoint {result.checkpoint}")
