"""What ``dflowgen reproduce`` and ``dflowgen benchmark`` share: their options, and running a staged experiment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dflowgen.errors import DflowgenError
from dflowgen.recipes import Recipe, load_recipe

Command = TypeVar("Command", bound=Callable[..., Any])


def experiment_options(default_recipe: str, what: str) -> Callable[[Command], Command]:
    """``--recipe`` (default ``default_recipe``; ``what`` names the table and the bundled recipes), ``--out``,
    ``--device`` and ``--quiet``."""
    options = [
        click.option("--recipe", default=default_recipe, show_default=True, metavar="FILE|NAME", help=what),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Results folder: table.md, results.json, plots/, and every stage's outputs. Rerunning "
                          "into it skips finished stages."),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)."),
        click.option("--quiet", is_flag=True, help="No progress lines, bars or table."),
    ]

    def decorate(command: Command) -> Command:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def run_experiment(recipe: str, section: str, bundled: str, run: Callable[..., Any], out: Path,
                   device: str | None, quiet: bool) -> None:
    """Run (or resume) ``run`` on the recipe named ``recipe``, which must set its ``[section]`` table (``bundled``
    lists the bundled ones), and print its table and where the results are."""
    resolved = load_recipe(recipe)
    if getattr(resolved, section) == getattr(Recipe(), section):
        raise DflowgenError(f"recipe {recipe!r} has no [{section}] table (bundled: {bundled})")
    summary = run(resolved, out, device=device, quiet=quiet,
                  echo=None if quiet else lambda line: click.echo(line, err=True))
    if not quiet:
        click.echo(summary.table)
        click.echo(f"{out}: {len(summary.stages_run)} stages run, {len(summary.stages_skipped)} skipped "
                   f"({summary.seconds / 60:.1f} min); table {out / 'table.md'}, figures {out / 'results.json'}, "
                   f"plots {out / 'plots'}")
