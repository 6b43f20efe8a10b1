"""The ``dflowgen`` command line: a thin click group over the library.

Each command lives in its own module under ``dflowgen/cli/`` and is registered below.
Errors a user can cause (:class:`DflowgenError`) become one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
import warnings

import click

from dflowgen import __version__
from dflowgen.errors import DflowgenError


class _Group(click.Group):
    """A click group whose every user error is one line on stderr and a non-zero exit.

    DflowgenError (exit 2) comes from the library; click's own usage errors (exit 2)
    are shortened to one line with a pointer to the command's help. Warnings are shown
    after the command, and not at all when it ends in a one-line error.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001,ANN201
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            click.echo(f"dflowgen: error: {error.format_message()}{where}", err=True)
            code = error.exit_code
        except click.ClickException as error:
            click.echo(f"dflowgen: error: {error.format_message()}", err=True)
            code = error.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("dflowgen: interrupted", err=True)
            code = 130
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context):  # noqa: ANN201 (click's own signature)
        # Warnings (torch's UserWarnings, say) are held while the command runs and shown when it ends, so a
        # refused input prints its one line alone: the warnings raised on the way to the refusal are dropped.
        failure: DflowgenError | None = None
        held: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as held:
                try:
                    return super().invoke(ctx)
                except DflowgenError as error:
                    failure = error
        finally:
            if failure is None:
                for caught in held:
                    warnings.showwarning(caught.message, caught.category, caught.filename, caught.lineno)
        click.echo(f"dflowgen: error: {failure}", err=True)
        ctx.exit(failure.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dflowgen")
def cli() -> None:
    """Make synthetic optical-flow training sets tuned to a target domain, and train RAFT on them."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dflowgen")


# Command modules register themselves on `cli` when imported (one line each, below).
from dflowgen.cli import eval as _eval, train as _train  # noqa: E402,F401
from dflowgen.cli import weights as _weights  # noqa: E402,F401
from dflowgen.cli import generate as _generate, inspect as _inspect, verify as _verify  # noqa: E402,F401
from dflowgen.cli import search as _search  # noqa: E402,F401
from dflowgen.cli import proxy as _proxy  # noqa: E402,F401
from dflowgen.cli import reproduce as _reproduce  # noqa: E402,F401
from dflowgen.cli import benchmark as _benchmark  # noqa: E402,F401
from dflowgen.cli import infer as _infer  # noqa: E402,F401
