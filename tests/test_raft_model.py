"""RAFT / RAFT-small: forward contract, gradients, BatchNorm freezing, correlation look-ups, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dflowgen.models.raft import MODEL_NAMES, InputPadder, build_raft
from dflowgen.models.raft.corr import AllPairsLookup, OnDemandLookup, coords_grid, pool_level
from dflowgen.models.raft.encoder import ChannelsLastInstanceNorm, InstanceNorm
from dflowgen.models.raft.raft import bilinear_upsample, convex_upsample

HEIGHT, WIDTH = 48, 64


def _images(batch: int = 1, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    image1 = torch.rand(batch, 3, height, width, generator=generator) * 255
    image2 = torch.roll(image1, shifts=(1, 2), dims=(2, 3))
    return image1, image2


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_raft("raft-small").eval()


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_final_only_returns_a_list_of_the_final_flow(model_name: str) -> None:
    torch.manual_seed(0)
    model = build_raft(model_name).eval()
    with torch.no_grad():
        flows = model(*_images(batch=2), iters=2, final_only=True)
    assert isinstance(flows, list) and len(flows) == 1
    flow_up = flows[0]
    assert flow_up.shape == (2, 2, HEIGHT, WIDTH)
    assert flow_up.dtype == torch.float32 and torch.isfinite(flow_up).all()
    assert flow_up.abs().sum() > 0


def test_train_mode_returns_one_upsampled_prediction_per_iteration(small_model: torch.nn.Module) -> None:
    with torch.no_grad():
        predictions = small_model(*_images(), iters=3)
        flow_up = small_model(*_images(), iters=3, final_only=True)[-1]
    assert isinstance(predictions, list) and len(predictions) == 3
    assert all(prediction.shape == (1, 2, HEIGHT, WIDTH) for prediction in predictions)
    assert not torch.equal(predictions[0], predictions[-1])
    torch.testing.assert_close(predictions[-1], flow_up)


def test_final_only_matches_last_training_prediction_with_convex_upsampling() -> None:
    torch.manual_seed(1)
    model = build_raft("raft").eval()
    with torch.no_grad():
        predictions = model(*_images(), iters=2)
        flow_up = model(*_images(), iters=2, final_only=True)[-1]
    torch.testing.assert_close(predictions[-1], flow_up)


def test_flow_init_is_added_to_the_starting_estimate(small_model: torch.nn.Module) -> None:
    images = _images()
    flow_init = torch.full((1, 2, HEIGHT // 8, WIDTH // 8), 3.0)
    with torch.no_grad():
        plain = small_model(*images, iters=1, final_only=True)[-1]
        warm = small_model(*images, iters=1, final_only=True, flow_init=flow_init)[-1]
    assert not torch.allclose(plain, warm)
    assert (warm - plain).mean() > 8.0  # starts 3 px further at 1/8 resolution: 24 px, less a small update


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_gradients_reach_every_parameter(model_name: str) -> None:
    torch.manual_seed(0)
    model = build_raft(model_name).train()
    predictions = model(*_images(), iters=2)
    sum(prediction.abs().mean() for prediction in predictions).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_channels_last_instance_norm_matches_group_norm_values_and_gradients(offset: float) -> None:
    """The hand-written backward against torch's, in float64, on a channels-last tensor with a far-off mean too."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 9, dtype=torch.float64, generator=generator) * 2 + offset
    grad_y = torch.randn(3, 5, 7, 9, dtype=torch.float64, generator=generator)
    ours = x.to(memory_format=torch.channels_last).requires_grad_()
    reference = x.clone().requires_grad_()
    y = InstanceNorm()(ours)
    assert y.grad_fn.name().startswith("ChannelsLastInstanceNorm")
    y_reference = F.group_norm(reference, 5, eps=1e-5)
    torch.testing.assert_close(y, y_reference)
    (grad,) = torch.autograd.grad(y, ours, grad_y)
    (grad_reference,) = torch.autograd.grad(y_reference, reference, grad_y)
    torch.testing.assert_close(grad, grad_reference)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    small = ours[:2, :2, :3, :4].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ChannelsLastInstanceNorm.apply(t, 1e-5), (small,))


