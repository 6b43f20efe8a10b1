"""``dflowgen proxy``: a label-free target proxy that DFlow generation accepts."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from test_train_modes import HEIGHT, WIDTH, random_weights, write_frames

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.optimize.proxies import load_proxy
from dflowgen.recipes import load_recipe
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.labelfree.target_proxy import default_run_dir, make_proxy


def _recipe(path):
    path.write_text(f"""[train]
mode = "pseudo-label"
model = "raft-small"
num_steps = 2
batch_size = 2
crop_size = [{HEIGHT}, {WIDTH}]
iters = 2
checkpoint_every = 1
log_every = 1
num_workers = 0

[train.pseudo]
label_iters = 2
fb_alpha2 = 1e6
""")
    return path


def test_proxy_command_writes_a_proxy_that_generation_loads_and_rerunning_only_exports(tmp_path):
    frames = write_frames(tmp_path / "video")
    init = random_weights(tmp_path / "base.pth")
    out = tmp_path / "target.pth"
    args = ["proxy", "--frames", f"frames:{frames}", "--init", str(init), "--out", str(out), "--recipe",
            str(_recipe(tmp_path / "tiny.toml")), "--mode", "self-supervised", "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "--target-ckpt" in result.output and "self-supervised" in result.output

    content = torch.load(out, weights_only=True)
    assert set(content) == {"model", "model_name"} and content["model_name"] == "raft-small"
    run = load_checkpoint(default_run_dir(out) / LAST_NAME)
    assert run["mode"] == "self-supervised" and run["step"] == 2
    assert all(torch.equal(content["model"][key], value) for key, value in run["model"].items())
    proxy = load_proxy(out, "raft-small", "cpu")
    assert not proxy.training and not any(p.requires_grad for p in proxy.parameters())

    out.unlink()
    modified = default_run_dir(out) / LAST_NAME
    stamp = modified.stat().st_mtime_ns
    result = runner.invoke(cli, args)  # the run is finished: export again, train nothing
    assert result.exit_code == 0, result.output
    assert out.is_file() and modified.stat().st_mtime_ns == stamp
    result = runner.invoke(cli, [*args[:-4], "--mode", "distill", "--device", "cpu"])
    assert result.exit_code == 2 and "mode: 'self-supervised' -> 'distill'" in result.output


def test_proxy_errors(tmp_path):
    frames = write_frames(tmp_path / "video")
    config = load_recipe("train-proxy").train
    with pytest.raises(DflowgenError, match="label-free proxy"):
        make_proxy(load_recipe(None).train, [], "base.pth", tmp_path / "p.pth")
    with pytest.raises(DflowgenError, match="does not exist"):
        make_proxy(config, [], "base.pth", tmp_path / "no" / "p.pth")
    result = CliRunner().invoke(cli, ["proxy", "--frames", f"frames:{frames}", "--init", str(tmp_path / "none.pth"),
                                      "--out", str(tmp_path / "p.pth"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "checkpoint not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
