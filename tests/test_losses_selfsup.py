"""Self-supervised losses: census, occlusion masks, edge-aware smoothness, self-distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dflowgen.losses.selfsup import (
    SelfSupervisedLossConfig,
    census_loss,
    distillation_crop,
    distillation_loss,
    flow_warp,
    occlusion_forward_backward,
    occlusion_mask,
    occlusion_range_map,
    range_map,
    robust_power,
    self_supervised_terms,
    smoothness_loss,
)

H, W = 24, 32


def smooth_texture(seed: int = 0, height: int = H, width: int = W) -> torch.Tensor:
    """1×3×H×W in [0, 1]: low-pass noise, so small shifts change the census gradually."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 4, width // 4, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def constant_flow(dx: float, dy: float, batch: int = 1) -> torch.Tensor:
    return torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(batch, 2, H, W).clone()


def shifted(image: torch.Tensor, dx: float) -> torch.Tensor:
    """``image`` moved right by ``dx`` px: frame 2 of a scene whose forward flow is (dx, 0)."""
    warped, _ = flow_warp(image, constant_flow(-dx, 0.0))
    return warped


def test_flow_warp_reads_image_at_p_plus_flow():
    image = smooth_texture()
    warped, inside = flow_warp(image, constant_flow(3.0, 1.0))
    torch.testing.assert_close(warped[..., :-1, :-3], image[..., 1:, 3:])
    assert inside[..., :-1, :-3].eq(1).all() and inside[..., -1:, :].eq(0).all() and inside[..., -3:].eq(0).all()


