"""The ``dflowgen`` command line: a thin click group over the library.

Each command lives in its own module under ``dflowgen/cli/`` and is registered below.
Errors a user can cause (:class:`DflowgenError`) become one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import click

from dflowgen import __version__
from dflowgen.errors import DflowgenError


class _Group(click.Group):
    """A click group that turns DflowgenError into a one-line message."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 (click's own signature)
        try:
            return super().invoke(ctx)
        except DflowgenError as error:
            click.echo(f"dflowgen: error: {error}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dflowgen")
def cli() -> None:
    """Make synthetic optical-flow training sets tuned to a target domain, and train RAFT on them."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dflowgen")


# Command modules register themselves on `cli` when imported (one line each, below).
