"""Label-free training (``train.mode``): self-supervised training, the modes' settings, and their one-line errors.

Tiny on purpose: 64×48 frames of a texture moving (−2, −1) px a frame, RAFT-small, 2 GRU
iterations, a dozen steps. The helpers here are shared with the other ``test_train_modes_*`` files.
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
from dflowgen.data.spec import open_spec
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.models.raft import build_raft, load_raft
from dflowgen.recipes import load_recipe, parse_recipe, recipe_to_toml
from dflowgen.train.labelfree import self_supervised as selfsup_module
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint, step_name
from dflowgen.train.config import AugmentConfig, SelfSupervisedTrainConfig, TrainConfig
from dflowgen.train.data import DataSource
from dflowgen.train.labelfree.self_supervised import sequence_weights
from dflowgen.train.trainer import LOG_NAME, train

HEIGHT, WIDTH = 48, 64
MOTION = (-2.0, -1.0)  # flow (x, y) from every frame to the next
CROP_ONLY = AugmentConfig(spatial_prob=0.0, stretch_prob=0.0, do_flip=False, photometric=False, eraser=False)
TINY = TrainConfig(model="raft-small", num_steps=12, batch_size=3, crop_size=(HEIGHT, WIDTH), iters=2, lr=1e-4,
                   checkpoint_every=100, log_every=1, num_workers=0, seed=3, augment=CROP_ONLY)


def texture(seed: int = 0) -> np.ndarray:
    """A smooth random colour texture, 128×160×3 uint8 (features of about 8 px)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((160, 128), Image.BICUBIC))


