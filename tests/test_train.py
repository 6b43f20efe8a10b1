"""The training loop: determinism under resume and workers, non-finite steps, checkpoints, CLI errors.

Tiny on purpose: RAFT-small, 64×64 crops, 2 GRU iterations, a handful of steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dflowgen.cli import cli
from dflowgen.data.sample import FlowPair
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import write_flo
from dflowgen.losses import sequence_loss
from dflowgen.models import registry as registry_module
from dflowgen.models.raft import build_raft, load_raft
from dflowgen.recipes import load_recipe
from dflowgen.train import checkpoint as checkpoint_module
from dflowgen.train.checkpoint import (
    LAST_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    step_name,
)
from dflowgen.train.config import TrainConfig
from dflowgen.train.data import DataSource, StepBatches, make_augmentor
from dflowgen.train.log import EVENTS_NAME
from dflowgen.train.hooks import TrainHook
from dflowgen.train.trainer import LOG_NAME, train

TINY = TrainConfig(model="raft-small", num_steps=4, batch_size=2, crop_size=(64, 64), iters=2, lr=4e-4,
                   checkpoint_every=2, log_every=1, num_workers=0, seed=7)


def synthetic_pair(index: int, height: int = 72, width: int = 88) -> FlowPair:
    """A textured image and its copy shifted by a known integer motion, with that motion as flow."""
    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    img1 = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    dx, dy = int(rng.integers(-4, 5)), int(rng.integers(-3, 4))
    img2 = np.roll(img1, shift=(dy, dx), axis=(0, 1))
    flow = np.broadcast_to(np.array([dx, dy], np.float32), (height, width, 2)).copy()
    return FlowPair(img1, img2, flow, None, f"pair{index}")


def write_chairs(root: Path, count: int = 3) -> Path:
    """A FlyingChairs-layout folder of synthetic pairs (open with the spec ``chairs:ROOT:all``)."""
    data = root / "FlyingChairs_release" / "data"
    data.mkdir(parents=True)
    for index in range(count):
        pair = synthetic_pair(index)
        Image.fromarray(pair.img1).save(data / f"{index + 1:05d}_img1.ppm")
        Image.fromarray(pair.img2).save(data / f"{index + 1:05d}_img2.ppm")
        write_flo(data / f"{index + 1:05d}_flow.flo", pair.flow)
    return root


class PairList(torch.utils.data.Dataset):
    """An in-memory dataset that can fail after a number of reads (to interrupt a run)."""

    def __init__(self, pairs: list[FlowPair], fail_after: int | None = None):
        self.pairs, self.fail_after, self.reads = pairs, fail_after, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> FlowPair:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return self.pairs[index]


@pytest.fixture(scope="module")
def pairs() -> list[FlowPair]:
    return [synthetic_pair(i) for i in range(3)]


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_and_workers_give_bitwise_the_same_parameters(tmp_path, pairs):
    straight = train(TINY, [DataSource(PairList(pairs))], tmp_path / "straight", device="cpu", quiet=True)
    assert straight.step == 4

    interrupted = tmp_path / "interrupted"
    # Dies while reading the batch of step 4: step 3 is done and logged, but the last checkpoint is step 2's.
    with pytest.raises(KeyboardInterrupt):
        train(TINY, [DataSource(PairList(pairs, fail_after=3 * TINY.batch_size))], interrupted, device="cpu",
              quiet=True)
    assert load_checkpoint(interrupted / LAST_NAME)["step"] == 2
    assert len((interrupted / LOG_NAME).read_text().splitlines()) == 3
    # Resume with DataLoader workers (a bookkeeping setting a resumed run may change).
    resumed = train(dataclasses.replace(TINY, num_workers=2), [DataSource(PairList(pairs))], interrupted,
                    resume=True, device="cpu", quiet=True)
    assert resumed.step == 4

    expected, actual = _parameters(straight.checkpoint), _parameters(resumed.checkpoint)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert not torch.equal(expected["fnet.conv1.weight"], build_raft("raft-small").state_dict()["fnet.conv1.weight"])
    records = [json.loads(line) for line in (interrupted / LOG_NAME).read_text().splitlines()]
    straight_records = [json.loads(line) for line in (tmp_path / "straight" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # step 3's record was replaced, not repeated
    assert [r["loss"] for r in records] == [r["loss"] for r in straight_records]


def test_checkpoint_contents_and_use_as_init_and_by_load_raft(tmp_path, pairs):
    config = dataclasses.replace(TINY, num_steps=2, checkpoint_every=1)
    result = train(config, [DataSource(PairList(pairs), name="mem")], tmp_path / "run", device="cpu", quiet=True)
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 2 and state["model_name"] == "raft-small"
    assert state["data"]["sources"] == [{"name": "mem", "size": 3, "weight": 1, "sparse": False}]
    assert {"optimizer", "scheduler", "rng", "train_config", "recipe"} <= state.keys()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([LOG_NAME, EVENTS_NAME, LAST_NAME, step_name(1),
                                                                          step_name(2)])

    model = load_raft(tmp_path / "run" / LAST_NAME)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items())
    finetuned = train(dataclasses.replace(config, num_steps=1), [DataSource(PairList(pairs))], tmp_path / "ft",
                      init=result.checkpoint, device="cpu", quiet=True)
    assert finetuned.step == 1
    with pytest.raises(DflowgenError, match="missing keys"):
        train(dataclasses.replace(config, model="raft"), [DataSource(PairList(pairs))], tmp_path / "wrong",
              init=result.checkpoint, device="cpu", quiet=True)


def test_hooks_see_every_step_after_its_log_and_checkpoint(tmp_path, pairs):
    """A caller's hook runs after the built-in ones: the step's log record and checkpoint are already written."""
    seen = []

    class Watch(TrainHook):
        def after_step(self, step, update, lr):
            logged = [json.loads(line)["step"] for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
            seen.append((step, update is not None and update["loss"] > 0, lr > 0, logged[-1],
                         (tmp_path / "run" / step_name(step)).exists()))

        def close(self):
            seen.append("closed")

    config = dataclasses.replace(TINY, num_steps=3, checkpoint_every=2)
    train(config, [DataSource(PairList(pairs))], tmp_path / "run", device="cpu", quiet=True, hooks=[Watch()])
    assert seen == [(1, True, True, 1, False), (2, True, True, 2, True), (3, True, True, 3, True), "closed"]


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path, pairs, monkeypatch):
    # The augmentor turns NaN flow into invalid pixels, so poison the loss of batches holding the marked pair.
    def poisoned_loss(flow_preds, flow_gt, valid, **options):
        loss, metrics = sequence_loss(flow_preds, flow_gt, valid, **options)
        return (loss * float("nan") if (flow_gt.abs() > 1000).any() else loss), metrics

    # The trainer takes each network's loss from the model registry.
    monkeypatch.setattr(registry_module, "sequence_loss", poisoned_loss)
    marked = pairs[0]._replace(flow=np.full_like(pairs[0].flow, 5000.0))
    # Two pairs, batch 1: exactly one poisoned step per epoch.
    config = dataclasses.replace(TINY, batch_size=1, num_steps=4, checkpoint_every=4)
    result = train(config, [DataSource(PairList([marked, pairs[1]]))], tmp_path / "some", device="cpu", quiet=True)
    assert result.step == 4 and result.nonfinite_steps == 2
    records = [json.loads(line) for line in (tmp_path / "some" / LOG_NAME).read_text().splitlines()]
    assert sum(r["nonfinite"] for r in records) == 2 and records[-1]["nonfinite_total"] == 2
    assert all(r["loss"] is None for r in records if r["nonfinite"])
    monkeypatch.undo()

    # Weights with a NaN make every step non-finite: the run stops, and no update ever reaches a checkpoint.
    weights = build_raft("raft-small").state_dict()
    poisoned_key = next(iter(weights))
    weights[poisoned_key][(0,) * weights[poisoned_key].ndim] = float("nan")
    torch.save({"model": weights, "model_name": "raft-small"}, tmp_path / "nan.pth")
    config = dataclasses.replace(TINY, max_nonfinite=3, checkpoint_every=1)
    with pytest.raises(DflowgenError, match="3 non-finite losses or gradients in a row"):
        train(config, [DataSource(PairList(pairs))], tmp_path / "all", init=tmp_path / "nan.pth", device="cpu",
              quiet=True)
    state = load_checkpoint(tmp_path / "all" / LAST_NAME)
    assert state["step"] == 2 and state["nonfinite_steps"] == 2
    for key, value in state["model"].items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0, equal_nan=True)


def test_an_interrupted_checkpoint_write_leaves_the_last_good_one(tmp_path, monkeypatch):
    save_checkpoint({"step": 1, "model": {"w": torch.ones(2)}}, tmp_path)

    def torn_save(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2, "model": {"w": torch.zeros(2)}}, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / LAST_NAME)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_NAME, step_name(1)]

    (tmp_path / "torn.pth").write_bytes((tmp_path / LAST_NAME).read_bytes()[:100])
    with pytest.raises(DflowgenError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "torn.pth")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    save_checkpoint({"step": 5, "rng": capture_rng_state()}, tmp_path)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(99)
    np.random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / LAST_NAME)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_step_batches_are_epoch_permutations_split_between_processes():
    whole = list(StepBatches(num_items=5, seed=1, batch_size=4, start_step=0, num_steps=5))
    indices = [index for batch in whole for _, index in batch]
    assert [position for batch in whole for position, _ in batch] == list(range(20))
    for epoch in range(4):
        assert sorted(indices[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert indices[:5] != indices[5:10]
    assert list(StepBatches(5, 1, 4, start_step=3, num_steps=5)) == whole[3:]
    halves = [list(StepBatches(5, 1, 4, 0, 5, rank=rank, world_size=2)) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == whole
    with pytest.raises(DflowgenError, match="not divisible"):
        StepBatches(5, 1, 3, 0, 5, rank=0, world_size=2)


@pytest.mark.parametrize("name", ["train-chairs", "train-things", "train-sintel", "train-kitti", "train-target-proxy",
                                  "train-cpu-mini"])
def test_bundled_training_recipes_load(name):
    config = load_recipe(name).train
    assert config.crop_size[0] % 8 == 0 and config.crop_size[1] % 8 == 0
    assert name != "train-kitti" or not config.augment.do_flip


def test_target_proxy_recipe_augments_by_cropping_only(pairs):
    augment = load_recipe("train-target-proxy").train.augment
    pair = pairs[0]
    sample = make_augmentor((64, 64), augment, sparse=False)(pair, np.random.default_rng(0))
    img1 = sample["img1"].permute(1, 2, 0).numpy()
    windows = np.lib.stride_tricks.sliding_window_view(pair.img1.astype(np.float32), (64, 64, 3))[..., 0, :, :, :]
    assert np.any(np.all(windows == img1, axis=(2, 3, 4)))
    assert torch.equal(sample["flow"], torch.from_numpy(pair.flow[:64, :64]).permute(2, 0, 1))


def write_train_recipe(path: Path, **train_values) -> Path:
    """A tiny [train] recipe (RAFT-small, 2 steps of batch 2 at 64×64, 2 iterations), ``train_values`` on top."""
    values = {"model": "raft-small", "num_steps": 2, "batch_size": 2, "crop_size": [64, 64], "iters": 2,
              "checkpoint_every": 1, "log_every": 1, "num_workers": 0, **train_values}
    lines = ["[train]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_train_then_eval(tmp_path):
    chairs = write_chairs(tmp_path / "chairs")
    recipe = write_train_recipe(tmp_path / "tiny.toml")
    runner = CliRunner()
    args = ["train", "--data", f"chairs:{chairs}:all*2", "--recipe", str(recipe), "--out", str(tmp_path / "run"),
            "--device", "cpu", "--quiet"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run" / LAST_NAME)
    assert state["data"]["sources"][0]["size"] == 3 and state["data"]["sources"][0]["weight"] == 2
    assert "crop_size = [64, 64]" in state["recipe"]

    # Resuming a finished run says so, and how to extend it.
    result = runner.invoke(cli, [*args, "--resume"])
    assert result.exit_code == 2 and "already finished" in result.output and "--steps" in result.output

    report = tmp_path / "eval.json"
    result = runner.invoke(cli, ["eval", "--ckpt", str(tmp_path / "run" / LAST_NAME), "--data",
                                 f"chairs:{chairs}:all", "--iters", "2", "--json", str(report), "--per-pair",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "00001" in result.output
    written = json.loads(report.read_text())
    assert written["model"] == "raft-small" and len(written["datasets"][0]["pairs"]) == 3


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp, chairs: ["--data", f"chairs:{tmp / 'nowhere'}", "--out", str(tmp / "o")], "does not exist"),
        (lambda tmp, chairs: ["--data", f"nosuchkind:{chairs}", "--out", str(tmp / "o")], "unknown data kind"),
        (lambda tmp, chairs: ["--data", f"chairs:{chairs}:all", "--out", str(tmp / "recipe.toml" / "o")],
         "cannot write to output folder"),
        (lambda tmp, chairs: ["--data", f"chairs:{chairs}:all", "--out", str(tmp / "o"), "--resume"],
         "nothing to resume"),
        (lambda tmp, chairs: ["--data", f"chairs:{chairs}:all", "--out", str(chairs)], "already holds a training run"),
        # Read by a DataLoader worker, which wraps the error in a traceback of its own.
        (lambda tmp, chairs: ["--data", f"frames:{chairs / 'FlyingChairs_release' / 'data'}", "--out",
                              str(tmp / "o")], "no ground-truth flow"),
    ],
    ids=["missing-root", "bad-spec", "unwritable-out", "resume-nothing", "existing-run", "unlabelled"],
)
def test_cli_train_user_errors_are_one_line(tmp_path, make_args, message):
    chairs = write_chairs(tmp_path / "chairs", count=1)
    (chairs / LAST_NAME).write_bytes(b"")
    recipe = write_train_recipe(tmp_path / "recipe.toml", num_steps=1, num_workers=1)
    result = CliRunner().invoke(cli, ["train", "--recipe", str(recipe), "--device", "cpu", "--quiet",
                                      *make_args(tmp_path, chairs)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_cli_resume_with_more_steps_extends_a_finished_run_on_the_longer_schedule(tmp_path):
    chairs = write_chairs(tmp_path / "chairs")
    recipe = write_train_recipe(tmp_path / "tiny.toml", num_steps=2)

    def run(out: Path, *extra: str):
        return CliRunner().invoke(cli, ["train", "--data", f"chairs:{chairs}:all", "--recipe", str(recipe), "--out",
                                        str(out), "--device", "cpu", "--quiet", *extra])

    assert run(tmp_path / "run").exit_code == 0
    result = run(tmp_path / "run", "--resume", "--steps", "4")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run" / LAST_NAME)["step"] == 4
    assert load_checkpoint(tmp_path / "run" / LAST_NAME)["train_config"]["num_steps"] == 4
    records = [json.loads(line) for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert [r for r in records if r.get("event") == "extend"] == [
        {"step": 2, "event": "extend", "from_steps": 2, "to_steps": 4, "wall_time": records[2]["wall_time"]}]
    extended = {r["step"]: r["lr"] for r in records if "event" not in r}
    assert sorted(extended) == [1, 2, 3, 4]

    # Steps after the old end follow the rates of a run planned for 4 steps from the start.
    assert run(tmp_path / "planned", "--steps", "4").exit_code == 0
    planned = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "planned" / LOG_NAME).read_text().splitlines())}
    assert extended[3] == planned[3] and extended[4] == planned[4]
    assert extended[2] != planned[2] and extended[3] > extended[2]

    result = run(tmp_path / "run", "--resume", "--steps", "3")
    assert result.exit_code == 2 and "has done 4 steps, more than the 3" in result.output
