"""Augmented copies: exact flow after zoom/stretch/crop/flip, identity when off, per-sample randomness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dflowgen.optimize.copies import augment_copies, draw_copy_transforms, rotate_hue
from dflowgen.optimize.config import CopyAugmentConfig
from dflowgen.seeding import sample_generator

HEIGHT, WIDTH = 48, 64
NO_AUGMENTATION = CopyAugmentConfig(
    min_scale=0.0, max_scale=0.0, stretch_prob=0.0, hflip_prob=0.0, vflip_prob=0.0,
    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
)
STRONG = CopyAugmentConfig(
    min_scale=0.1, max_scale=0.6, stretch_prob=1.0, max_stretch=0.3, hflip_prob=0.5, vflip_prob=0.5
)


def smooth_picture(x: torch.Tensor, y: torch.Tensor, phase: float) -> torch.Tensor:
    """``3×…`` colours in [0.3, 0.7], varying over ~20 px: bilinear reads of it are nearly exact."""
    return torch.stack(
        [0.5 + 0.1 * torch.sin(0.21 * x + 0.5 * c + phase) + 0.1 * torch.cos(0.17 * y - 0.3 * c) for c in range(3)]
    )


def pixel_grid(height: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")


def scene(batch: int = 2):
    """Pairs with an analytic flow: img1(p) = img2(p + F(p)) exactly, on every pixel."""
    ys, xs = pixel_grid(HEIGHT, WIDTH, torch.float32)
    img1, img2, flows = [], [], []
    for b in range(batch):
        flow = torch.stack([2.0 + 1.5 * torch.sin(ys / 9.0 + b), -1.0 + 0.04 * (xs - 32.0) + 0.5 * b])
        img2.append(smooth_picture(xs, ys, phase=b))
        img1.append(smooth_picture(xs + flow[0], ys + flow[1], phase=b))
        flows.append(flow)
    img1, img2, flow = torch.stack(img1), torch.stack(img2), torch.stack(flows)
    land_x, land_y = xs + flow[:, 0], ys + flow[:, 1]
    valid = ((land_x >= 0) & (land_x <= WIDTH - 1) & (land_y >= 0) & (land_y <= HEIGHT - 1))[:, None].float()
    return img1, img2, flow, valid


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` read at ``p + flow(p)`` (bilinear): ≈ frame 1 when ``image`` is frame 2 and ``flow`` is right."""
    _, _, height, width = image.shape
    ys, xs = pixel_grid(height, width, flow.dtype)
    grid_x = 2.0 * (xs + flow[:, 0]) / (width - 1) - 1.0
    grid_y = 2.0 * (ys + flow[:, 1]) / (height - 1) - 1.0
    return F.grid_sample(image, torch.stack([grid_x, grid_y], dim=-1), align_corners=True)


def draw(config: CopyAugmentConfig, indices=(0, 1), copies: int = 4, seed: int = 0):
    generators = [sample_generator(seed, index, "optimize") for index in indices]
    return draw_copy_transforms(generators, copies, (WIDTH, HEIGHT), config)


def lands_inside(flow: torch.Tensor) -> torch.Tensor:
    """``n×1×H×W`` 0/1: where ``p + flow(p)`` lies inside the frame (a backward warp can check only there)."""
    ys, xs = pixel_grid(HEIGHT, WIDTH, flow.dtype)
    land_x, land_y = xs + flow[:, 0], ys + flow[:, 1]
    return ((land_x >= 0) & (land_x <= WIDTH - 1) & (land_y >= 0) & (land_y <= HEIGHT - 1))[:, None].float()


def warp_error(copies, flow: torch.Tensor) -> torch.Tensor:
    mask = copies.valid * lands_inside(copies.flow)
    return ((backward_warp(copies.img2, flow) - copies.img1).abs() * mask).sum() / (3 * mask.sum())


@pytest.mark.parametrize("config", [STRONG, CopyAugmentConfig()], ids=["strong-geometry", "defaults"])
def test_copied_flow_is_exact(config):
    img1, img2, flow, valid = scene()
    transforms = draw(config, copies=8)
    assert transforms.flip[:, 0].any() and transforms.flip[:, 0].logical_not().any()
    assert (transforms.zoom > 1.05).any()
    copies = augment_copies(img1, img2, flow, valid, transforms)
    assert copies.img1.shape == (16, 3, HEIGHT, WIDTH) and copies.valid.shape == (16, 1, HEIGHT, WIDTH)
    assert copies.valid.mean() > 0.5
    error = warp_error(copies, copies.flow)
    assert error < 0.002
    # The same check fails for a flow that is only resampled, not rescaled and sign-flipped.
    signed_zoom = torch.where(transforms.flip, -transforms.zoom, transforms.zoom)
    raw_flow = copies.flow / signed_zoom[:, :, None, None]
    assert warp_error(copies, raw_flow) > 20 * error