def moving_frames(count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``count`` 48×64 views of the texture, each moved by MOTION from the one before."""
    big = texture(seed)
    step_x, step_y = int(-MOTION[0]), int(-MOTION[1])
    return [big[20 + k * step_y:20 + k * step_y + HEIGHT, 30 + k * step_x:30 + k * step_x + WIDTH]
            for k in range(count)]


def write_frames(folder: Path, count: int = 4, seed: int = 0) -> Path:
    """A PNG sequence of :func:`moving_frames` (open with the spec ``frames:FOLDER``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(moving_frames(count, seed)):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


def labelled_pairs(count: int = 3, seed: int = 0) -> list[FlowPair]:
    """Consecutive :func:`moving_frames` pairs with their exact flow."""
    frames = moving_frames(count + 1, seed)
    flow = np.broadcast_to(np.float32(MOTION), (HEIGHT, WIDTH, 2)).copy()
    return [FlowPair(frames[k], frames[k + 1], flow, None, f"pair{k}") for k in range(count)]


def random_weights(path: Path, seed: int = 0) -> Path:
    """A freshly initialised RAFT-small (seeded) saved as a weights file."""
    torch.manual_seed(seed)
    torch.save({"model": build_raft("raft-small").state_dict(), "model_name": "raft-small"}, path)
    return path


def frame_source(folder: Path) -> DataSource:
    opened = open_spec(f"frames:{folder}")
    return DataSource(opened.dataset, opened.weight, opened.sparse, name=f"frames:{folder}")


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


def step_losses(out: Path) -> list[float]:
    return [record["loss"] for record in records(out) if "event" not in record]


def assert_falls(losses: list[float], factor: float = 0.9) -> None:
    """The mean of the last three logged losses is below ``factor`` × the mean of the first two."""
    assert len(losses) >= 5 and all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < factor * np.mean(losses[:2]), losses


def assert_usable_checkpoint(path: Path) -> None:
    """``load_raft`` reads ``path`` and ``evaluate`` measures the network on labelled pairs."""
    model = load_raft(path)
    result = evaluate(model, labelled_pairs(), iters=2)
    assert np.isfinite(result.aggregate["epe"]) and result.aggregate["pairs"] == 3


def parameters_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def resume_from_step(straight: Path, copy: Path, step: int) -> None:
    """Make ``copy`` look like ``straight`` interrupted after its checkpoint of ``step`` (and a later log line)."""
    copy.mkdir()
    (copy / step_name(step)).write_bytes((straight / step_name(step)).read_bytes())
    (copy / LAST_NAME).write_bytes((straight / step_name(step)).read_bytes())
    (copy / LOG_NAME).write_text((straight / LOG_NAME).read_text())


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    return write_frames(tmp_path_factory.mktemp("frames") / "video")


@pytest.fixture(scope="module")
def init_weights(tmp_path_factory) -> Path:
    return random_weights(tmp_path_factory.mktemp("weights") / "init.pth")


def test_self_supervised_loss_falls_and_its_checkpoint_is_a_raft_checkpoint(tmp_path, frames, init_weights):
    # From scratch the census loss falls slowly (about 10 % in 16 steps here); fine-tuning is tested below.
    config = dataclasses.replace(TINY, mode="self-supervised", num_steps=16,
                                 selfsup=SelfSupervisedTrainConfig(photometric=False))
    result = train(config, [], tmp_path / "run", frames=[frame_source(frames)], init=init_weights, device="cpu",
                   quiet=True)
    assert result.step == 16 and result.nonfinite_steps == 0
    log = records(tmp_path / "run")
    assert set(log[0]) >= {"loss", "census", "smooth1", "smooth2", "distill", "lr", "nonfinite"}
    assert_falls(step_losses(tmp_path / "run"), factor=0.95)
    state = load_checkpoint(result.checkpoint)
    assert state["mode"] == "self-supervised" and state["data"]["frames"][0]["size"] == 3
    assert state["train_config"]["selfsup"]["loss"]["weight_census"] == 1.0
    assert not parameters_equal(state["model"], torch.load(init_weights, weights_only=True)["model"])
    assert_usable_checkpoint(result.checkpoint)


def test_self_supervised_fine_tuning_lowers_the_released_networks_loss(tmp_path, frames, shared_data):
    config = dataclasses.replace(TINY, mode="self-supervised", selfsup=SelfSupervisedTrainConfig(photometric=False))
    train(config, [], tmp_path / "run", frames=[frame_source(frames)], init=shared_data / "weights" / "raft-small.pth",
          device="cpu", quiet=True)
    assert_falls(step_losses(tmp_path / "run"), factor=0.85)


def test_self_supervised_resume_is_identical_with_augmentation_and_jitter(tmp_path, frames):
    config = dataclasses.replace(TINY, mode="self-supervised", num_steps=4, batch_size=2, checkpoint_every=2,
                                 augment=AugmentConfig(min_scale=0.0, max_scale=0.3))
    straight = tmp_path / "straight"
    train(config, [], straight, frames=[frame_source(frames)], device="cpu", quiet=True)  # from scratch
    resume_from_step(straight, tmp_path / "resumed", 2)
    resumed = train(config, [], tmp_path / "resumed", frames=[frame_source(frames)], resume=True, device="cpu",
                    quiet=True)
    assert resumed.step == 4
    expected, actual = load_checkpoint(straight / LAST_NAME), load_checkpoint(resumed.checkpoint)
    assert parameters_equal(expected["model"], actual["model"])
    assert step_losses(tmp_path / "resumed") == step_losses(straight)


def test_non_finite_label_free_steps_are_skipped_and_counted(tmp_path, frames, monkeypatch):
    original = selfsup_module.selfsup_sequence_loss

    def poisoned(predictions, image1, image2, gamma, config):
        terms = original(predictions, image1, image2, gamma, config)
        return {**terms, "total": terms["total"] * float("nan")} if len(poisoned.calls) % 2 == 0 else terms

    poisoned.calls = []
    monkeypatch.setattr(selfsup_module, "selfsup_sequence_loss",
                        lambda *args: poisoned.calls.append(1) or poisoned(*args))
    config = dataclasses.replace(TINY, mode="self-supervised", num_steps=4, checkpoint_every=4)
    result = train(config, [], tmp_path / "run", frames=[frame_source(frames)], device="cpu", quiet=True)
    assert result.step == 4 and result.nonfinite_steps == 2
    log = records(tmp_path / "run")
    assert [r["nonfinite"] for r in log] == [0, 1, 0, 1] and log[-1]["nonfinite_total"] == 2
    assert all(r["loss"] is None for r in log if r["nonfinite"])


def test_sequence_weights_are_normalised_and_gamma_zero_keeps_the_last_iterate():
    assert sequence_weights(3, 0.5) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    assert sequence_weights(4, 0.0) == [0.0, 0.0, 0.0, 1.0]


def test_label_free_recipes_load_and_round_trip():
    for name, mode in [("train-selfsup", "self-supervised"), ("train-pseudo-label", "pseudo-label"),
                       ("train-distill", "distill"), ("train-proxy", "pseudo-label")]:
        recipe = load_recipe(name)
        assert recipe.train.mode == mode
        assert parse_recipe(recipe_to_toml(recipe)) == recipe
    assert load_recipe("train-proxy").train.augment.spatial_prob == 0.0  # crop-only, like DFlow's target proxy
    text = "[train]\nmode = 'self-supervised'\n[train.selfsup.loss]\nweight_smooth2 = 4.0\n"
    assert parse_recipe(text).train.selfsup.loss.weight_smooth2 == 4.0
    with pytest.raises(DflowgenError, match="train.mode"):
        parse_recipe("[train]\nmode = 'unsupervised'\n")
    with pytest.raises(DflowgenError, match="refresh_every"):
        parse_recipe("[train.pseudo]\nrefresh_every = -1\n")
    with pytest.raises(DflowgenError, match="eraser_size"):
        parse_recipe("[train.distill.augment]\neraser_size = [0.5, 0.2]\n")


def _write_recipe(path: Path, mode: str, steps: int = 2) -> Path:
    path.write_text(f"""[train]
mode = "{mode}"
model = "raft-small"
num_steps = {steps}
batch_size = 2
crop_size = [{HEIGHT}, {WIDTH}]
iters = 2
lr = 1e-4
checkpoint_every = 1
log_every = 1
num_workers = 0

[train.pseudo]
label_iters = 2
""")
    return path


def test_cli_self_supervised_train_resume_and_eval(tmp_path, frames, init_weights):
    recipe = _write_recipe(tmp_path / "tiny.toml", "self-supervised")
    out = tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--frames", f"frames:{frames}", "--init", str(init_weights),
            "--out", str(out), "--device", "cpu", "--quiet"]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / LAST_NAME)["step"] == 2
    # The checkpoint's recipe is the resumed run's: another mode is a settings change.
    result = runner.invoke(cli, ["train", "--frames", f"frames:{frames}", "--out", str(out), "--resume", "--steps", "3",
                                 "--mode", "distill", "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "mode: 'self-supervised' -> 'distill'" in result.output
    result = runner.invoke(cli, ["eval", "--ckpt", str(out / LAST_NAME), "--data", f"sintel:{tmp_path / 'none'}",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 2  # eval reads the checkpoint; the data root is what is missing
    assert "does not exist" in result.output


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp, frames, init: ["--mode", "pseudo-label", "--frames", f"frames:{frames}"], "needs a teacher"),
        (lambda tmp, frames, init: ["--mode", "distill", "--frames", f"frames:{frames}"], "needs a teacher"),
        (lambda tmp, frames, init: ["--mode", "self-supervised", "--init", str(init)], "give --frames SPEC"),
        (lambda tmp, frames, init: ["--mode", "self-supervised", "--frames", f"frames:{tmp / 'one'}"],
         "no consecutive frames"),
        (lambda tmp, frames, init: ["--frames", f"frames:{frames}", "--data", f"frames:{frames}"],
         "--frames is for the label-free modes"),
        (lambda tmp, frames, init: ["--mode", "self-supervised", "--frames", f"frames:{frames}", "--data",
                                    f"frames:{frames}"], "learns from --frames alone"),
        (lambda tmp, frames, init: ["--mode", "distill", "--frames", f"frames:{frames}", "--teacher",
                                    str(tmp / "missing.pth")], "checkpoint not found"),
        (lambda tmp, frames, init: ["--mode", "self-supervised", "--frames", f"frames:{frames}", "--teacher",
                                    str(init)], "--teacher is used by"),
    ],
    ids=["pseudo-no-teacher", "distill-no-teacher", "no-frames", "frames-without-pairs", "frames-in-supervised",
         "data-in-selfsup", "missing-teacher", "teacher-in-selfsup"],
)
def test_cli_label_free_user_errors_are_one_line(tmp_path, frames, init_weights, make_args, message):
    (tmp_path / "one").mkdir()
    Image.fromarray(moving_frames(1)[0]).save(tmp_path / "one" / "00000.png")
    recipe = _write_recipe(tmp_path / "recipe.toml", "supervised")
    result = CliRunner().invoke(cli, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "o"), "--device",
                                      "cpu", "--quiet", *make_args(tmp_path, frames, init_weights)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
