import math

import pytest
import torch

from dflowgen.losses import sequence_loss


def _constant(value: float, batch: int = 1, size: int = 4) -> torch.Tensor:
    return torch.full((batch, 2, size, size), value)


def test_weights_follow_gamma_and_the_last_iterate_counts_most():
    flow_gt = _constant(0.0)
    loss, metrics = sequence_loss([_constant(1.0), _constant(2.0)], flow_gt, gamma=0.8)
    assert loss.item() == pytest.approx(0.8 * 1.0 + 1.0 * 2.0)
    assert metrics["epe"].item() == pytest.approx(2.0 * math.sqrt(2.0))
    assert metrics["1px"].item() == 0.0 and metrics["3px"].item() == 100.0


def test_invalid_and_too_large_flow_are_excluded_but_still_count_in_the_mean():
    flow_gt = _constant(0.0)
    flow_gt[0, 0, 0, 0] = 400.0  # |gt| >= max_flow: excluded
    valid = torch.ones(1, 4, 4)
    valid[0, 3, :] = 0  # a row without ground truth
    pred = _constant(1.0)
    loss, metrics = sequence_loss([pred], flow_gt, valid, max_flow=400.0)
    # 16 pixels, 4 invalid + 1 too large: 11 contribute 1 per channel, the mean runs over all 16 (official).
    assert loss.item() == pytest.approx(11 / 16)
    assert metrics["epe"].item() == pytest.approx(math.sqrt(2.0))


def test_gradient_reaches_only_valid_pixels():
    pred = _constant(1.0).requires_grad_(True)
    valid = torch.zeros(1, 4, 4)
    valid[0, :2] = 1
    loss, _ = sequence_loss([pred], _constant(0.0), valid)
    loss.backward()
    assert (pred.grad[0, :, :2] != 0).all() and (pred.grad[0, :, 2:] == 0).all()


def test_per_sample_losses_average_to_the_batch_loss():
    flow_gt = torch.zeros(3, 2, 4, 4)
    preds = [torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    valid = (torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(9)) > 0.3).float()
    per_sample, per_metrics = sequence_loss(preds, flow_gt, valid, reduction="none")
    batch_loss, batch_metrics = sequence_loss(preds, flow_gt, valid)
    assert per_sample.shape == (3,) and per_metrics["epe"].shape == (3,)
    assert per_sample.mean().item() == pytest.approx(batch_loss.item(), rel=1e-6)
    single, single_metrics = sequence_loss([p[1:2] for p in preds], flow_gt[1:2], valid[1:2])
    assert per_sample[1].item() == pytest.approx(single.item(), rel=1e-6)
    assert per_metrics["epe"][1].item() == pytest.approx(single_metrics["epe"].item(), rel=1e-6)
    assert not torch.allclose(per_sample[0], per_sample[1])


def test_non_finite_ground_truth_makes_the_loss_non_finite():
    flow_gt = _constant(0.0)
    flow_gt[0, :, 1, 1] = float("nan")
    loss, _ = sequence_loss([_constant(1.0)], flow_gt)
    assert not torch.isfinite(loss)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        sequence_loss([], _constant(0.0))
    with pytest.raises(ValueError, match="B×2×H×W"):
        sequence_loss([_constant(0.0)], torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        sequence_loss([_constant(0.0)], _constant(0.0), reduction="sum")