def test_freeze_bn_keeps_running_statistics() -> None:
    model = build_raft("raft").train()
    model.freeze_bn()
    norm = model.cnet.norm1
    before = norm.running_mean.clone()
    model(*_images(), iters=1)
    assert not norm.training and model.training
    torch.testing.assert_close(norm.running_mean, before)
    model.train()
    model(*_images(), iters=1)
    assert not torch.allclose(norm.running_mean, before)


def test_mixed_precision_returns_float32_close_to_float32_run(small_model: torch.nn.Module) -> None:
    mixed = build_raft("raft-small", mixed_precision=True).eval()
    mixed.load_state_dict(small_model.state_dict())
    images = _images()
    with torch.no_grad():
        reference = small_model(*images, iters=2, final_only=True)[-1]
        flow_up = mixed(*images, iters=2, final_only=True)[-1]
    assert flow_up.dtype == torch.float32
    assert (flow_up - reference).abs().max() < 0.05 * reference.abs().max() + 0.05


def test_rejects_bad_inputs(small_model: torch.nn.Module) -> None:
    image1, image2 = _images()
    with pytest.raises(ValueError, match="multiples of 8"):
        small_model(image1[..., :60], image2[..., :60])
    with pytest.raises(ValueError, match="image2"):
        small_model(image1, image2[:, :, :40])
    with pytest.raises(ValueError, match="image1"):
        small_model(image1[:, :1], image2[:, :1])
    with pytest.raises(ValueError, match="model_name"):
        build_raft("raft-large")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="corr"):
        build_raft("raft", corr="sparse")  # type: ignore[arg-type]


def _reference_lookup(
    fmap1: torch.Tensor, fmap2: torch.Tensor, coords: torch.Tensor, levels: int, radius: int
) -> torch.Tensor:
    """Direct definition: per level, grid_sample of the pooled volume at (x + i - r, y + j - r), x-major."""
    batch, dim, height, width = fmap1.shape
    volume = torch.einsum("bchw,bcuv->bhwuv", fmap1, fmap2) / dim**0.5
    level = volume.reshape(batch * height * width, 1, height, width)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dx, dy = torch.meshgrid(offsets, offsets, indexing="ij")  # [i][j]: x offset i, y offset j
    centres = coords.permute(0, 2, 3, 1).reshape(-1, 1, 1, 2)
    samples = []
    for index in range(levels):
        if index:
            level = F.avg_pool2d(level, 2)
        points = centres / 2**index + torch.stack([dx, dy], dim=-1)
        size = torch.tensor([level.shape[3] - 1, level.shape[2] - 1], dtype=torch.float32)
        grid = 2 * points / size - 1
        samples.append(F.grid_sample(level, grid, align_corners=True).reshape(batch * height * width, -1))
    return torch.cat(samples, dim=1).view(batch, height, width, -1).permute(0, 3, 1, 2)


def _random_lookup_inputs(height: int = 16, width: int = 20) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(3)
    fmap1 = torch.randn(2, 32, height, width, generator=generator)
    fmap2 = torch.randn(2, 32, height, width, generator=generator)
    flow = torch.randn(2, 2, height, width, generator=generator) * 6  # some samples fall outside the image
    return fmap1, fmap2, coords_grid(2, height, width) + flow


@pytest.mark.parametrize("radius", [3, 4])
def test_all_pairs_lookup_matches_grid_sample_definition(radius: int) -> None:
    fmap1, fmap2, coords = _random_lookup_inputs()
    expected = _reference_lookup(fmap1, fmap2, coords, levels=4, radius=radius)
    actual = AllPairsLookup(fmap1, fmap2, num_levels=4, radius=radius)(coords)
    assert actual.shape == (2, 4 * (2 * radius + 1) ** 2, 16, 20)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(6, 8), (7, 9), (3, 5), (1, 4)])
