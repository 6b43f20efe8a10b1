"""``dflowgen verify``: check a set's shards against its manifest."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.shards import read_manifest, verify_shards


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(folder: Path, quiet: bool) -> None:
    """Recompute the checksum of every shard in FOLDER; exit 1 if any is missing, truncated or corrupt."""
    problems = verify_shards(folder, quiet=quiet)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{folder}: {len(problems)} problem(s)", err=True)
        click.get_current_context().exit(1)
    manifest = read_manifest(folder)
    click.echo(f"{folder}: ok, {len(manifest.shards)} shards, {manifest.samples_written} samples, all checksums match")
