"""Bad command-line inputs across commands: one line, exit 2, and no folder or file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import load_recipe
from dflowgen.train.labelfree.target_proxy import make_proxy
from test_train_modes import write_frames


def assert_one_line_error(args: list[str], fragment: str) -> str:
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("dflowgen: error:"), result.output
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def frames(tmp_path) -> str:
    return f"frames:{write_frames(tmp_path / 'video')}"


def _commands(frames: str, out: Path) -> dict[str, list[str]]:
    """One small invocation of each command that takes --device, writing under ``out``."""
    return {
        "generate": ["generate", "--mode", "random", "--num-samples", "2", "--size", "64x48", "--out", str(out)],
        "train": ["train", "--mode", "self-supervised", "--frames", frames, "--out", str(out)],
        "search": ["search", "--recipe", "search-tiny", "--target", frames, "--out", str(out)],
        "proxy": ["proxy", "--frames", frames, "--init", "demo-base", "--out", str(out / "proxy.pth")],
    }


DEVICES = ["bogus", "npu:0"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("command", ["generate", "train", "search", "proxy"])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_device_is_one_line_and_writes_nothing(tmp_path, frames, command, device):
    out = tmp_path / "out"
    if command == "proxy":
        out.mkdir()  # the proxy's folder must exist; its training run would go beside the file
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error([*_commands(frames, out)[command], "--device", device], "--device")
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case", ["train-init", "train-teacher", "search-assets", "search-storage", "proxy-init",
                                  "proxy-out-folder"])
def test_refused_runs_leave_no_output_folder(tmp_path, frames, case):
    out = tmp_path / "runs" / "out"
    args, fragment = {
        "train-init": (["train", "--mode", "self-supervised", "--frames", frames, "--batch-size", "1", "--init", "absent.pth"],
                       "checkpoint not found"),
        "train-teacher": (["train", "--mode", "pseudo-label", "--frames", frames, "--teacher", "absent"],
                          "checkpoint not found"),
        "search-assets": (["search", "--recipe", "search-tiny", "--target", frames, "--assets", str(tmp_path / "no")],
                          "layer folder not found"),
        "search-storage": (["search", "--recipe", "search-tiny", "--target", frames, "--storage", "bogus://x"],
                           "cannot open search storage"),
        "proxy-init": (["proxy", "--frames", frames, "--init", "absent.pth"], "checkpoint not found"),
        "proxy-out-folder": (["proxy", "--frames", frames, "--init", "demo-base"], "is a directory"),
    }[case]
    if case.startswith("proxy"):
        out.mkdir(parents=True)
        args += ["--out", str(out) if case == "proxy-out-folder" else str(out / "proxy.pth")]
    else:
        args += ["--out", str(out)]
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error([*args, "--device", "cpu", "--quiet"], fragment)
    assert sorted(tmp_path.rglob("*")) == before


def test_proxy_output_path_is_checked_before_training(tmp_path):
    config = load_recipe("train-proxy").train
    with pytest.raises(DflowgenError, match="it is a folder"):
        make_proxy(config, [], "absent.pth", tmp_path)
    assert sorted(tmp_path.iterdir()) == []
