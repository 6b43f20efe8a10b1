"""`dflowgen reproduce`: a micro reproduction end to end, its resume, and its one-line errors.

The Sintel copy is a tiny one the test writes (three scenes of 128×96 frames, used at half
size); the proxies are the packaged RAFT-small pair, so nothing from ../shared is needed
except by the test of the bundled recipes' split.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_generate_dflow import TINY_RENDER

import dflowgen.reproduce.pipeline as pipeline
import dflowgen.reproduce.report as pipeline_report
import dflowgen.reproduce.stages as stages
from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import write_flo
from dflowgen.recipes import load_recipe, parse_recipe, with_overrides
from dflowgen.data.scaled import ScaledPairs
from dflowgen.reproduce.data import SintelSplit, data_root
from dflowgen.reproduce.pipeline import run_reproduction

SCENES = {"alpha": ("clean", "final"), "beta": ("final",), "gamma": ("final",)}


def write_tiny_sintel(root: Path) -> None:
    """A Sintel-layout folder: per scene, frames 1-2 of each pass and the flow 1→2 (a constant shift)."""
    rng = np.random.default_rng(0)
    for number, (scene, passes) in enumerate(SCENES.items()):
        texture = rng.integers(0, 256, size=(96, 140, 3), dtype=np.uint8)
        shift = number + 2
        frames = [texture[:, shift:shift + 128], texture[:, :128]]  # content moves right by `shift` px
        for render_pass in passes:
            folder = root / "training" / render_pass / scene
            folder.mkdir(parents=True)
            for index, frame in enumerate(frames, start=1):
                Image.fromarray(np.ascontiguousarray(frame)).save(folder / f"frame_{index:04d}.png")
        flow = np.zeros((96, 128, 2), dtype=np.float32)
        flow[..., 0] = shift
        (root / "training" / "flow" / scene).mkdir(parents=True)
        write_flo(root / "training" / "flow" / scene / "frame_0001.flo", flow)


MICRO = 'name = "reproduce-micro"\n' + TINY_RENDER + textwrap.dedent(
    """
    [generate]
    seed = 3
    batch_size = 2
    shard_size = 2
    [optimize]
    base_model = "raft-small"
    base_weights = "demo-base"
    target_model = "raft-small"
    proxy_iters = 2
    updates = 2
    decay_updates = 2
    copies = 1
    keep_threshold = 1e9
    [train]
    model = "raft-small"
    num_steps = 2
    batch_size = 2
    crop_size = [48, 64]
    iters = 2
    freeze_bn = true
    log_every = 1
    checkpoint_every = 1
    num_workers = 0
    [train.augment]
    min_scale = 0.0
    max_scale = 0.2
    [reproduce]
    data_root = "DATA_ROOT"
    sintel = "sintel"
    sintel_scale = 0.5
    proxy_scenes = ["alpha", "beta"]
    eval_scenes = ["gamma"]
    eval_iters = 2
    num_samples = 4
    sets = ["random", "dflow"]
    init = "demo-base"
    base_samples = 4
    base_seed = 100
    seeds = [0, 1]
    [reproduce.base]
    model = "raft-small"
    num_steps = 2
    batch_size = 2
    crop_size = [48, 64]
    iters = 2
    log_every = 1
    checkpoint_every = 2
    num_workers = 0
    [reproduce.proxy]
    model = "raft-small"
    num_steps = 2
    batch_size = 2
    crop_size = [40, 56]
    lr = 5e-5
    iters = 2
    freeze_bn = true
    log_every = 1
    checkpoint_every = 2
    num_workers = 0
    [reproduce.proxy.augment]
    spatial_prob = 0.0
    do_flip = false
    photometric = false
    eraser = false
    """
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_sintel(root / "sintel")
    return root


@pytest.fixture(scope="module")
def micro(data):
    return parse_recipe(MICRO.replace("DATA_ROOT", str(data)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, micro):
    out = tmp_path_factory.mktemp("results") / "micro"
    lines: list[str] = []
    summary = run_reproduction(micro, out, device="cpu", quiet=True, echo=lines.append)
    return out, summary, lines


def test_micro_reproduction_writes_table_results_and_plots(finished):
    out, summary, lines = finished
    # base set and base, 1 proxy, 2 sets, 4 runs, 7 evaluations (initialisation, base, proxy, 4 runs)
    assert len(lines) == 16 and lines[0].startswith("[1/16] base set: render 4 samples")
    assert lines[1].startswith("[2/16] base: train raft-small from demo-base.pth on the 4 base samples")
    assert not summary.stages_skipped and len(summary.stages_run) == 16
    table = (out / "table.md").read_text()
    assert table == summary.table
    header = next(line for line in table.splitlines() if line.startswith("| data"))
    assert header == "| data | samples | steps × batch | seeds | held-out AEPE | proxy scenes AEPE |"
    rows = table.split("\n| data")[1].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| initialisation (demo-base.pth, not trained)", "| base (trained on the base dataset; every row starts here)",
        "| target proxy (the base fine-tuned on the proxy scenes)", "| random", "| dflow"]
    assert rows[1].split(" | ")[1:3] == ["4", "2 × 2"]
    assert rows[3].split(" | ")[1:4] == ["4", "2 × 2", "2"] and "±" in rows[3]
    assert "## Checks" in table and "target proxy on the held-out scenes" in table
    assert "dflow − random, held-out pair by pair" in table and "| final/gamma/frame_0001 |" in table
    assert "target proxy on the proxy scenes:" in table

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(summary.results))
    by_name = {row["data"]: row for row in results["rows"]}
    assert list(by_name) == ["initialisation", "base", "target proxy", "random", "dflow"]
    checks = results["checks"]
    base_aepe = by_name["base"]["aepe"]["held-out"]["mean"]
    for name in ("random", "dflow"):
        row = checks["rows"][name]
        assert row["start"] == base_aepe and row["beats_start"] == (row["aepe"] < base_aepe)
    assert checks["void"] == (not all(row["beats_start"] for row in checks["rows"].values()))
    assert ("comparison is void" in table) == checks["void"]
    for name in ("random", "dflow"):
        held_out = by_name[name]["aepe"]["held-out"]
        assert len(held_out["per_seed"]) == 2 and held_out["mean"] == pytest.approx(np.mean(held_out["per_seed"]))
        assert held_out["std"] == pytest.approx(np.std(held_out["per_seed"], ddof=1))
        assert by_name[name]["evaluations"]["0"]["held-out"]["aggregate"]["pairs"] == 1
        assert by_name[name]["evaluations"]["0"]["proxy scenes"]["aggregate"]["pairs"] == 3
    assert results["evaluation"]["frame_size"] == [64, 48]
    assert [c["row"] for c in results["comparisons"]] == ["dflow", "dflow"]
    assert results["sets"]["dflow"]["statistics"]["losses"]["target_loss_final"] > 0
    assert results["sets"]["dflow"]["statistics"]["valid_fraction"] > 0.97
    for plot in ("training-curves.png", "flow-magnitude.png", "aepe.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    for path in ("proxy/target-proxy.pth", "base/base.pth", "runs/dflow/seed-1/last.pth"):
        assert (out / path).is_file(), path
    assert results["base_set"]["samples"] == 4


def test_the_difference_is_shown_per_pair_and_with_each_pair_left_out():
    def pairs(*epes):
        return [{"name": f"p{k}", "epe": epe, "pixels": 100 * (k + 1)} for k, epe in enumerate(epes)]

    assert pipeline_report.pooled_epe(pairs(1.0, 4.0)) == pytest.approx((100 + 800) / 300)
    assert pipeline_report.pooled_epe(pairs(1.0, 4.0), leave_out="p1") == pytest.approx(1.0)
    # One pair carries the whole gain: leaving it out flips the sign.
    row = {"evaluations": {"0": {"held-out": {"pairs": pairs(1.0, 2.1, 3.1)}},
                           "1": {"held-out": {"pairs": pairs(1.0, 2.1, 3.1)}}}}
    other = {"evaluations": {"0": {"held-out": {"pairs": pairs(3.0, 2.0, 3.0)}},
                             "1": {"held-out": {"pairs": pairs(3.0, 2.0, 3.0)}}}}
    detail = pipeline_report.per_pair(row, other)
    assert detail["pairs"]["p0"]["difference"] == pytest.approx(-2.0)
    assert detail["rests_on_one_pair"] and detail["sign_flips_without"] == ["p0"]
    steady = {"evaluations": {"0": {"held-out": {"pairs": pairs(2.9, 1.9, 2.9)}}}}
    assert not pipeline_report.per_pair(steady, other)["rests_on_one_pair"]


def test_the_trained_networks_differ_by_seed_and_set(finished):
    _, summary, _ = finished
    figures = {row["data"]: row["aepe"]["held-out"]["per_seed"] for row in summary.results["rows"]}
    assert len({*figures["random"], *figures["dflow"]}) == 4
    assert figures["initialisation"] != figures["target proxy"]


def test_a_second_run_skips_every_stage(finished, micro, monkeypatch):
    out, first, _ = finished

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    for name in ("generate_set", "evaluate", "export_network", "load_proxies"):
        monkeypatch.setattr(pipeline, name, must_not_run)
    monkeypatch.setattr(stages, "train", must_not_run)
    lines: list[str] = []
    again = run_reproduction(micro, out, device="cpu", quiet=True, echo=lines.append)
    assert again.stages_run == [] and len(again.stages_skipped) == 16
    assert all(line.endswith("done earlier, skipped") for line in lines)
    assert again.table == first.table


def test_an_interrupted_stage_resumes_where_it_stopped(finished, micro, monkeypatch):
    """A set with a shard missing is completed by generate's resume; a run stopped at step 1 continues from it."""
    out, first, _ = finished
    shard = out / "sets" / "random" / "shard-00001.h5"
    shard_bytes = shard.read_bytes()
    run_dir = out / "runs" / "random" / "seed-0"
    final_model = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    for marker in ("set-random", "train-random-seed0"):
        (out / "stages" / f"{marker}.json").unlink()
    shard.unlink()
    (run_dir / "step_0000002.pth").unlink()
    shutil.copyfile(run_dir / "step_0000001.pth", run_dir / "last.pth")
    resumed_from = []
    original_train = stages.train
    monkeypatch.setattr(stages, "train", lambda *args, **kwargs: resumed_from.append(kwargs["resume"])
                        or original_train(*args, **kwargs))
    monkeypatch.setattr(pipeline, "evaluate", lambda *args, **kwargs: pytest.fail("evaluated again"))
    again = run_reproduction(micro, out, device="cpu", quiet=True)
    assert again.stages_run == ["set-random", "train-random-seed0"] and resumed_from == [True]
    assert shard.read_bytes() == shard_bytes
    resumed_model = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(resumed_model[key], final_model[key]) for key in final_model)
    assert again.table == first.table


