"""Messages name a setting the way their reader gives it: a flag on the command line, an argument from Python."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dflowgen.cli import cli
from dflowgen.devices import resolve_device
from dflowgen.errors import DflowgenError, command_line_names, option


def test_option_names_an_argument_from_python_and_a_flag_under_the_cli():
    assert option("overwrite", True) == "overwrite=True"
    assert option("num_samples") == "num_samples"
    assert option("mode", "distill") == "mode='distill'"
    with command_line_names():
        assert option("overwrite", True) == "--overwrite"
        assert option("num_samples") == "--num-samples"
        assert option("mode", "distill") == "--mode distill"
        assert option("num_steps", "N", flag="--steps") == "--steps N"
    assert option("overwrite", True) == "overwrite=True"


def test_library_errors_speak_python_and_the_cli_speaks_flags(tmp_path):
    with pytest.raises(DflowgenError, match=r"^device='tpu' is not a torch device \(use cpu, cuda or cuda:N\)$"):
        resolve_device("tpu")
    frames = tmp_path / "frames"
    frames.mkdir()
    result = CliRunner().invoke(cli, ["eval", "--ckpt", "raft-small", "--data", f"frames:{frames}", "--device", "tpu"])
    assert result.exit_code == 2 and "dflowgen: error: --device tpu is not a torch device" in result.output