def test_flow_landing_outside_the_copy_keeps_its_label():
    img1, img2, flow, _ = scene(batch=1)
    labelled = torch.ones_like(flow[:, :1])
    copies = augment_copies(img1, img2, flow, labelled, draw(STRONG, indices=(3,), copies=6))
    outside = lands_inside(copies.flow)[:, 0] == 0
    assert outside.any()
    assert (copies.valid[:, 0][outside] == 1).all()
    # Only a read that touches an unlabelled pixel loses the label.
    holed = labelled.clone()
    holed[..., 20:24, 30:34] = 0
    assert augment_copies(img1, img2, flow, holed, draw(NO_AUGMENTATION, indices=(3,), copies=1)).valid.sum() == (
        HEIGHT * WIDTH - 16
    )


def test_no_augmentation_is_the_identity():
    img1, img2, flow, valid = scene()
    transforms = draw(NO_AUGMENTATION, copies=3)
    copies = augment_copies(img1, img2, flow, valid, transforms)
    for copied, original in ((copies.img1, img1), (copies.img2, img2), (copies.flow, flow), (copies.valid, valid)):
        assert torch.allclose(copied, original.repeat_interleave(3, dim=0), atol=1e-5)


def test_colour_jitter_is_the_same_in_both_frames():
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    colour_only = CopyAugmentConfig(min_scale=0.0, max_scale=0.0, stretch_prob=0.0, hflip_prob=0.0, vflip_prob=0.0)
    copies = augment_copies(image, image.clone(), torch.zeros(1, 2, HEIGHT, WIDTH), torch.ones(1, 1, HEIGHT, WIDTH),
                            draw(colour_only, indices=(0,), copies=4))
    assert torch.allclose(copies.img1, copies.img2, atol=1e-6)
    assert (copies.img1 - image).abs().mean() > 0.01


def test_a_samples_copies_do_not_depend_on_its_batch_mates():
    together = draw(CopyAugmentConfig(), indices=(5, 9))
    alone = draw(CopyAugmentConfig(), indices=(9,))
    for name in together.__dataclass_fields__:
        assert torch.equal(getattr(together, name)[4:], getattr(alone, name)), name
    assert not torch.equal(together.zoom[:4], together.zoom[4:])


def test_draws_follow_the_ranges():
    config = CopyAugmentConfig(min_scale=0.2, max_scale=0.5, stretch_prob=0.0, brightness=0.3, hue=0.1)
    transforms = draw(config, indices=range(8), copies=8)
    assert (transforms.zoom >= 2**0.2 - 1e-6).all() and (transforms.zoom <= 2**0.5 + 1e-6).all()
    assert torch.equal(transforms.zoom[:, 0], transforms.zoom[:, 1])
    frame = torch.tensor([WIDTH, HEIGHT], dtype=torch.float32)
    assert (transforms.offset >= 0).all() and (transforms.offset <= (transforms.zoom - 1) * frame + 1e-4).all()
    assert (transforms.brightness >= 0.7).all() and (transforms.brightness <= 1.3).all()
    assert transforms.hue.abs().max() <= 0.1
    assert math.isclose(transforms.flip[:, 0].float().mean().item(), 0.5, abs_tol=0.2)


def test_gradients_reach_the_images_and_the_flow():
    img1, img2, flow, valid = scene()
    inputs = [tensor.clone().requires_grad_() for tensor in (img1, img2, flow)]
    copies = augment_copies(*inputs, valid, draw(CopyAugmentConfig(), copies=2))
    (copies.img1.square().sum() + copies.img2.sum() + (copies.flow * copies.valid).square().sum()).backward()
    for tensor in inputs:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_hue_rotation_keeps_greys_luma_and_a_full_turn():
    generator = torch.Generator().manual_seed(2)
    colours = 0.4 + 0.2 * torch.rand(3, 3, 8, 8, generator=generator)
    grey = torch.rand(3, 1, 8, 8, generator=generator).expand(3, 3, 8, 8)
    turns = torch.tensor([0.05, -0.12, 0.3])
    shifted = rotate_hue(colours, turns)
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    assert torch.allclose((shifted * luma).sum(1), (colours * luma).sum(1), atol=1e-5)
    assert (shifted - colours).abs().mean() > 0.005
    assert torch.allclose(rotate_hue(grey, turns), grey, atol=1e-5)
    assert torch.allclose(rotate_hue(colours, torch.ones(3)), colours, atol=1e-5)
