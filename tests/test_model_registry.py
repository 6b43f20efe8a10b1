"""One registry of networks: checkpoint names from the weights store, and FlowNetS/FlowNetC through train,
eval, infer and as DFlow proxies (tiny: 64×64 crops, 1–2 steps, 64×48 renders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_generate_dflow import TINY, column
from test_infer import _write_frames, translating_frames
from test_train import write_train_recipe, write_chairs

from dflowgen.cli import cli
from dflowgen.flow.io import read_flo
from dflowgen.generate import generate_set
from dflowgen.models.flownet import FlowNet, build_flownet
from dflowgen.models.raft import RAFT, load_raft
from dflowgen.models.registry import MODEL_NAMES, build_model, load_model
from dflowgen.optimize.proxies import load_proxies
from dflowgen.recipes import load_recipe, with_overrides
from dflowgen.train.checkpoint import LAST_NAME


def test_every_name_builds_its_network():
    assert MODEL_NAMES == ("raft", "raft-small", "flownets", "flownetc")
    assert isinstance(build_model("raft-small"), RAFT) and build_model("flownetc").model_name == "flownetc"


def test_packaged_and_stored_checkpoint_names_load_everywhere(shared_data, tmp_path):
    assert load_raft("demo-base").model_name == "raft-small"
    runner = CliRunner()
    result = runner.invoke(cli, ["weights", "add", "raft-small", str(shared_data / "weights" / "raft-small.pth")])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("raft-small") and "present" in line
               for line in runner.invoke(cli, ["weights", "list"]).output.splitlines())
    assert load_raft("raft-small").model_name == "raft-small"
    assert load_model("raft-small").model_name == "raft-small"
    chairs = write_chairs(tmp_path / "chairs", count=1)
    result = runner.invoke(cli, ["eval", "--ckpt", "raft-small", "--data", f"chairs:{chairs}:all", "--iters", "2",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["flownets", "flownetc"])
def test_flownets_train_evaluate_and_infer_from_the_cli(tmp_path, name):
    chairs = write_chairs(tmp_path / "chairs", count=2)
    recipe = write_train_recipe(tmp_path / "tiny.toml", num_steps=1, checkpoint_every=1, lr=1e-4, weight_decay=0.0)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--model", name, "--data", f"chairs:{chairs}:all", "--recipe", str(recipe),
                                 "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "run" / LAST_NAME
    model = load_model(checkpoint)
    assert isinstance(model, FlowNet) and model.model_name == name

    result = runner.invoke(cli, ["eval", "--ckpt", str(checkpoint), "--model", name, "--data", f"chairs:{chairs}:all",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"chairs:{chairs}:all"[:20] in result.output

    first, second = _write_frames(tmp_path / "frames", translating_frames(2))
    result = runner.invoke(cli, ["infer", "--ckpt", str(checkpoint), str(first), str(second),
                                 "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    flow = read_flo(tmp_path / "out" / "flo" / "frame_1.flo")
    assert flow.shape == (96, 128, 2) and np.isfinite(flow).all()


def test_flownet_training_refuses_label_free_modes(tmp_path):
    frames = _write_frames(tmp_path / "frames", translating_frames(2))[0].parent
    recipe = write_train_recipe(tmp_path / "tiny.toml", model="flownets")
    result = CliRunner().invoke(cli, ["train", "--mode", "self-supervised", "--frames", f"frames:{frames}",
                                      "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2 and "trains RAFT only" in result.output


def test_the_flownet_recipe_has_the_papers_optimiser_settings():
    config = load_recipe("train-flownet-chairs").train
    assert (config.model, config.lr, config.batch_size, config.weight_decay) == ("flownets", 1e-4, 8, 0.0)
    assert config.crop_size == (320, 448)


def test_generate_dflow_runs_with_a_flownets_proxy(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "flownets.pth"
    torch.save({"model": build_flownet("flownets").state_dict(), "model_name": "flownets"}, weights)
    recipe = with_overrides(TINY, {"optimize.base_model": "flownets", "optimize.base_weights": str(weights)})
    proxies = load_proxies(recipe.optimize, "cpu")
    assert isinstance(proxies.base, FlowNet) and not any(p.requires_grad for p in proxies.base.parameters())
    result = generate_set(recipe, 2, tmp_path / "out", device="cpu", proxies=proxies, quiet=True)
    assert result.complete and result.samples_rendered == 2
    initial, final = column(tmp_path / "out", "base_loss_initial"), column(tmp_path / "out", "base_loss_final")
    assert len(final) == 2 and np.isfinite(final).all() and (final > 0).all() and not np.array_equal(initial, final)
