"""`dflowgen weights`: the local store of RAFT checkpoints."""

from __future__ import annotations

import click

from dflowgen import weights as store_lib
from dflowgen.cli import cli
from dflowgen.models.registry import MODEL_NAMES, export_network, register_weights


@cli.group()
def weights() -> None:
    """Manage the local store of RAFT checkpoints (official releases and your own).

    The store lives in $DFLOWGEN_WEIGHTS_DIR, else ~/.cache/dflowgen/weights.
    """


@weights.command("list")
def list_command() -> None:
    """List official releases, packaged demo proxies and registered checkpoints, and where the store is."""
    stored = {entry.name: entry for entry in store_lib.list_weights()}
    click.echo(f"store: {store_lib.weights_dir()}")
    click.echo(f"{'name':<20} {'model':<11} {'status':<10} sha256")
    for name, release in store_lib.OFFICIAL_RELEASES.items():
        status = "present" if name in stored else "absent"
        click.echo(f"{name:<20} {release.model:<11} {status:<10} {release.sha256[:16]}…")
    for name, packaged in store_lib.PACKAGED.items():
        if name not in stored:
            status = "packaged" if (store_lib.PACKAGED_DIR / packaged.member).is_file() else "missing"
            click.echo(f"{name:<20} {packaged.model:<11} {status:<10} {packaged.sha256[:16]}…")
    for name, entry in stored.items():
        if name not in store_lib.OFFICIAL_RELEASES:
            click.echo(f"{name:<20} {entry.model or '?':<11} {'present':<10} {entry.sha256[:16]}…")


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every official release.")
@click.option("--url", default=store_lib.OFFICIAL_ARCHIVE_URL, show_default=True, help="Address of the release archive.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fetch_command(names: tuple[str, ...], fetch_all: bool, url: str, quiet: bool) -> None:
    """Download official releases (e.g. raft-chairs raft-small) and check their sha256."""
    chosen = list(store_lib.OFFICIAL_RELEASES) if fetch_all else list(names)
    if not chosen:
        raise click.UsageError("name at least one release, or pass --all")
    archive_sha256 = store_lib.OFFICIAL_ARCHIVE_SHA256 if url == store_lib.OFFICIAL_ARCHIVE_URL else None
    for entry in store_lib.fetch_weights(chosen, url=url, archive_sha256=archive_sha256, quiet=quiet):
        click.echo(f"{entry.name}: {entry.path} (sha256 ok)")


@weights.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Choice(MODEL_NAMES), help="Architecture, for names that are not official releases.")
def add_command(name: str, file: str, model: str | None) -> None:
    """Register a local checkpoint FILE under NAME (official names are sha256-checked)."""
    entry = register_weights(name, file, model)
    click.echo(f"{entry.name}: {entry.path} (sha256 {entry.sha256[:16]}…)")


@weights.command("export")
@click.argument("checkpoint")
@click.argument("out", type=click.Path(dir_okay=False))
def export_command(checkpoint: str, out: str) -> None:
    """Write only the network of CHECKPOINT (a training checkpoint, file or store name) to OUT, for sharing."""
    path = export_network(checkpoint, out)
    click.echo(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, sha256 {store_lib.file_sha256(path)}")