def test_pool_level_matches_avg_pool(size: tuple[int, int]) -> None:
    level = torch.randn(5, *size)
    expected = F.avg_pool2d(level[:, None], 2)[:, 0] if min(size) >= 2 else level[:, : size[0] // 2, : size[1] // 2]
    torch.testing.assert_close(pool_level(level), expected)


def test_levels_smaller_than_a_pixel_read_zeros() -> None:
    """A 6×8 map has a 0×1 fourth level: its samples are all outside, hence zero."""
    fmap1, fmap2, coords = (tensor[..., :6, :8] for tensor in _random_lookup_inputs())
    samples = AllPairsLookup(fmap1, fmap2, num_levels=4, radius=3)(coords)
    assert torch.equal(samples[:, 3 * 49 :], torch.zeros_like(samples[:, 3 * 49 :]))
    assert samples[:, 2 * 49 : 3 * 49].abs().sum() > 0


def test_on_demand_lookup_equals_all_pairs_values_and_gradients() -> None:
    fmap1, fmap2, coords = _random_lookup_inputs()
    results = []
    for lookup_type in (AllPairsLookup, OnDemandLookup):
        inputs = [fmap1.clone().requires_grad_(), fmap2.clone().requires_grad_()]
        samples = lookup_type(*inputs, num_levels=4, radius=4)(coords)
        (samples * torch.linspace(-1, 1, samples.numel()).view_as(samples)).sum().backward()
        results.append((samples, inputs[0].grad, inputs[1].grad))
    for all_pairs, on_demand in zip(*results):
        torch.testing.assert_close(on_demand, all_pairs, atol=1e-4, rtol=1e-4)


def test_on_demand_model_gives_the_same_flow(small_model: torch.nn.Module) -> None:
    on_demand = build_raft("raft-small", corr="on-demand").eval()
    on_demand.load_state_dict(small_model.state_dict())
    images = _images(height=64, width=96)
    with torch.no_grad():
        expected = small_model(*images, iters=3)
        actual = on_demand(*images, iters=3)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_convex_upsampling_with_uniform_weights_averages_the_neighbourhood() -> None:
    flow = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    up = convex_upsample(flow, torch.zeros(1, 9 * 64, 3, 4))
    neighbourhood_mean = F.avg_pool2d(8 * flow, 3, stride=1, padding=1, count_include_pad=True)
    assert up.shape == (1, 2, 24, 32)
    torch.testing.assert_close(up[:, :, ::8, ::8], neighbourhood_mean)
    torch.testing.assert_close(up[:, :, 7::8, 7::8], neighbourhood_mean)


def test_convex_upsampling_places_each_sub_pixel_weight() -> None:
    """A mask that picks the right neighbour (k = 5) for sub-pixel (row 2, col 5) only."""
    flow = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    mask = torch.zeros(1, 9, 8, 8, 3, 4)
    mask[:, 5, 2, 5] = 50.0
    up = convex_upsample(flow, mask.view(1, 9 * 64, 3, 4))
    right_neighbour = F.pad(8 * flow, (0, 1))[..., 1:]
    torch.testing.assert_close(up[:, :, 2::8, 5::8], right_neighbour)


def test_bilinear_upsampling_scales_values() -> None:
    flow = torch.ones(1, 2, 3, 4)
    torch.testing.assert_close(bilinear_upsample(flow), torch.full((1, 2, 24, 32), 8.0))


def test_input_padder_centres_replicate_padding_and_unpads() -> None:
    image = torch.rand(1, 3, 436, 1021)
    padder = InputPadder(image.shape)
    assert padder.padding == (1, 2, 2, 2)
    (padded,) = padder.pad(image)
    assert padded.shape == (1, 3, 440, 1024)
    torch.testing.assert_close(padded[:, :, 0, 1:-2], image[:, :, 0])
    torch.testing.assert_close(padded[:, :, 2:-2, 0], image[:, :, :, 0])
    torch.testing.assert_close(padder.unpad(padded), image)
    kitti = InputPadder((375, 1242), mode="kitti")
    assert kitti.padding == (3, 3, 0, 1)
    assert InputPadder((64, 48)).padding == (0, 0, 0, 0)
