"""``--mode pseudo-label``: the consistency filter, the contrastive loss, training, refresh and exact resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_train import PairList
from test_train_modes import (  # frames, init_weights: the shared module-scoped fixtures
    TINY,
    assert_falls,
    assert_usable_checkpoint,
    frame_source,
    frames,
    init_weights,
    labelled_pairs,
    parameters_equal,
    random_weights,
    records,
    resume_from_step,
    step_losses,
)

from dflowgen.models.raft import build_raft
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import PseudoLabelConfig
from dflowgen.train.labelfree.contrastive import coarse_labels, contrastive_flow_loss, tap_features
from dflowgen.train.data import DataSource
from dflowgen.train.labelfree.pseudo_label import PseudoLabelled, consistency_mask, label_pairs
from dflowgen.train.trainer import train

# A random teacher's flows are not forward-backward consistent; a loose check keeps them (the filter's own
# test below uses the default thresholds).
LOOSE = PseudoLabelConfig(label_iters=4, fb_alpha2=1e6, num_anchors=32)


def test_consistency_mask_keeps_consistent_pixels_and_rejects_an_inconsistent_region():
    height, width = 40, 48
    flow_fw = torch.zeros(1, 2, height, width)
    flow_fw[:, 0], flow_fw[:, 1] = 3.0, 1.0
    flow_bw = -flow_fw.clone()
    flow_bw[:, :, 10:20, 20:30] = torch.tensor([6.0, -4.0]).view(1, 2, 1, 1)  # frame 2's region disagrees
    kept = consistency_mask(flow_fw, flow_bw)[0, 0].bool()

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    target_x, target_y = xs + 3, ys + 1
    in_frame = (target_x <= width - 1) & (target_y <= height - 1)
    lands_in_region = (target_y >= 10) & (target_y < 20) & (target_x >= 20) & (target_x < 30)
    assert not kept[lands_in_region].any()
    assert kept[in_frame & ~lands_in_region].all()
    assert not kept[~in_frame].any()
    # A flow within the tolerance (|Δ|² <= 0.01·(|F_fw|² + |F_bw|²) + 0.5) is kept.
    assert consistency_mask(flow_fw, -flow_fw + 0.4)[0, 0, :20, :20].bool().all()


def test_label_pairs_labels_every_pair_at_full_size_and_pseudo_labelled_serves_them(init_weights, frames):
    model = build_raft("raft-small")
    dataset = frame_source(frames).dataset
    labels = label_pairs(model, dataset, iters=2, alpha2=1e6)
    assert len(labels.flows) == 3 and labels.flows[0].shape == (48, 64, 2) and labels.valids[0].dtype == bool
    assert 0.5 < labels.kept_fraction() < 1.0  # pixels moving out of frame 2 are dropped
    assert model.training  # modes restored
    pair = PseudoLabelled(dataset, labels)[1]
    assert pair.flow is labels.flows[1] and pair.valid is labels.valids[1] and pair.img1.shape == (48, 64, 3)


def test_contrastive_loss_prefers_features_matched_by_the_flow():
    torch.manual_seed(0)
    features1 = torch.randn(2, 16, 6, 8)
    flow = torch.zeros(2, 2, 48, 64)
    flow[:, 0] = 8.0  # one coarse pixel to the right
    features2 = torch.roll(features1, shifts=1, dims=3)  # frame 2 holds frame 1's vectors one cell right
    valid = torch.ones(2, 48, 64)
    generator = torch.Generator().manual_seed(0)
    matched = contrastive_flow_loss(features1, features2, flow, valid, 0.1, 16, generator)
    unmatched = contrastive_flow_loss(features1, features2, torch.zeros_like(flow), valid, 0.1, 16,
                                      torch.Generator().manual_seed(0))
    assert matched < 0.05 < 1.0 < unmatched
    coarse, coarse_valid = coarse_labels(flow, valid)
    assert torch.allclose(coarse[:, 0], torch.ones(2, 6, 8)) and coarse_valid.all()
    nothing = contrastive_flow_loss(features1, features2, flow, torch.zeros_like(valid), 0.1, 16, generator)
    assert nothing == 0.0


def test_feature_tap_sees_both_frames_features():
    model = build_raft("raft-small")
    images = torch.rand(2, 3, 48, 64) * 255
    with tap_features(model) as tap:
        model(images, images.flip(0), iters=1)
    first, second = tap.pair()
    assert first.shape == (2, 128, 6, 8) and torch.allclose(first, second.flip(0), atol=1e-5)


def test_pseudo_label_loss_falls_and_its_checkpoint_is_a_raft_checkpoint(tmp_path, frames, init_weights):
    config = dataclasses.replace(TINY, mode="pseudo-label", pseudo=LOOSE)
    result = train(config, [], tmp_path / "run", frames=[frame_source(frames)], init=init_weights, device="cpu",
                   quiet=True)
    log = records(tmp_path / "run")
    assert log[0]["event"] == "label" and log[0]["step"] == 0 and 0.5 < log[0]["kept"] < 1.0
    assert set(log[1]) >= {"loss", "sequence", "contrastive", "epe", "1px"}
    assert_falls(step_losses(tmp_path / "run"), factor=0.8)
    contrastive = [r["contrastive"] for r in log[1:]]
    assert np.mean(contrastive[-3:]) < np.mean(contrastive[:2])
    state = load_checkpoint(result.checkpoint)
    assert state["mode"] == "pseudo-label" and state["teacher"]["model_name"] == "raft-small"
    assert parameters_equal(state["teacher"]["model"], torch.load(init_weights, weights_only=True)["model"])
    assert_usable_checkpoint(result.checkpoint)


def test_pseudo_labels_refresh_mix_with_labelled_data_and_resume_identically(tmp_path, frames, init_weights):
    config = dataclasses.replace(TINY, mode="pseudo-label", num_steps=4, batch_size=2, checkpoint_every=2,
                                 pseudo=dataclasses.replace(LOOSE, refresh_every=2))
    labelled = [DataSource(PairList(labelled_pairs(2, seed=1)), name="labelled")]
    teacher = random_weights(tmp_path / "teacher.pth", seed=1)
    straight = tmp_path / "straight"
    train(config, labelled, straight, frames=[frame_source(frames)], init=init_weights, teacher=teacher,
          device="cpu", quiet=True)
    events = [r for r in records(straight) if "event" in r]
    assert [(e["event"], e["step"]) for e in events] == [("label", 0), ("relabel", 2)]
    state = load_checkpoint(straight / LAST_NAME)
    assert state["data"]["sources"][0]["name"] == "labelled" and len(state["data"]["frames"]) == 1
    # The labels in use at the end were made by the student after step 2, not by the teacher.
    assert parameters_equal(state["teacher"]["model"], load_checkpoint(straight / "step_0000002.pth")["model"])

    resume_from_step(straight, tmp_path / "resumed", 2)
    resumed = train(config, labelled, tmp_path / "resumed", frames=[frame_source(frames)], resume=True,
                    device="cpu", quiet=True)
    assert parameters_equal(state["model"], load_checkpoint(resumed.checkpoint)["model"])
    timeless = [[{k: v for k, v in r.items() if k not in ("time", "elapsed", "wall_time")} for r in records(out)]
                for out in (straight, tmp_path / "resumed")]
    assert timeless[0] == timeless[1]  # the relabelling at step 2 is logged once
