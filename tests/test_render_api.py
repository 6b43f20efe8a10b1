"""The renderer's interface: reproducible draws, storable parameters, gradients for every group."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dflowgen.assets import load_layer_bank
from dflowgen.errors import DflowgenError
from dflowgen.render import LEARNABLE_GROUPS, RenderConfig, SceneParams, WarpRanges, render, sample_params
from dflowgen.render.compose import alpha_weights, softmax_weights
from dflowgen.render.raster import Fragments
from dflowgen.render import warp
from dflowgen.render.warp import interpolate_nodes, read_atlas, to_atlas, warp_matrix, warp_points

SMALL_MOTION = WarpRanges(translation=(-5.0, 5.0), rotation_deg=(-3.0, 3.0), scale=(0.95, 1.05), perspective=(-3.0, 3.0), grid_offset=(-1.0, 1.0))


def config(**changes) -> RenderConfig:
    settings = dict(
        width=48,
        height=32,
        canvas_margin=16,
        num_layers=(1, 3),
        object_size=(0.4, 0.7),
        layer_warp=SMALL_MOTION,
        anchor_warp=SMALL_MOTION,
        layer_translation=(-3.0, 3.0),
        grid_size=(3, 3),
        blur_kernel_size=9,
    )
    settings.update(changes)
    return RenderConfig(**settings)


@pytest.fixture(scope="module")
def bank():
    return load_layer_bank(size=config().canvas_size)


def assert_same_params(first: SceneParams, second: SceneParams) -> None:
    for name in SceneParams.field_names():
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_a_sample_is_the_same_whatever_batch_it_is_drawn_in(bank):
    together = sample_params(config(), bank, seed=7, indices=[4, 9, 2])
    alone = sample_params(config(), bank, seed=7, indices=[9])
    assert_same_params(together.select([1]), alone)
    assert not torch.equal(together.layer_translation[0], together.layer_translation[1])
    # Rendering agrees to float precision (atlas coordinates are scaled by the batch's size).
    rendered_together = render(together, bank, config())
    rendered_alone = render(alone, bank, config())
    assert torch.allclose(rendered_together.img1[1:2], rendered_alone.img1, atol=1e-4)
    assert torch.allclose(rendered_together.flow[1:2], rendered_alone.flow, atol=1e-4)
    assert (rendered_together.valid[1:2] != rendered_alone.valid).float().mean() < 1e-3


def test_another_seed_draws_another_sample(bank):
    first = sample_params(config(), bank, seed=1, indices=[0])
    second = sample_params(config(), bank, seed=2, indices=[0])
    assert not torch.equal(first.anchor_translation, second.anchor_translation)


def test_stored_parameters_re_render_identically(bank):
    params = sample_params(config(noise_prob=1.0, fog_prob=1.0, blur_prob=1.0), bank, seed=3, indices=range(3))
    arrays = params.to_numpy()
    assert all(array.shape[0] == 3 for array in arrays.values())
    assert arrays["noise"].dtype == np.float32 and arrays["image_index"].dtype == np.int64 and arrays["layer_active"].dtype == np.uint8
    restored = SceneParams.from_numpy(arrays)
    assert_same_params(params, restored)
    first, second = render(params, bank, config()), render(restored, bank, config())
    for name in ("img1", "img2", "flow", "valid"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_malformed_stored_parameters_are_user_errors(bank):
    arrays = sample_params(config(), bank, seed=0, indices=[0, 1]).to_numpy()
    with pytest.raises(DflowgenError, match="lack depth"):
        SceneParams.from_numpy({name: value for name, value in arrays.items() if name != "depth"})
    with pytest.raises(DflowgenError, match="batch size"):
        SceneParams.from_numpy({**arrays, "depth": arrays["depth"][:1]})


def test_params_for_another_size_or_bank_are_refused(bank):
    params = sample_params(config(), bank, seed=0, indices=[0])
    with pytest.raises(ValueError, match="48×32 images but the render config is 40×32"):
        render(params, bank, config(width=40))
    params.image_index[:] = bank.num_images
    with pytest.raises(ValueError, match="the layer bank has"):
        render(params, bank, config())


def test_select_and_concat_are_inverse(bank):
    params = sample_params(config(), bank, seed=5, indices=range(4))
    assert_same_params(SceneParams.concat([params.select([0, 1]), params.select(slice(2, 4))]), params)
    assert params.select([2]).batch_size == 1


def test_every_learnable_parameter_gets_a_finite_nonzero_gradient(bank):
    everything_on = config(num_layers=(2, 2), noise_prob=1.0, fog_prob=1.0, blur_prob=1.0, white_balance_prob=1.0, blur_layer_prob=1.0)
    params = sample_params(everything_on, bank, seed=1, indices=range(2)).requires_grad_()
    out = render(params, bank, everything_on)
    target = torch.linspace(-1, 1, out.flow.numel()).reshape(out.flow.shape)
    loss = out.img1.square().mean() + out.img2.sqrt().mean() + ((out.flow - target) * out.valid).square().mean()
    loss.backward()

    groups = params.learnable_groups()
    assert set(groups) == {"pixel", "rotation_scale", "effects", "noise"}
    for group, tensors in groups.items():
        for name, tensor in zip(LEARNABLE_GROUPS[group], tensors):
            assert tensor.is_leaf and tensor.grad is not None, name
            assert torch.isfinite(tensor.grad).all(), name
            assert tensor.grad.abs().sum() > 0, f"{group}.{name} gets no gradient"


def test_render_runs_in_float64(bank):
    params = sample_params(config(), bank, seed=2, indices=range(2)).to(dtype=torch.float64)
    out = render(params, bank, config())
    assert out.img1.dtype == torch.float64 and out.flow.dtype == torch.float64
    single = render(sample_params(config(), bank, seed=2, indices=range(2)), bank, config())
    assert torch.allclose(out.flow.float(), single.flow, atol=1e-3)


# --- float64 gradient checks of the operators the renderer is built from ---


def double(*shape: int, low: float = -1.0, high: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)).requires_grad_()


def test_gradcheck_warp_matrix_and_points():
    translation, rotation, scale, corners = double(2, 2, low=-5, high=5), double(2, low=-10, high=10), double(2, low=0.8, high=1.2), double(2, 4, 2, low=-4, high=4)
    assert torch.autograd.gradcheck(lambda t, r, s, c: warp_matrix(t, r, s, c, 20, 16), (translation, rotation, scale, corners))

    points, matrix = double(2, 5, 2, low=2, high=14), double(2, 3, 3, low=-0.1, high=0.1)
    matrix_base = torch.eye(3, dtype=torch.float64)
    grids = double(2, 2, 3, 4, low=-1, high=1)
    entry = torch.tensor([1, 0])

    def warp(p, m, g):
        return warp_points(p, matrix_base + m, g, entry, (-4.0, -4.0, 23.0, 19.0))

    assert torch.autograd.gradcheck(warp, (points, matrix, grids))


def test_gradcheck_interpolation_and_atlas_reads():
    nodes, points = double(3, 2, 4, 5), double(3, 6, 2, low=1, high=9)
    entry = torch.tensor([2, 0, 1])
    assert torch.autograd.gradcheck(lambda n, p: interpolate_nodes(n, p, entry, (0.0, 0.0, 10.0, 10.0)), (nodes, points))

    atlas = double(1, 3, 3 * 5, 6, low=0, high=1)
    local = double(2, 7, 2, low=-0.9, high=0.9)
    assert torch.autograd.gradcheck(lambda a, c: read_atlas(a, to_atlas(c, torch.tensor([2, 1]), a, 5)), (atlas, local))


@pytest.mark.parametrize("threads", [2, 3])
def test_atlas_reads_dealt_over_threads_equal_one_read(threads, monkeypatch):
    # 14 points over 3 threads pads the last part: the padding must not show in values or gradients.
    monkeypatch.setattr(warp, "_POINTS_PER_PART", 1)
    atlas = double(1, 3, 3 * 5, 6, low=0, high=1).detach()
    local = double(2, 7, 2, low=-0.9, high=0.9)
    weights = double(3, 2, 7)

    def read(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        previous = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            values = read_atlas(atlas, to_atlas(local, torch.tensor([2, 1]), atlas, 5))
            return values.detach(), torch.autograd.grad((values * weights).sum(), local)[0]
        finally:
            torch.set_num_threads(previous)

    for single, dealt in zip(read(1), read(threads)):
        assert torch.equal(single, dealt)


def test_an_atlas_that_takes_a_gradient_is_dealt_only_while_its_gradients_fit_in_the_reads(monkeypatch):
    # Dealt over threads, its backward fills one atlas-sized gradient per entry.
    monkeypatch.setattr(warp, "_POINTS_PER_PART", 1)
    batches = []
    grid_sample = F.grid_sample

    def counting_grid_sample(source: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        batches.append(len(source))
        return grid_sample(source, *args, **kwargs)

    monkeypatch.setattr(warp.F, "grid_sample", counting_grid_sample)
    coords = torch.zeros(4, 9, 2)  # 36 points
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        read_atlas(torch.rand(1, 2, 6, 6), coords)
        read_atlas(torch.rand(1, 2, 6, 6, requires_grad=True), coords)  # 36 values per channel: one entry
        read_atlas(torch.rand(1, 2, 3, 6, requires_grad=True), coords)  # 18: two entries
    finally:
        torch.set_num_threads(previous)
    assert batches == [2, 1, 2]


def test_an_atlas_read_of_no_points_is_empty():
    atlas = torch.rand(1, 3, 10, 6)
    assert read_atlas(atlas, torch.zeros(0, 256, 2)).shape == (3, 0, 256)


def fragments_for(blocks: list[int], slots: list[int]) -> Fragments:
    block, slot = torch.tensor(blocks), torch.tensor(slots)
    return Fragments(layer=slot, block=block, slot=slot, local_block=block)


def test_gradcheck_composition():
    fragments = fragments_for([0, 0, 1, 1], [1, 2, 1, 3])
    masks, depth, background_depth = double(4, 5, low=0, high=1), double(4, low=1, high=12), double(2, low=1, high=6)
    assert torch.autograd.gradcheck(lambda m, d, b: softmax_weights(m, d, b, fragments, 2), (masks, depth, background_depth))
    assert torch.autograd.gradcheck(lambda m: alpha_weights(m, fragments, 2, 4), (double(4, 5, low=0.05, high=0.95),))


def test_composition_weights_follow_the_formulas():
    fragments = fragments_for([0, 0], [1, 2])
    masks = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    background, weights = softmax_weights(masks, torch.tensor([12.0, 18.0]), torch.tensor([6.0]), fragments, 1)
    total = torch.exp(torch.tensor(6.0)) + torch.exp(torch.tensor(12.0)) + torch.exp(torch.tensor(18.0))
    assert torch.allclose(weights[1, 0], torch.exp(torch.tensor(18.0)) / total)
    assert torch.allclose(weights[0, 1], 1 / (1 + torch.exp(torch.tensor(-6.0))))
    assert torch.allclose(background[0], torch.tensor([6.0, 6.0, 6.0]).exp() / torch.stack([total, torch.exp(torch.tensor(6.0)) + torch.exp(torch.tensor(12.0)), torch.exp(torch.tensor(6.0))]))
    assert torch.allclose(background + weights.sum(0), torch.ones(1, 3))

    half = torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.5, 0.0]])
    background, weights = alpha_weights(half, fragments, 1, 3)
    assert torch.allclose(weights, torch.tensor([[0.5, 0.25, 0.0], [0.5, 0.5, 0.0]]))
    assert torch.allclose(background, torch.tensor([[0.0, 0.25, 1.0]]), atol=1e-6)


def test_gradcheck_through_a_whole_tiny_render(bank):
    tiny = config(width=16, height=16, canvas_margin=8, num_layers=(1, 1), blur_prob=0.0, fog_prob=0.0, noise_prob=0.0)
    params = sample_params(tiny, bank, seed=4, indices=[0]).to(dtype=torch.float64)

    def flow_and_image(anchor_translation, flow_translation, layer_rotation):
        changed = dataclasses.replace(params, anchor_translation=anchor_translation, flow_translation=flow_translation, layer_rotation=layer_rotation)
        out = render(changed, bank, tiny)
        return out.flow, out.img1, out.img2

    inputs = (params.anchor_translation.clone().requires_grad_(), params.flow_translation.clone().requires_grad_(), params.layer_rotation.clone().requires_grad_())
    # fast_mode checks the Jacobian along random directions: one backward pass instead of one per output.
    assert torch.autograd.gradcheck(flow_and_image, inputs, atol=1e-5, fast_mode=True)
