"""``dflowgen proxy``: a DFlow target proxy from unlabelled target frames (no flow labels needed)."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.cli.train import open_sources
from dflowgen.data.spec import SPEC_HELP
from dflowgen.recipes import load_recipe, recipe_to_toml, with_overrides
from dflowgen.train.config import LABEL_FREE_MODES
from dflowgen.train.labelfree.target_proxy import make_proxy

DEFAULT_RECIPE = "train-proxy"


@cli.command("proxy")
@click.option("--frames", "frame_specs", multiple=True, required=True, metavar="SPEC",
              help=f"The target's unlabelled frames, repeatable, e.g. frames:my_video/. {SPEC_HELP}.")
@click.option("--init", required=True, metavar="CKPT",
              help="The base network the proxy is fine-tuned from (file or weights-store name), e.g. raft-small.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The proxy file to write ({'model', 'model_name'}, like `dflowgen weights export`).")
@click.option("--mode", type=click.Choice(LABEL_FREE_MODES), default=None,
              help=f"Overrides train.mode (the {DEFAULT_RECIPE} recipe: pseudo-label).")
@click.option("--recipe", default=DEFAULT_RECIPE, show_default=True, metavar="FILE|NAME",
              help="Recipe whose [train] section trains the proxy.")
@click.option("--teacher", default=None, metavar="CKPT",
              help="Teacher of pseudo-label and distill (default: --init).")
@click.option("--data", "data_specs", multiple=True, metavar="SPEC",
              help="Labelled data mixed in by --mode pseudo-label (optional, repeatable).")
@click.option("--run-dir", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the training run (default: OUT's stem + '-run' beside OUT); rerunning resumes it.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Overrides train.num_steps.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def proxy_command(frame_specs: tuple[str, ...], init: str, out: Path, mode: str | None, recipe: str,
                  teacher: str | None, data_specs: tuple[str, ...], run_dir: Path | None, steps: int | None,
                  device: str | None, quiet: bool) -> None:
    """Fine-tune the base network INIT on the target's unlabelled frames and write it as a target proxy.

    DFlow needs a target proxy: the base network fine-tuned on the target. This makes one from
    video alone with a label-free training mode, then:

    \b
        dflowgen generate --recipe sintel --target-ckpt OUT --target-model raft-small ...

    Interrupted? Run the same command again: the run in --run-dir is resumed.
    """
    overrides = {"train.mode": mode, "train.num_steps": steps}
    resolved = with_overrides(load_recipe(recipe),
                              {key: value for key, value in overrides.items() if value is not None})
    result = make_proxy(resolved.train, open_sources(frame_specs), init, out, sources=open_sources(data_specs),
                        teacher=teacher, run_dir=run_dir,
                        device=device, quiet=quiet, recipe_text=recipe_to_toml(resolved))
    if not quiet:
        click.echo(f"{result.path}: {result.model_name} target proxy ({resolved.train.mode}, {result.step} steps; "
                   f"run in {result.run_dir}); use it with `dflowgen generate --target-ckpt {result.path} "
                   f"--target-model {result.model_name}`")
