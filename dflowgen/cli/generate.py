"""``dflowgen generate``: render a training set into shards, optionally optimised against proxies [DFlow]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.cli.options import parse_size
from dflowgen.data.sets import ShardSplit
from dflowgen.generate import GenerateResult, generate_mix, generate_set
from dflowgen.models.registry import MODEL_NAMES
from dflowgen.recipes import load_recipe, with_overrides


def _overrides(mode: str | None, seed: int | None, size: str | None, batch_size: int | None, shard_size: int | None,
               proxies: dict[str, str | None]) -> dict[str, Any]:
    """Recipe keys the command line sets."""
    overrides: dict[str, Any] = {}
    if mode is not None:
        overrides["generate.mode"] = mode
    if seed is not None:
        overrides["generate.seed"] = seed
    if size is not None:
        overrides["render.width"], overrides["render.height"] = parse_size(size)
    if batch_size is not None:
        overrides["generate.batch_size"] = batch_size
    if shard_size is not None:
        overrides["generate.shard_size"] = shard_size
    overrides.update({f"optimize.{key}": value for key, value in proxies.items() if value is not None})
    return overrides


def _summary(result: GenerateResult) -> str:
    """The closing line, in samples: the set, what this run rendered, what it kept from an earlier run."""
    rate = result.samples_rendered / result.seconds if result.seconds > 0 else 0.0
    state = "complete" if result.complete else "incomplete (other shards still to be written)"
    dropped = f", {result.samples_dropped} dropped" if result.samples_dropped else ""
    replaced = f" ({result.shards_replaced} damaged shards written again)" if result.shards_replaced else ""
    return (f"{result.out}: set {state} with {result.samples_in_set} samples; this run rendered "
            f"{result.samples_rendered} samples ({rate:.2f} samples/s{dropped}) and kept {result.samples_kept} "
            f"samples from an earlier run{replaced}")


@cli.command()
@click.option("--target", default=None, metavar="NAME|FILE",
              help="Optimise the set for a target domain [DFlow]: a preset (sintel, kitti, demo) or a recipe file "
                   "whose [optimize] section names the proxies. Same as --recipe NAME --mode dflow.")
@click.option("--mode", type=click.Choice(["random", "dflow"]), default=None,
              help="random: render θ as drawn from the recipe's ranges; dflow: optimise every sample against the base "
                   "and target proxies first (default: the recipe's generate.mode).")
@click.option("--num-samples", "num_samples", type=int, required=True,
              help="Samples planned for the set (dflow mode writes those that meet optimize.keep_threshold).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder for shards and manifest.")
@click.option("--recipe", "recipes", multiple=True, metavar="FILE|NAME",
              help="Recipe file or bundled name (default: built-in defaults). Repeat it to mix sets from several "
                   "recipes: the samples are split evenly, each part in its own sub-folder of OUT.")
@click.option("--base-ckpt", "base_weights", default=None, metavar="FILE|NAME",
              help="Overrides optimize.base_weights (a file or a name in `dflowgen weights list`).")
@click.option("--target-ckpt", "target_weights", default=None, metavar="FILE|NAME",
              help="Overrides optimize.target_weights.")
@click.option("--base-model", "base_model", type=click.Choice(MODEL_NAMES), default=None,
              help="Overrides optimize.base_model.")
@click.option("--target-model", "target_model", type=click.Choice(MODEL_NAMES), default=None,
              help="Overrides optimize.target_model.")
@click.option("--seed", type=int, default=None, help="Overrides generate.seed.")
@click.option("--size", default=None, metavar="WxH", help="Overrides render.width and render.height, e.g. 320x240.")
@click.option("--device", default=None, help="Torch device (default: cuda if available, else cpu).")
@click.option("--batch-size", "batch_size", type=int, default=None,
              help="Overrides generate.batch_size (samples rendered and optimised together).")
@click.option("--shard-size", "shard_size", type=int, default=None, help="Overrides generate.shard_size.")
@click.option("--shard-index", "shard_index", type=int, default=None,
              help="This process writes shards i, i+n, ... (default: $RANK, else 0).")
@click.option("--num-shards", "num_shards", type=int, default=None,
              help="Number of processes splitting the set (default: $WORLD_SIZE, else 1).")
@click.option("--assets", type=click.Path(path_type=Path), default=None,
              help="Folder of layer images and masks (default: the bundled bank).")
@click.option("--preview", is_flag=True,
              help="Write PNG previews of the first generate.preview_count samples to OUT/previews/.")
@click.option("--overwrite", is_flag=True,
              help="Replace a set made with different settings in OUT (a matching set is resumed).")
@click.option("--verify-existing", "verify_existing", is_flag=True,
              help="Hash every shard already in OUT before keeping it (always done for sets under 1 GiB; larger "
                   "sets check each shard's size and header). Damaged shards are written again.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def generate(target: str | None, mode: str | None, num_samples: int, out: Path, recipes: tuple[str, ...],
             base_weights: str | None, target_weights: str | None, base_model: str | None, target_model: str | None,
             seed: int | None, size: str | None, device: str | None, batch_size: int | None, shard_size: int | None,
             shard_index: int | None, num_shards: int | None, assets: Path | None, preview: bool, overwrite: bool,
             verify_existing: bool, quiet: bool) -> None:
    """Render a set of NUM_SAMPLES image pairs with ground-truth flow into HDF5 shards in OUT.

    \b
    Examples:
      dflowgen generate --target demo --num-samples 16 --out demo-out --preview
      dflowgen generate --target sintel --num-samples 2000 --out sets/sintel   (GPU; needs raft-chairs, raft-sintel)
      dflowgen generate --mode random --recipe demo --num-samples 1000 --out sets/random

    An interrupted run resumes when the same command is run again; complete shards are
    kept and the result is identical to an uninterrupted run.
    """
    if target is not None:
        if recipes:
            raise DflowgenError("--target names the recipe of an optimised set; do not give --recipe with it")
        if mode == "random":
            raise DflowgenError("--target optimises the set (dflow mode); use --recipe with --mode random")
        recipes, mode = (target,), "dflow"
    proxies = {"base_weights": base_weights, "target_weights": target_weights,
               "base_model": base_model, "target_model": target_model}
    overrides = _overrides(mode, seed, size, batch_size, shard_size, proxies)
    resolved = [with_overrides(load_recipe(name), overrides) for name in recipes or (None,)]
    options = {"device": device, "split": ShardSplit.resolve(shard_index, num_shards), "overwrite": overwrite,
               "verify_existing": verify_existing, "preview": preview, "assets": assets, "quiet": quiet}
    if len(resolved) == 1:
        results = [generate_set(resolved[0], num_samples, out, **options)]
    else:
        results = generate_mix(resolved, num_samples, out, **options)
    if not quiet:
        for result in results:
            click.echo(_summary(result))
