import warnings

import click
from click.testing import CliRunner

from dflowgen import __version__
from dflowgen.cli import cli
from dflowgen.errors import DflowgenError


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_every_command_has_help():
    runner = CliRunner()
    for name in cli.commands:
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
