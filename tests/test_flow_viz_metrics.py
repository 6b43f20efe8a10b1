import numpy as np
import pytest
import torch

from dflowgen.flow.metrics import end_point_error, flow_length, flow_metrics
from dflowgen.flow.viz import color_wheel, flow_to_color


def test_color_wheel_has_55_entries_starting_red():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])


def test_zero_flow_is_white_and_directions_differ():
    flow = np.zeros((3, 4, 2), np.float32)
    flow[1, 1] = (1.0, 0.0)
    flow[1, 2] = (-1.0, 0.0)
    flow[2, 3] = (np.nan, 0.0)
    image = flow_to_color(flow)
    assert image.dtype == np.uint8 and image.shape == (3, 4, 3)
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    assert not np.array_equal(image[1, 1], image[1, 2])
    np.testing.assert_array_equal(image[2, 3], [0, 0, 0])


def test_metrics_on_known_errors():
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, 0, 0, 0] = 3.0
    pred[0, 1, 0, 1] = 4.0
    pred[0, 0, 1, 1] = 10.0
    assert end_point_error(pred, gt)[0, 0, 0].item() == 3.0
    metrics = flow_metrics(pred, gt)
    assert metrics["epe"] == pytest.approx((3 + 4 + 10) / 4)
    assert metrics["1px"] == pytest.approx(25.0)
    assert metrics["5px"] == pytest.approx(75.0)
    assert metrics["fl_all"] == pytest.approx(50.0)
    valid = torch.tensor([[[True, False], [True, False]]])
    assert flow_metrics(pred, gt, valid)["epe"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        flow_metrics(pred, gt, torch.zeros_like(valid))


def test_flow_length_matches_vector_norm_with_finite_gradient_at_zero():
    flow = torch.randn(2, 2, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flow[0, :, 1, 2] = 0.0
    flow.requires_grad_()
    length = flow_length(flow)
    length.sum().backward()
    reference = flow.detach().clone().requires_grad_()
    torch.linalg.vector_norm(reference, dim=1).sum().backward()
    torch.testing.assert_close(length, torch.linalg.vector_norm(reference.detach(), dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(flow.grad, reference.grad, rtol=1e-12, atol=0)
    assert length[0, 1, 2].item() == 0.0 and (flow.grad[0, :, 1, 2] == 0).all()


def test_end_point_error_keeps_non_finite_predictions_visible():
    pred = torch.zeros(1, 2, 1, 3)
    pred[0, 0, 0, 1] = float("nan")
    pred[0, 1, 0, 2] = float("inf")
    epe = end_point_error(pred, torch.zeros_like(pred))[0, 0]
    assert epe[0].item() == 0.0 and epe[1].isnan() and epe[2].isinf()
