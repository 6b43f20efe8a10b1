"""``dflowgen generate``: render a training set into shards."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.generate import ShardSplit, generate_random, parse_size
from dflowgen.recipes import load_recipe, with_overrides


@cli.command()
@click.option("--mode", type=click.Choice(["random"]), required=True,
              help="random: render samples straight from the recipe's ranges, without optimisation.")
@click.option("--num-samples", "num_samples", type=int, required=True, help="Samples in the set.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder for shards and manifest.")
@click.option("--recipe", default=None, metavar="FILE|NAME",
              help="Recipe file or bundled name (default: built-in defaults).")
@click.option("--seed", type=int, default=None, help="Overrides generate.seed.")
@click.option("--size", default=None, metavar="WxH", help="Overrides render.width and render.height, e.g. 320x240.")
@click.option("--device", default=None, help="Torch device to render on (default: cuda if available, else cpu).")
@click.option("--batch-size", "batch_size", type=int, default=None, help="Overrides generate.batch_size.")
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
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def generate(mode: str, num_samples: int, out: Path, recipe: str | None, seed: int | None, size: str | None,
             device: str | None, batch_size: int | None, shard_size: int | None, shard_index: int | None,
             num_shards: int | None, assets: Path | None, preview: bool, overwrite: bool, quiet: bool) -> None:
    """Render a set of NUM_SAMPLES image pairs with ground-truth flow into HDF5 shards in OUT.

    An interrupted run resumes when the same command is run again; the result is
    byte-identical to an uninterrupted run.
    """
    overrides = {}
    if seed is not None:
        overrides["generate.seed"] = seed
    if size is not None:
        overrides["render.width"], overrides["render.height"] = parse_size(size)
    if batch_size is not None:
        overrides["generate.batch_size"] = batch_size
    if shard_size is not None:
        overrides["generate.shard_size"] = shard_size
    resolved = with_overrides(load_recipe(recipe), overrides)
    split = ShardSplit.resolve(shard_index, num_shards)
    result = generate_random(resolved, num_samples, out, device=device, split=split, overwrite=overwrite,
                             preview=preview, assets=assets, quiet=quiet)
    if not quiet:
        rate = result.samples_rendered / result.seconds if result.seconds > 0 else 0.0
        state = "complete" if result.complete else "incomplete (other shards still to be written)"
        click.echo(f"{out}: wrote {result.shards_written} shards ({result.samples_rendered} samples, {rate:.1f} samples/s), "
                   f"kept {result.shards_skipped}; set {state}")