def test_changed_settings_are_refused_not_mixed(finished, micro, monkeypatch):
    out, _, _ = finished
    monkeypatch.setattr(stages, "train", lambda *args, **kwargs: pytest.fail("trained with stale settings"))
    with pytest.raises(DflowgenError, match=r"stage 'train-random-seed0' done with other settings "
                                            r"\(train\.num_steps: 2 -> 3\); choose another out$"):
        run_reproduction(with_overrides(micro, {"train.num_steps": 3}), out, device="cpu", quiet=True)


def test_scaled_pairs_resize_images_flow_and_valid(data):
    split = SintelSplit.from_config(parse_recipe(MICRO.replace("DATA_ROOT", str(data))).reproduce, data)
    pair = split.held_out[0]
    assert pair.img1.shape == (48, 64, 3) and pair.img1.dtype == np.uint8
    np.testing.assert_allclose(pair.flow[..., 0], 2 * 2 * 0.5, atol=1e-5)  # gamma shifts 4 px at full size
    full = ScaledPairs(split.held_out.dataset, 1.0)[0]
    assert full.img1.shape == (96, 128, 3)


@pytest.mark.parametrize(("override", "message"), [
    ({"reproduce.eval_scenes": ["delta"]}, r"^Sintel scene\(s\) delta not under .*available: alpha, beta, gamma$"),
    ({"reproduce.data_root": "/nonexistent/data"}, r"^data root /nonexistent/data not found \(reproduce\.data_root\)"),
    ({"reproduce.sintel": "missing"}, r"^Sintel folder .*missing not found"),
    ({"reproduce.init": "no-such-weights"}, r"^checkpoint not found: 'no-such-weights'.*nor is it a file under"),
    ({"reproduce.init": "", "reproduce.base_samples": 0}, r"^reproduce\.init names no network and .* is 0"),
    ({"reproduce.base_seed": 3}, r"^reproduce\.base_seed equals generate\.seed \(3\)"),
    ({"reproduce.base.model": "raft"}, r"^the base, its fine-tuned target proxy and the proxies must be one architecture"),
])
def test_bad_inputs_are_one_line_errors(micro, tmp_path, override, message):
    with pytest.raises(DflowgenError, match=message) as caught:
        run_reproduction(with_overrides(micro, override), tmp_path / "out", quiet=True)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_overlapping_scenes_are_refused_by_the_recipe(micro):
    with pytest.raises(DflowgenError, match=r"reproduce.*scene\(s\) alpha are in both proxy_scenes and eval_scenes"):
        with_overrides(micro, {"reproduce.eval_scenes": ["alpha", "gamma"]})


