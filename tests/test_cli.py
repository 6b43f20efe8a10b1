import subprocess
import sys
import warnings

import click
from click.testing import CliRunner

from dflowgen import __version__
from dflowgen.cli import LAZY_COMMANDS, cli
from dflowgen.errors import DflowgenError


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_every_command_has_help():
    runner = CliRunner()
    names = cli.list_commands(click.Context(cli))
    assert set(LAZY_COMMANDS) <= set(names)
    for name in names:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_usage_errors_are_one_line_with_exit_2():
    runner = CliRunner()
    for args in (["no-such-command"], ["weights", "add"], ["weights", "list", "--bogus"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dflowgen: error:"), (args, result.output)


def test_warnings_do_not_print_before_a_one_line_error_but_do_after_a_success():
    @cli.command("warn-then", hidden=True)
    @click.argument("outcome")
    def warn_then(outcome: str) -> None:
        warnings.warn("torch says: something deprecated", UserWarning)
        if outcome == "fail":
            raise DflowgenError("bad input")
        click.echo("done")

    try:
        runner = CliRunner()
        for outcome, expected in (("fail", []), ("ok", ["torch says: something deprecated"])):
            with warnings.catch_warnings(record=True) as shown:  # what would reach the terminal
                warnings.simplefilter("always")
                result = runner.invoke(cli, ["warn-then", outcome])
            assert [str(caught.message) for caught in shown] == expected
        assert result.exit_code == 0 and "done" in result.output
        result = runner.invoke(cli, ["warn-then", "fail"])
        assert result.exit_code == 2 and result.output.strip().splitlines() == ["dflowgen: error: bad input"]
    finally:
        del cli.commands["warn-then"]


def test_lazy_summaries_are_the_commands_own():
    context = click.Context(cli)
    for name, (_, summary) in LAZY_COMMANDS.items():
        command = cli.get_command(context, name)
        assert command is not None and command.name == name, name
        assert command.get_short_help_str(limit=1000) == summary, name


def test_the_cli_and_its_help_do_not_import_torch():
    """`dflowgen --help` stays fast: torch and the commands' modules load only when a command runs."""
    probe = ("import sys\n"
             "import dflowgen.cli\n"
             "assert 'torch' not in sys.modules, 'import dflowgen.cli imported torch'\n"
             "code = dflowgen.cli.cli(['--help'], prog_name='dflowgen', standalone_mode=False)\n"
             "assert 'torch' not in sys.modules, 'dflowgen --help imported torch'\n"
             "assert not any(name.startswith('dflowgen.cli.') for name in sys.modules), sorted(sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "plot" in result.stdout
