"""The ``dflowgen`` command line: a thin click group over the library.

Each command lives in its own module under ``dflowgen/cli/``, which registers it on ``cli``
when imported; the group imports a command's module (and with it torch) only when that command
runs or shows its own help, so ``dflowgen --help`` starts in a fraction of a second. Errors a
user can cause (:class:`DflowgenError`) become one line on stderr and a non-zero exit status,
never a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from dflowgen import __version__
from dflowgen.allocator import keep_freed_memory
from dflowgen.errors import DflowgenError, command_line_names


# Command name -> (module that registers it, its one-line summary for `dflowgen --help`).
# The summary is the first sentence of the command's docstring (tests/test_cli.py checks they agree).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "benchmark": ("dflowgen.cli.benchmark", "Can DFlow and the searches find a target domain whose answer we know?"),
    "eval": ("dflowgen.cli.eval", "Evaluate CKPT on each data SPEC: end-point error (mean over pairs, and over "
                                  "pixels), the percentage of pixels within 1/3/5 px, and KITTI's Fl-all."),
    "generate": ("dflowgen.cli.generate", "Render a set of NUM_SAMPLES image pairs with ground-truth flow into HDF5 "
                                          "shards in OUT."),
    "infer": ("dflowgen.cli.infer", "Estimate optical flow on your own frames."),
    "inspect": ("dflowgen.cli.inspect", "Sample count, resolution, flow statistics, effect frequencies and proxy "
                                        "losses of the set in FOLDER."),
    "plot": ("dflowgen.cli.plot", "Draw the training loss, learning rate and validation curves of the run in RUN "
                                  "to a PNG."),
    "proxy": ("dflowgen.cli.proxy", "Fine-tune the base network INIT on the target's unlabelled frames and write it "
                                    "as a target proxy."),
    "reproduce": ("dflowgen.cli.reproduce", "Does DFlow data train better networks? Measure it on held-out Sintel "
                                            "scenes."),
    "search": ("dflowgen.cli.search", "Search λ, the ranges and probabilities scenes are drawn from, for the data "
                                      "that trains best for a target."),
    "train": ("dflowgen.cli.train", "Train RAFT with a recipe's [train] section; checkpoints and a JSONL log go to "
                                    "OUT."),
    "verify": ("dflowgen.cli.verify", "Recompute the checksum of every shard in FOLDER (every part of a mix); exit 1 "
                                      "if any is missing, truncated or corrupt."),
    "weights": ("dflowgen.cli.weights", "Manage the local store of RAFT checkpoints (official releases and your "
                                        "own)."),
}


class _Group(click.Group):
    """A click group whose every user error is one line on stderr and a non-zero exit, and whose commands load lazily.

    DflowgenError (exit 2) comes from the library; click's own usage errors (exit 2)
    are shortened to one line with a pointer to the command's help. Warnings are shown
    after the command, and not at all when it ends in a one-line error. A command's module
    (:data:`LAZY_COMMANDS`) is imported the first time the command is looked up to run.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*LAZY_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            importlib.import_module(LAZY_COMMANDS[cmd_name][0])
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries, without importing the commands' modules."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            # A stand-in command shortens a summary exactly as click shortens a docstring.
            command = self.commands.get(name) or click.Command(name, help=LAZY_COMMANDS[name][1])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
                    with command_line_names():
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
    keep_freed_memory()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dflowgen")