def test_data_root_defaults_to_the_environment(micro, data, monkeypatch, tmp_path):
    config = with_overrides(micro, {"reproduce.data_root": ""}).reproduce
    monkeypatch.setenv("DFLOWGEN_SHARED_DATA", str(data))
    assert data_root(config) == data
    monkeypatch.setenv("DFLOWGEN_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(DflowgenError, match=r"absent not found \(\$DFLOWGEN_SHARED_DATA\)"):
        data_root(config)


def test_cli_errors_are_one_line(tmp_path, data):
    recipe = tmp_path / "micro.toml"
    recipe.write_text(MICRO.replace("DATA_ROOT", str(tmp_path / "absent")))
    result = CliRunner().invoke(cli, ["reproduce", "--recipe", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("dflowgen: error: data root ")
    result = CliRunner().invoke(cli, ["reproduce", "--recipe", str(recipe), "--out", str(tmp_path / "o"),
                                      "--device", "gpu"])
    assert result.exit_code == 2 and result.output.startswith("dflowgen: error: --device gpu")
    result = CliRunner().invoke(cli, ["reproduce", "--recipe", "demo", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output == ("dflowgen: error: recipe 'demo' has no [reproduce] table "
                                                       "(bundled: reproduce-mini, reproduce-paper)\n")


@pytest.mark.parametrize("name", ["reproduce-mini", "reproduce-paper"])
def test_bundled_recipes_name_an_existing_split(name, shared_data, monkeypatch):
    monkeypatch.setenv("DFLOWGEN_SHARED_DATA", str(shared_data))
    config = load_recipe(name).reproduce
    split = SintelSplit.from_config(config, data_root(config))
    assert len(split.held_out) >= 2 and len(split.proxy) >= 4
    assert len(config.seeds) >= 2


def test_bookkeeping_changes_keep_finished_stages(finished, micro, monkeypatch):
    """Logging cadence, checkpoints and workers do not decide a network, so changing them redoes nothing."""
    out, first, _ = finished
    monkeypatch.setattr(stages, "train", lambda *args, **kwargs: pytest.fail("a finished stage trained again"))
    changed = with_overrides(micro, {"train.log_every": 7, "train.checkpoint_every": 9, "train.val_every": 11,
                                     "reproduce.base.log_every": 3})
    again = run_reproduction(changed, out, device="cpu", quiet=True)
    assert again.stages_run == [] and again.table == first.table
