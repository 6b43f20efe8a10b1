"""The renderer's geometry: flow must agree exactly with how the two frames were made."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.render import RenderConfig, SceneParams, WarpRanges, render, sample_params
from dflowgen.render.raster import BlockGrid

SMALL_MOTION = WarpRanges(translation=(-6.0, 6.0), rotation_deg=(-3.0, 3.0), scale=(0.95, 1.05), perspective=(-3.0, 3.0))


def tiny_config(**changes) -> RenderConfig:
    """64×48 frames, a few layers, small motions, no photometric effects."""
    settings = dict(
        width=64,
        height=48,
        canvas_margin=16,
        num_layers=(2, 3),
        object_size=(0.3, 0.6),
        layer_warp=SMALL_MOTION,
        anchor_warp=SMALL_MOTION,
        layer_translation=(-4.0, 4.0),
        grid_size=(3, 4),
        noise_prob=0.0,
        fog_prob=0.0,
        blur_prob=0.0,
    )
    settings.update(changes)
    return RenderConfig(**settings)


@pytest.fixture(scope="module")
def bank():
    return load_layer_bank(size=tiny_config().canvas_size)


@pytest.fixture(scope="module")
def smooth_bank(bank):
    """Slowly varying textures: bilinear reads of them are nearly exact, so any error is geometry."""
    width, height = tiny_config().canvas_size
    coarse = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    textures = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True).clamp(0, 1)
    return LayerBank.from_tensors(textures, bank.masks)


def still_anchor(params: SceneParams) -> SceneParams:
    """The same scene with the anchor field set to the identity and no layer translations."""
    return dataclasses.replace(
        params,
        anchor_translation=torch.zeros_like(params.anchor_translation),
        anchor_rotation=torch.zeros_like(params.anchor_rotation),
        anchor_scale=torch.ones_like(params.anchor_scale),
        anchor_corners=torch.zeros_like(params.anchor_corners),
        anchor_grid=torch.zeros_like(params.anchor_grid),
        flow_translation=torch.zeros_like(params.flow_translation),
    )


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (frame 2) read at ``p + flow(p)``: frame 1 as the flow predicts it."""
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=flow.dtype), torch.arange(width, dtype=flow.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2 / (width - 1)) - 1
    y = (ys + flow[:, 1]) * (2 / (height - 1)) - 1
    return F.grid_sample(image, torch.stack([x, y], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


@pytest.mark.parametrize("shift", [(3.0, -2.0), (2.25, 1.5)])
def test_a_translated_layer_has_exactly_that_flow(bank, shift):
    config = tiny_config(num_layers=(1, 1))
    params = still_anchor(sample_params(config, bank, seed=3, indices=[0, 1, 2]))
    params.flow_translation[:, 1] = torch.tensor(shift)
    out = render(params, bank, config)

    valid = out.valid[:, 0] > 0
    flow = out.flow.permute(0, 2, 3, 1)[valid]
    still = flow.abs().amax(dim=1) < 1e-5
    moved = (flow - torch.tensor(shift)).abs().amax(dim=1) < 1e-5
    assert bool((still | moved).all()), "valid flow must be exactly 0 (background) or the layer's translation"
    assert moved.sum() > 200 and still.sum() > 200
    assert valid.float().mean() > 0.5


def test_an_anchor_translation_moves_every_layer_with_the_same_flow(bank):
    config = tiny_config()
    params = still_anchor(sample_params(config, bank, seed=5, indices=[0, 1]))
    params.anchor_translation[:] = torch.tensor([4.0, -3.0])
    out = render(params, bank, config)

    valid, occ = out.valid[:, 0] > 0, out.occ[:, 0] > 0
    assert (out.flow.permute(0, 2, 3, 1)[valid] - torch.tensor([4.0, -3.0])).abs().max() < 1e-4
    # Every layer moves alike: nothing is hidden, only mixed edges and pixels that leave are occ.
    assert valid.float().mean() > 0.99
    assert occ[:, :3].all() and occ[:, :, -4:].all()
    assert (~occ[:, 3:, :-4]).float().mean() > 0.8
    predicted = backward_warp(out.img2, out.flow)
    assert (predicted - out.img1).abs().permute(0, 2, 3, 1)[~occ].max() < 1e-3


def test_a_layer_that_leaves_the_frame_keeps_its_label(bank):
    config = tiny_config()
    params = still_anchor(sample_params(config, bank, seed=5, indices=[0, 1]))
    params.anchor_translation[:] = torch.tensor([10.0, 0.0])
    out = render(params, bank, config)
    leaving = torch.zeros(2, 48, 64, dtype=torch.bool)
    leaving[:, :, 64 - 10 :] = True  # x + 10 > 63: outside frame 2
    assert bool(out.valid[:, 0][leaving].all()), "points that leave frame 2 must keep their flow label"
    assert bool((out.occ[:, 0][leaving] == 1).all()), "and be marked as leaving (occ)"
    flow = out.flow.permute(0, 2, 3, 1)[leaving]
    assert (flow - torch.tensor([10.0, 0.0])).abs().max() < 1e-4


def test_a_layer_that_slides_behind_another_keeps_its_own_motion(bank):
    config = tiny_config(num_layers=(2, 2), object_size=(0.7, 0.9))
    params = still_anchor(sample_params(config, bank, seed=1, indices=range(4)))
    # The lower foreground (slot 1) slides right under the upper one (slot 2), which stays still.
    params.flow_translation[:, 1] = torch.tensor([6.0, 0.0])
    out = render(params, bank, config)
    valid, occ = out.valid[:, 0] > 0, out.occ[:, 0] > 0
    flow = out.flow.permute(0, 2, 3, 1)
    sliding = (flow - torch.tensor([6.0, 0.0])).abs().amax(dim=-1) < 1e-4
    still = flow.abs().amax(dim=-1) < 1e-4
    assert bool((sliding | still)[valid].all()), "every labelled pixel has its own layer's motion, 0 or (6, 0)"
    xs = torch.arange(64)
    hidden = sliding & occ & valid & (xs + 6 <= 63)  # inside frame 2, yet not seen there: behind the still layer
    assert hidden.sum() > 50, "the sliding layer must be labelled where it goes behind the still one"
    assert valid.float().mean() > 0.97


@pytest.mark.parametrize(
    "bank_name, mean_bound, max_bound",
    [
        # Smooth textures: what is left is the e^-c share softmax gives the layer under the
        # winner (measured mean 1.7e-4, max 4.0e-3).
        ("smooth_bank", 5e-4, 0.01),
        # Photographs: bilinear interpolation of img2's texture dominates (measured mean 8.8e-3).
        ("bank", 0.015, 0.5),
    ],
)
def test_backward_warping_frame_2_by_the_flow_reproduces_frame_1(request, bank_name, mean_bound, max_bound):
    bank = request.getfixturevalue(bank_name)
    config = tiny_config()
    params = sample_params(config, bank, seed=11, indices=range(6))
    out = render(params, bank, config)
    seen = (out.valid[:, 0] > 0) & (out.occ[:, 0] == 0)
    assert seen.float().mean() > 0.5

    error = (backward_warp(out.img2, out.flow) - out.img1).abs().mean(dim=1)[seen]
    assert error.mean() < mean_bound
    assert error.max() < max_bound
    # A flow half a pixel off must do clearly worse, or this test could not fail.
    shifted = (backward_warp(out.img2, out.flow + 0.5) - out.img1).abs().mean(dim=1)[seen]
    assert shifted.mean() > 2 * error.mean()


def test_occ_marks_where_frame_2_does_not_show_the_point(bank):
    config = tiny_config(layer_translation=(-10.0, 10.0))
    params = sample_params(config, bank, seed=2, indices=range(4))
    out = render(params, bank, config)
    occ = out.occ[:, 0] > 0
    # Almost every pixel is labelled, and the occluded set is where backward warping fails.
    assert out.valid.mean() > 0.97
    error = (backward_warp(out.img2, out.flow) - out.img1).abs().mean(dim=1)
    assert occ.any()
    assert error[occ].mean() > 3 * error[~occ].mean()


def test_culling_blocks_changes_nothing(bank, monkeypatch):
    config = tiny_config(noise_prob=1.0, fog_prob=1.0, blur_prob=1.0)
    params = sample_params(config, bank, seed=4, indices=range(3))
    culled = render(params, bank, config)
    monkeypatch.setattr(BlockGrid, "covered", lambda self, corners, slack, extent: torch.ones(corners.shape[0], self.per_sample, dtype=torch.bool))
    everything = render(params, bank, config)
    for name in ("img1", "img2", "flow", "valid", "occ"):
        assert torch.allclose(getattr(culled, name), getattr(everything, name), atol=1e-5), name


def test_effects_change_pixels_but_not_the_flow(bank):
    config = tiny_config(noise_prob=1.0, fog_prob=1.0, blur_prob=1.0, white_balance_prob=1.0, noise_init=(-0.05, 0.05))
    params = sample_params(config, bank, seed=8, indices=range(3))
    plain = dataclasses.replace(
        params,
        noise_on=torch.zeros_like(params.noise_on),
        fog_on=torch.zeros_like(params.fog_on),
        blur_on=torch.zeros_like(params.blur_on),
        white_balance_on=torch.zeros_like(params.white_balance_on),
    )
    with_effects, without = render(params, bank, config), render(plain, bank, config)
    assert torch.equal(with_effects.flow, without.flow)
    assert torch.equal(with_effects.valid, without.valid) and torch.equal(with_effects.occ, without.occ)
    assert (with_effects.img1 - without.img1).abs().mean() > 0.01
    assert with_effects.effects["fog"].tolist() == [1.0, 1.0, 1.0]
    assert without.effects["blur"].tolist() == [0.0, 0.0, 0.0]


def test_alpha_composition_renders_consistent_pairs(bank):
    config = tiny_config(composition="alpha")
    params = sample_params(config, bank, seed=11, indices=range(4))
    out = render(params, bank, config)
    seen = (out.valid[:, 0] > 0) & (out.occ[:, 0] == 0)
    assert out.valid.mean() > 0.97 and seen.float().mean() > 0.4
    assert 0.0 <= float(out.img1.min()) and float(out.img1.max()) <= 1.0
    error = (backward_warp(out.img2, out.flow) - out.img1).abs().mean(dim=1)[seen]
    assert error.mean() < 0.012
    softmax = render(params, bank, dataclasses.replace(config, composition="softmax"))
    assert not torch.allclose(softmax.img1, out.img1)
