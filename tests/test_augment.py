"""RAFT-style augmentation: geometry keeps img1(p) ≈ img2(p + F(p)), sparse flow is moved not blended."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from dflowgen.data.augment import FlowAugmentor, resize_sparse_flow, to_tensors
from dflowgen.data.sample import FlowPair

HEIGHT, WIDTH = 48, 64
SHIFT_X, SHIFT_Y = 3, 2


def translated_pair(height: int = HEIGHT, width: int = WIDTH) -> FlowPair:
    """img2 is img1 moved by (SHIFT_X, SHIFT_Y): img1(p) = img2(p + F) for a constant F."""
    texture = np.random.default_rng(0).integers(0, 256, (height + 10, width + 10, 3), dtype=np.uint8)
    img1 = texture[5:5 + height, 5:5 + width]
    img2 = texture[5 - SHIFT_Y:5 - SHIFT_Y + height, 5 - SHIFT_X:5 - SHIFT_X + width]
    flow = np.broadcast_to(np.array([SHIFT_X, SHIFT_Y], np.float32), (height, width, 2)).copy()
    return FlowPair(img1.copy(), img2.copy(), flow, None, "translated")


def geometry_only(crop_size=(HEIGHT, WIDTH), **options) -> FlowAugmentor:
    """No colour changes, no random zoom, no flips unless asked."""
    defaults = dict(photometric=False, eraser=False, do_flip=False, spatial_prob=0.0, stretch_prob=0.0)
    return FlowAugmentor(crop_size, **{**defaults, **options})


def assert_consistent(sample: dict, atol: float = 1e-3) -> None:
    """img1(p) == img2(p + F(p)) wherever p + F(p) lies inside the crop (F is integer here)."""
    flow = sample["flow"].round().long()
    height, width = flow.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    target_x, target_y = xs + flow[0], ys + flow[1]
    inside = (target_x >= 0) & (target_x < width) & (target_y >= 0) & (target_y < height)
    assert inside.float().mean() > 0.5
    warped = sample["img2"][:, target_y[inside], target_x[inside]]
    torch.testing.assert_close(sample["img1"][:, inside], warped, atol=atol, rtol=0)


def test_identity_geometry_returns_the_pair_as_tensors():
    pair = translated_pair()
    sample = geometry_only()(pair, np.random.default_rng(0))
    assert sample["img1"].shape == (3, HEIGHT, WIDTH) and sample["img1"].dtype == torch.float32
    torch.testing.assert_close(sample["img1"], torch.from_numpy(pair.img1).permute(2, 0, 1).float())
    assert (sample["valid"] == 1).all() and sample["valid"].shape == (HEIGHT, WIDTH)
    assert_consistent(sample)


@pytest.mark.parametrize("flip, expected", [("h_flip_prob", (-SHIFT_X, SHIFT_Y)), ("v_flip_prob", (SHIFT_X, -SHIFT_Y))])
def test_flip_negates_the_matching_component(flip, expected):
    augment = geometry_only(do_flip=True, **{"h_flip_prob": 0.0, "v_flip_prob": 0.0, flip: 1.0})
    sample = augment(translated_pair(), np.random.default_rng(1))
    expected_flow = torch.tensor(expected, dtype=torch.float32).view(2, 1, 1).expand(2, HEIGHT, WIDTH)
    torch.testing.assert_close(sample["flow"], expected_flow)
    assert_consistent(sample)


def test_scale_multiplies_flow_by_the_zoom():
    augment = geometry_only(crop_size=(64, 96), min_scale=1.0, max_scale=1.0, spatial_prob=1.0)
    sample = augment(translated_pair(), np.random.default_rng(2))  # zoom 2: 48×64 → 96×128, then crop
    assert sample["flow"].shape == (2, 64, 96)
    torch.testing.assert_close(sample["flow"][0], torch.full((64, 96), 2.0 * SHIFT_X))
    torch.testing.assert_close(sample["flow"][1], torch.full((64, 96), 2.0 * SHIFT_Y))
    assert_consistent(sample)


def test_stretch_scales_each_axis_by_its_own_factor():
    augment = geometry_only(crop_size=(32, 32), min_scale=0.0, max_scale=0.0, spatial_prob=1.0, stretch_prob=1.0)
    ratios = set()
    for seed in range(4):
        flow = augment(translated_pair(), np.random.default_rng(seed))["flow"]
        ratios.add(round(float(flow[0].mean() / SHIFT_X) / float(flow[1].mean() / SHIFT_Y), 3))
    assert len(ratios) > 1 and all(2 ** -0.41 < r < 2 ** 0.41 for r in ratios)


@pytest.mark.parametrize("crop_size", [(32, 48), (48, 64), (80, 120), (16, 200)])
def test_crop_has_the_requested_size_even_when_the_image_is_smaller(crop_size):
    for sparse in (False, True):
        for seed in range(3):
            sample = FlowAugmentor(crop_size, sparse=sparse)(translated_pair(), np.random.default_rng(seed))
            assert sample["img1"].shape == sample["img2"].shape == (3, *crop_size)
            assert sample["flow"].shape == (2, *crop_size) and sample["valid"].shape == crop_size
            assert 0.0 <= float(sample["img1"].min()) and float(sample["img1"].max()) <= 255.0


def test_same_seed_same_sample_other_seed_other_sample():
    augment = FlowAugmentor((32, 48))
    pair = translated_pair()
    first, again = augment(pair, np.random.default_rng(5)), augment(pair, np.random.default_rng(5))
    assert all(torch.equal(first[key], again[key]) for key in first)
    other = augment(pair, np.random.default_rng(6))
    assert not torch.equal(first["img1"], other["img1"])


def test_symmetric_jitter_treats_both_frames_alike():
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    pair = FlowPair(image, image.copy(), None, None, "same")
    same = geometry_only(photometric=True, asymmetric_prob=0.0)(pair, np.random.default_rng(0))
    torch.testing.assert_close(same["img1"], same["img2"])
    assert (same["img1"] - torch.from_numpy(image).permute(2, 0, 1)).abs().max() > 1.0
    different = geometry_only(photometric=True, asymmetric_prob=1.0)(pair, np.random.default_rng(0))
    assert (different["img1"] - different["img2"]).abs().max() > 1.0


def test_eraser_paints_img2_with_its_mean_colour():
    pair = translated_pair()
    mean_colour = torch.from_numpy(pair.img2).float().mean(dim=(0, 1)).view(3, 1, 1)
    masks = []
    for seed in range(2):
        sample = geometry_only(eraser=True, eraser_prob=1.0, eraser_size=(10, 11))(pair, np.random.default_rng(seed))
        torch.testing.assert_close(sample["img1"], torch.from_numpy(pair.img1).permute(2, 0, 1).float())
        painted = (sample["img2"] - mean_colour).abs().amax(dim=0) < 1e-3
        assert 6 * 6 <= int(painted.sum()) <= 2 * 10 * 10  # a box may be cut by the image border
        masks.append(painted)
    assert not torch.equal(masks[0], masks[1])


def test_hue_jitter_rotates_colours_but_keeps_value_and_saturation():
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    pair = FlowPair(image, image.copy(), None, None, "hue")
    augment = geometry_only(photometric=True, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5)
    jittered = augment(pair, np.random.default_rng(0))["img1"]
    original = torch.from_numpy(image).permute(2, 0, 1).float()
    assert (jittered - original).abs().max() > 10
    torch.testing.assert_close(jittered.amax(dim=0), original.amax(dim=0), atol=0.05, rtol=0)
    torch.testing.assert_close(jittered.amin(dim=0), original.amin(dim=0), atol=0.05, rtol=0)


def test_unlabelled_pairs_get_zero_flow_and_no_valid_pixel():
    pair = translated_pair()._replace(flow=None)
    sample = FlowAugmentor((32, 32))(pair, np.random.default_rng(0))
    assert sample["flow"].shape == (2, 32, 32) and not sample["flow"].any() and not sample["valid"].any()


def test_dense_resize_keeps_invalid_flow_out_of_valid_pixels():
    pair = translated_pair()
    valid = np.ones((HEIGHT, WIDTH), bool)
    valid[:, 20:30] = False
    flow = pair.flow.copy()
    flow[~valid] = 1e6  # garbage where the flow is unknown
    sample = geometry_only(crop_size=(40, 40), min_scale=0.3, max_scale=0.3, spatial_prob=1.0)(
        pair._replace(flow=flow, valid=valid), np.random.default_rng(0))
    kept = sample["valid"] > 0
    assert 0 < kept.float().mean() < 1
    zoom_x, zoom_y = round(WIDTH * 2**0.3) / WIDTH, round(HEIGHT * 2**0.3) / HEIGHT
    torch.testing.assert_close(sample["flow"][0][kept], torch.full((int(kept.sum()),), SHIFT_X * zoom_x))
    torch.testing.assert_close(sample["flow"][1][kept], torch.full((int(kept.sum()),), SHIFT_Y * zoom_y))
    assert not sample["flow"][:, ~kept].any()


def test_sparse_resize_moves_valid_points_and_scales_their_flow():
    flow = torch.zeros(2, 10, 10)
    valid = torch.zeros(10, 10, dtype=torch.bool)
    flow[:, 2, 3], valid[2, 3] = torch.tensor([1.0, -2.0]), True
    flow[:, 7, 8], valid[7, 8] = torch.tensor([4.0, 5.0]), True
    flow[:, 5, 5] = 1000.0  # invalid: must not move anywhere
    out_flow, out_valid = resize_sparse_flow(flow, valid, (15, 25))  # ×2.5 in x, ×1.5 in y
    assert out_valid.sum() == 2
    # pixel centres move as (p + 0.5)·s − 0.5: x 3 → 8.25, 8 → 20.75; y 2 → 3.25, 7 → 10.75
    assert out_valid[3, 8] and out_valid[11, 21]
    torch.testing.assert_close(out_flow[:, 3, 8], torch.tensor([2.5, -3.0]))
    torch.testing.assert_close(out_flow[:, 11, 21], torch.tensor([10.0, 7.5]))
    assert not out_flow[:, ~out_valid].any()


def test_sparse_augmentor_never_interpolates_flow():
    pair = translated_pair()
    rng = np.random.default_rng(3)
    valid = rng.random((HEIGHT, WIDTH)) < 0.2
    flow = rng.integers(-5, 6, (HEIGHT, WIDTH, 2)).astype(np.float32)
    flow[~valid] = 999.0
    augment = FlowAugmentor((40, 60), min_scale=np.log2(1.5), max_scale=np.log2(1.5), sparse=True,
                            photometric=False, eraser=False, do_flip=False, spatial_prob=1.0)
    sample = augment(pair._replace(flow=flow, valid=valid), np.random.default_rng(0))
    kept = sample["valid"] > 0
    assert 0 < int(kept.sum()) <= int(valid.sum())
    allowed = set((np.arange(-5, 6) * 1.5).tolist())  # zoom 1.5 exactly: 48×64 → 72×96
    assert set(sample["flow"][:, kept].flatten().tolist()) <= allowed


def test_to_tensors_marks_non_finite_flow_invalid():
    pair = translated_pair()
    flow = pair.flow.copy()
    flow[0, 0] = np.nan
    sample = to_tensors(pair._replace(flow=flow))
    assert sample["valid"][0, 0] == 0 and sample["valid"].sum() == HEIGHT * WIDTH - 1
    assert torch.isfinite(sample["flow"]).all()


def test_hue_range_is_a_fraction_of_the_colour_circle():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    red[..., 1] = 40
    pair = FlowPair(red, red.copy(), None, None, "red")
    augment = geometry_only(crop_size=(8, 8), photometric=True, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.1)
    hue_before = colorsys.rgb_to_hsv(*(red[0, 0] / 255.0))[0]
    shifts = []
    for seed in range(8):
        colour = augment(pair, np.random.default_rng(seed))["img1"][:, 0, 0].numpy() / 255.0
        shift = (colorsys.rgb_to_hsv(*colour)[0] - hue_before + 0.5) % 1.0 - 0.5
        shifts.append(abs(shift))
    assert max(shifts) <= 0.1 + 1e-3 and max(shifts) > 0.06  # up to ±10 % of the circle, i.e. ±36°
