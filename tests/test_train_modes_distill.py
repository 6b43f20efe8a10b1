"""``--mode distill``: strong augmentation that carries the teacher's flow exactly, training, back and forth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_train_modes import (  # frames, init_weights: the shared module-scoped fixtures
    MOTION,
    TINY,
    assert_falls,
    assert_usable_checkpoint,
    frame_source,
    frames,
    init_weights,
    moving_frames,
    parameters_equal,
    random_weights,
    records,
    resume_from_step,
    step_losses,
)

from dflowgen.losses.selfsup import flow_warp
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import DistillConfig, JitterConfig, StrongAugmentConfig
from dflowgen.train.labelfree.strong_augment import draw_views, strong_augment
from dflowgen.train.trainer import train

NO_JITTER = JitterConfig(prob=0.0)
IDENTITY = StrongAugmentConfig(max_scale=0.0, max_rotate=0.0, h_flip_prob=0.0, v_flip_prob=0.0, relative_scale=0.0,
                               relative_translate=0.0, eraser_prob=0.0, jitter=NO_JITTER)
# A random teacher is not forward-backward consistent; a loose check keeps its predictions.
LOOSE = DistillConfig(teacher_iters=4, fb_alpha2=1e6)


def _pair_batch(copies: int) -> tuple[torch.Tensor, ...]:
    """``copies`` copies of one moving-texture pair, its exact flows and full confidence."""
    first, second = (torch.tensor(frame, dtype=torch.float32).permute(2, 0, 1) for frame in moving_frames(2))
    image1, image2 = first.expand(copies, -1, -1, -1), second.expand(copies, -1, -1, -1)
    flow_fw = torch.tensor(MOTION).view(1, 2, 1, 1).expand(copies, 2, *image1.shape[-2:]).clone()
    ones = torch.ones(copies, 1, *image1.shape[-2:])
    return image1, image2, flow_fw, -flow_fw, ones, ones


def _photometric_error(image_a: torch.Tensor, image_b: torch.Tensor, flow: torch.Tensor,
                       valid: torch.Tensor) -> torch.Tensor:
    """Per sample: mean |image_a − image_b warped back by flow| (grey levels) over valid in-frame pixels."""
    warped, inside = flow_warp(image_b, flow)
    weight = valid * inside[:, 0]
    return ((warped - image_a).abs().mean(1) * weight).sum((1, 2)) / weight.sum((1, 2))


def test_strong_augmentation_carries_the_flow_exactly_through_every_transform():
    batch = _pair_batch(8)
    config = dataclasses.replace(StrongAugmentConfig(), h_flip_prob=0.5, v_flip_prob=0.5, eraser_prob=0.0,
                                 jitter=NO_JITTER)
    views = strong_augment(*batch, config, torch.Generator().manual_seed(0))
    forward = _photometric_error(views.clean1, views.clean2, views.flow_fw, views.valid_fw)
    backward = _photometric_error(views.clean2, views.clean1, views.flow_bw, views.valid_bw)
    uncarried = _photometric_error(views.clean1, views.clean2, batch[2], views.valid_fw)
    assert forward.max() < 2.0 and backward.max() < 2.0  # bilinear resampling of a smooth texture
    assert uncarried.min() > 5 * forward.max()
    assert (views.valid_fw.mean((1, 2)) > 0.5).all()
    view1, view2 = draw_views(8, 48, 64, config, torch.Generator().manual_seed(0))
    assert not torch.allclose(view1, view2)  # frame 2 moves relative to frame 1


def test_strong_augmentation_keeps_only_confident_labels_and_changes_only_what_the_student_sees():
    image1, image2, flow_fw, flow_bw, ones, _ = _pair_batch(4)
    confidence = ones.clone()
    confidence[..., :, :32] = 0.0  # the teacher is unsure of the left half
    views = strong_augment(image1, image2, flow_fw, flow_bw, confidence, ones, IDENTITY, torch.Generator())
    assert torch.allclose(views.clean1, image1, atol=1e-3) and torch.allclose(views.flow_fw, flow_fw, atol=1e-4)
    assert not views.valid_fw[..., :32].any() and views.valid_fw[..., 33:].all()

    jittered = dataclasses.replace(IDENTITY, eraser_prob=1.0, jitter=JitterConfig(prob=1.0))
    views = strong_augment(image1, image2, flow_fw, flow_bw, ones, ones, jittered, torch.Generator().manual_seed(1))
    assert torch.allclose(views.clean2, image2, atol=1e-3) and not torch.allclose(views.inputs2, image2, atol=1)
    assert torch.allclose(views.flow_fw, flow_fw, atol=1e-4) and views.inputs1.min() >= 0 and views.inputs1.max() <= 255


def test_distill_loss_falls_and_its_checkpoint_is_a_raft_checkpoint(tmp_path, frames, init_weights):
    config = dataclasses.replace(TINY, mode="distill", distill=dataclasses.replace(LOOSE, augment=IDENTITY))
    result = train(config, [], tmp_path / "run", frames=[frame_source(frames)], init=init_weights, device="cpu",
                   quiet=True)
    log = records(tmp_path / "run")
    assert set(log[0]) >= {"loss", "distill", "census", "smooth2", "confident", "epe"}
    assert 50 < log[0]["confident"] <= 100
    assert_falls(step_losses(tmp_path / "run"), factor=0.8)
    state = load_checkpoint(result.checkpoint)
    assert state["mode"] == "distill" and "partner" not in state
    assert parameters_equal(state["teacher"]["model"], torch.load(init_weights, weights_only=True)["model"])
    assert_usable_checkpoint(result.checkpoint)


def test_back_and_forth_distillation_trains_both_networks_and_resumes_identically(tmp_path, frames, init_weights):
    config = dataclasses.replace(TINY, mode="distill", num_steps=4, batch_size=2, checkpoint_every=2,
                                 distill=dataclasses.replace(LOOSE, swap_every=1))
    teacher = random_weights(tmp_path / "teacher.pth", seed=1)
    straight = tmp_path / "straight"
    train(config, [], straight, frames=[frame_source(frames)], init=init_weights, teacher=teacher, device="cpu",
          quiet=True)
    state = load_checkpoint(straight / LAST_NAME)
    assert "teacher" not in state and state["partner"]["model_name"] == "raft-small"
    assert {"optimizer", "scheduler"} <= state["partner"].keys()
    for trained, start in ((state["model"], init_weights), (state["partner"]["model"], teacher)):
        assert not parameters_equal(trained, torch.load(start, weights_only=True)["model"])

    resume_from_step(straight, tmp_path / "resumed", 2)
    resumed = train(config, [], tmp_path / "resumed", frames=[frame_source(frames)], resume=True, device="cpu",
                    quiet=True)
    final = load_checkpoint(resumed.checkpoint)
    assert parameters_equal(state["model"], final["model"])
    assert parameters_equal(state["partner"]["model"], final["partner"]["model"])
    assert step_losses(tmp_path / "resumed") == step_losses(straight)
    assert all(np.isfinite(step_losses(straight)))
