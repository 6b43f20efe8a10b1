"""``dflowgen verify``: check a set's shards against its manifest."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.manifest import read_manifest, set_folders, verify_shards


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(folder: Path, quiet: bool) -> None:
    """Recompute the checksum of every shard in FOLDER (every part of a mix); exit 1 if any is missing, truncated or corrupt."""
    failed = False
    for part in set_folders(folder):
        problems = verify_shards(part, quiet=quiet)
        for problem in problems:
            click.echo(f"{part}/{problem}")
        if problems:
            click.echo(f"{part}: {len(problems)} problem(s)", err=True)
            failed = True
            continue
        manifest = read_manifest(part)
        click.echo(f"{part}: ok, {len(manifest.shards)} shards, {manifest.samples_written} samples, all checksums match")
    if failed:
        click.get_current_context().exit(1)