def test_census_is_zero_for_identical_frames_and_grows_with_a_shift():
    image = smooth_texture()
    mask = torch.ones(1, 1, H, W)
    assert census_loss(image, image, mask).item() < 1e-6
    losses = [census_loss(image, shifted(image, dx), mask).item() for dx in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    assert losses[0] > 0.05


def test_census_of_a_correctly_warped_frame_is_near_zero_and_ignores_masked_pixels():
    image = smooth_texture()
    frame2 = shifted(image, 3.0)
    warped, _ = flow_warp(frame2, constant_flow(3.0, 0.0))
    away_from_the_void = torch.ones(1, 1, H, W)
    away_from_the_void[..., W - 6:] = 0.0  # the census window of these pixels reads the 3 columns frame 2 lacks
    mask = away_from_the_void
    assert census_loss(image, warped, mask).item() < 0.02 * census_loss(image, frame2, mask).item()
    assert census_loss(image, frame2, torch.zeros(1, 1, H, W)).item() == 0.0


def test_census_is_invariant_to_a_brightness_offset():
    image = smooth_texture() * 0.8
    mask = torch.ones(1, 1, H, W)
    assert census_loss(image, image + 0.1, mask).item() < 0.02


def _moving_left_half(shift: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Left half of frame 1 moves right by ``shift`` px over a static right half.

    Frame-1 columns [W/2, W/2 + shift) are covered in frame 2: the known occluded band.
    """
    flow_fw = torch.zeros(1, 2, H, W)
    flow_fw[:, 0, :, : W // 2] = shift
    flow_bw = torch.zeros(1, 2, H, W)
    flow_bw[:, 0, :, shift: W // 2 + shift] = -shift
    return flow_fw, flow_bw


@pytest.mark.parametrize("method", ["range-map", "forward-backward"])
def test_occlusion_mask_marks_the_covered_band(method):
    flow_fw, flow_bw = _moving_left_half()
    occluded = occlusion_mask(flow_fw, flow_bw, method)
    expected = torch.zeros(1, 1, H, W)
    expected[..., W // 2: W // 2 + 4] = 1.0
    torch.testing.assert_close(occluded, expected)


def test_occlusion_none_and_zero_flow_mark_nothing():
    zero = torch.zeros(2, 2, H, W)
    assert occlusion_mask(zero, zero, "none").sum() == 0
    assert occlusion_range_map(zero).sum() == 0
    assert occlusion_forward_backward(zero, zero).sum() == 0
    torch.testing.assert_close(range_map(zero), torch.ones(2, 1, H, W))


def test_range_map_splits_a_half_pixel_between_neighbours():
    counts = range_map(constant_flow(0.5, 0.0))
    torch.testing.assert_close(counts[..., 1:], torch.ones(1, 1, H, W - 1))
    torch.testing.assert_close(counts[..., 0], torch.full((1, 1, H), 0.5))


def test_smoothness_is_zero_for_constant_flow():
    image = smooth_texture()
    for order in (1, 2):
        assert smoothness_loss(image, constant_flow(2.5, -1.0), order).item() == 0.0


def test_second_order_smoothness_ignores_a_ramp_and_penalises_its_curvature():
    image = torch.full((1, 3, H, W), 0.5)
    x = torch.arange(W, dtype=torch.float32).view(1, 1, 1, W).expand(1, 2, H, W)
    ramp = 0.5 * x
    curved = 0.05 * x.square()
    assert smoothness_loss(image, ramp, order=1).item() > 0.1
    assert smoothness_loss(image, ramp, order=2).item() < 1e-6
    assert smoothness_loss(image, curved, order=2).item() > 0.01


def test_smoothness_is_edge_aware():
    step = torch.zeros(1, 2, H, W)
    step[:, :, :, W // 2:] = 5.0
    flat = torch.full((1, 3, H, W), 0.5)
    edge = flat.clone()
    edge[..., W // 2:] = 0.9
    for order in (1, 2):
        assert smoothness_loss(edge, step, order).item() < 0.1 * smoothness_loss(flat, step, order).item()


def test_distillation_crop_scales_flow_to_the_crop():
    cropped = distillation_crop(constant_flow(2.0, 1.0), fraction=0.25, is_flow=True)
    torch.testing.assert_close(cropped, constant_flow(4.0, 2.0))


def test_distillation_is_zero_when_student_equals_teacher():
    teacher = torch.randn(2, 2, H, W)
    target = distillation_crop(teacher, 0.15, is_flow=True)
    weight = torch.rand(2, 1, H, W)
    assert distillation_loss(target.clone(), target, weight).item() == 0.0
    assert distillation_loss(target + 0.5, target, weight).item() > 0.1


def test_distillation_gradient_reaches_the_student_only():
    student = torch.zeros(1, 2, H, W, requires_grad=True)
    teacher = torch.ones(1, 2, H, W, requires_grad=True)
    distillation_loss(student, teacher, torch.ones(1, 1, H, W)).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_self_supervised_terms_prefer_the_true_flow():
    image1 = smooth_texture(seed=3)
    image2 = shifted(image1, 2.0)
    config = SelfSupervisedLossConfig()

    def terms(dx: float) -> dict[str, torch.Tensor]:
        flow_fw, flow_bw = constant_flow(dx, 0.0), constant_flow(-dx, 0.0)
        crop_fw = distillation_crop(flow_fw, config.distill_crop, is_flow=True)
        crop_bw = distillation_crop(flow_bw, config.distill_crop, is_flow=True)
        return self_supervised_terms(image1, image2, flow_fw, flow_bw, crop_fw, crop_bw, config)

    right, wrong = terms(2.0), terms(0.0)
    assert right["total"].item() < 0.2 * wrong["total"].item()
    assert right["distill"].item() == 0.0 and right["smooth2"].item() == 0.0
    names = ("census", "smooth1", "smooth2", "distill")
    expected = sum(getattr(config, f"weight_{name}") * right[name] for name in names)
    torch.testing.assert_close(right["total"], expected)


def test_flows_that_leave_the_frame_cannot_zero_the_measured_census():
    """Sending every pixel out of view empties the mask: the training census reads 0, the measured one does not."""
    image1 = smooth_texture(seed=3)
    image2 = shifted(image1, 2.0)
    config = SelfSupervisedLossConfig()

    def terms(dx: float, everywhere: bool) -> dict[str, torch.Tensor]:
        flow_fw, flow_bw = constant_flow(dx, 0.0), constant_flow(-dx, 0.0)
        crops = [distillation_crop(flow, config.distill_crop, is_flow=True) for flow in (flow_fw, flow_bw)]
        return self_supervised_terms(image1, image2, flow_fw, flow_bw, *crops, config, everywhere=everywhere)

    away, right, still = terms(500.0, True), terms(2.0, True), terms(0.0, True)
    assert terms(500.0, False)["census"].item() == 0.0
    assert away["unscored"].item() == 1.0 and right["unscored"].item() < 0.2
    # Out of view, every pixel costs the worst census match there is, far above any real match.
    worst = robust_power(torch.tensor(float(config.census_patch ** 2 - 1)))
    torch.testing.assert_close(away["census"], worst)
    assert right["census"].item() < 0.2 * away["census"].item() and still["census"].item() < away["census"].item()
    assert right["total"].item() < still["total"].item()


def test_self_supervised_terms_backpropagate_into_the_flows():
    image1, image2 = smooth_texture(1), smooth_texture(2)
    flows = [torch.randn(1, 2, H, W, requires_grad=True) for _ in range(4)]
    terms = self_supervised_terms(image1, image2, *flows, SelfSupervisedLossConfig(occlusion="forward-backward"))
    terms["total"].backward()
    assert all(flow.grad is not None and flow.grad.abs().sum() > 0 for flow in flows)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="census_patch"):
        SelfSupervisedLossConfig(census_patch=4)
    with pytest.raises(ValueError, match="distill_crop"):
        SelfSupervisedLossConfig(distill_crop=0.5)
    with pytest.raises(ValueError, match="weight_smooth2"):
        SelfSupervisedLossConfig(weight_smooth2=-1.0)
