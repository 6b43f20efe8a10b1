"""DFlow objective pieces: task-loss forms, proxy losses, regularisers, frozen proxies, settings."""

from __future__ import annotations

import math

import pytest
import torch

from dflowgen.assets import load_layer_bank
from dflowgen.errors import DflowgenError
from dflowgen.models.raft import build_raft
from dflowgen.optimize.config import TASK_LOSS_FORMS, OptimizeConfig
from dflowgen.optimize.objective import proxy_losses, task_loss, task_loss_per_copy
from dflowgen.optimize.proxies import load_proxies, load_proxy
from dflowgen.optimize.regularisers import anchor_lattice, fold_over_hinge, noise_l1
from dflowgen.render import RenderConfig, WarpRanges, sample_params

STILL = WarpRanges(translation=(0.0, 0.0), rotation_deg=(0.0, 0.0), scale=(1.0, 1.0), perspective=(0.0, 0.0))


def render_config(**changes) -> RenderConfig:
    settings = dict(width=64, height=48, canvas_margin=16, num_layers=(2, 3), grid_size=(3, 3), blur_kernel_size=9)
    settings.update(changes)
    return RenderConfig(**settings)


@pytest.fixture(scope="module")
def bank():
    return load_layer_bank(size=render_config().canvas_size)


def expected_task_loss(form: str, target: float, base: float, alpha: float, beta: float, gamma: float) -> float:
    ratio = base / (target + 1e-6)
    gate = {
        "exp": math.exp(-beta * ratio + gamma),
        "sigmoid": 1.0 / (1.0 + math.exp(beta * ratio - gamma)),
        "tanh": 1.0 - math.tanh(beta * ratio - gamma),
    }[form.split("-")[1]]
    return target + alpha * gate if form.startswith("add") else alpha * target * gate


@pytest.mark.parametrize("form", TASK_LOSS_FORMS)
def test_task_loss_forms_follow_their_formulas(form):
    target = torch.tensor([2.0, 0.5, 7.0], dtype=torch.float64)
    base = torch.tensor([3.0, 4.0, 1.0], dtype=torch.float64)
    values = task_loss_per_copy(form, target, base, 20.0, beta=1.3, gamma=0.4)
    expected = [expected_task_loss(form, t, b, 20.0, 1.3, 0.4) for t, b in zip(target.tolist(), base.tolist())]
    assert torch.allclose(values, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)


@pytest.mark.parametrize("form", TASK_LOSS_FORMS)
def test_task_loss_falls_as_the_base_loss_rises_and_rises_with_the_target_loss(form):
    levels = torch.linspace(0.2, 30.0, 60, dtype=torch.float64)
    fixed = torch.full_like(levels, 3.0)
    over_base = task_loss_per_copy(form, fixed, levels, 20.0)
    over_target = task_loss_per_copy(form, levels, fixed, 20.0)
    assert (over_base.diff() < 0).all()
    assert (over_target.diff() > 0).all()


def test_task_loss_averages_each_samples_copies():
    target = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    base = torch.tensor([[4.0, 1.0], [0.5, 8.0]])
    alpha = torch.tensor([20.0, 5.0])
    per_sample = task_loss("add-exp", target, base, alpha)
    per_copy = task_loss_per_copy("add-exp", target, base, alpha[:, None])
    assert torch.allclose(per_sample, per_copy.mean(dim=1))
    # mean(L_t) + α·mean(exp(−L_b/L_t)), the authors' form.
    assert torch.allclose(per_sample[0], target[0].mean() + 20.0 * torch.exp(-base[0] / (target[0] + 1e-6)).mean())
    with pytest.raises(ValueError, match="form"):
        task_loss_per_copy("add-cosine", target, base, 1.0)


def constant_proxy(delta: tuple[float, float]) -> torch.nn.Module:
    """RAFT-small whose every GRU step adds ``delta`` at 1/8 resolution: iterate i predicts 8·(i+1)·delta."""
    model = build_raft("raft-small")
    with torch.no_grad():
        model.update_block.flow_head.conv2.weight.zero_()
        model.update_block.flow_head.conv2.bias.copy_(torch.tensor(delta))
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("size", [(48, 64), (44, 60)])
def test_proxy_loss_is_the_sequence_loss_over_the_rendered_pixels(size):
    height, width = size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, height, width, generator=generator)
    flow = 4.0 * torch.randn(2, 2, height, width, generator=generator)
    valid = (torch.rand(2, 1, height, width, generator=generator) > 0.3).float()
    model = constant_proxy((0.25, -0.125))
    loss = proxy_losses(model, images[0], images[1], flow, valid, iters=2, sequence_gamma=0.8, max_flow=400.0)
    # Iterates predict (2, -1) then (4, -2) px everywhere; padding must not change what is scored.
    first = ((flow - torch.tensor([2.0, -1.0])[:, None, None]).abs() * valid).mean(dim=(1, 2, 3))
    second = ((flow - torch.tensor([4.0, -2.0])[:, None, None]).abs() * valid).mean(dim=(1, 2, 3))
    assert torch.allclose(loss, 0.8 * first + second, rtol=1e-5)


def test_proxy_loss_differentiates_the_images_not_the_proxy():
    model = build_raft("raft-small").eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(1)
    img1 = torch.rand(1, 3, 48, 64, generator=generator, requires_grad=True)
    img2 = torch.rand(1, 3, 48, 64, generator=generator, requires_grad=True)
    flow = torch.zeros(1, 2, 48, 64, requires_grad=True)
    loss = proxy_losses(model, img1, img2, flow, torch.ones(1, 1, 48, 64), iters=2, sequence_gamma=0.8, max_flow=400.0)
    loss.sum().backward()
    for tensor in (img1, img2, flow):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_fold_over_hinge_is_zero_for_rigid_anchors_and_positive_for_folds(bank):
    config = render_config(anchor_warp=STILL, grid_size=(4, 5))
    params = sample_params(config, bank, seed=0, indices=range(3))
    # Sample 0: rigid motion; sample 1: a mild perspective; sample 2: a fold.
    params.anchor_translation[0] = torch.tensor([30.0, -12.0])
    params.anchor_rotation[0], params.anchor_scale[0] = 5.0, 0.8
    params.anchor_corners[1] = torch.tensor([[3.0, -2.0], [-4.0, 1.0], [2.0, 3.0], [-1.0, -3.0]])
    # Sample 2: one column of control nodes pushed 150 px right, past its neighbour on the right.
    params.anchor_grid[2, 0, :, 2] = 150.0
    hinge = fold_over_hinge(params, config, margin=0.1)
    assert hinge[0] == 0 and hinge[1] == 0
    assert hinge[2] > 1.0
    moved = anchor_lattice(params, config)
    assert (moved[2, :, 1:, 0] - moved[2, :, :-1, 0]).min() < 0  # the map really folds there

    folded = params.anchor_grid.clone().requires_grad_()
    params.anchor_grid = folded
    fold_over_hinge(params, config, margin=0.1).sum().backward()
    assert folded.grad[2].abs().sum() > 0 and folded.grad[:2].abs().sum() == 0


def test_anchor_lattice_is_the_identity_for_a_still_anchor(bank):
    config = render_config(anchor_warp=STILL)
    params = sample_params(config, bank, seed=0, indices=range(1))
    moved = anchor_lattice(params, config)
    assert moved.shape == (1, 4, 5, 2)
    assert torch.allclose(moved[0, 0, 0], torch.tensor([-0.5, -0.5]), atol=1e-4)
    assert torch.allclose(moved[0, -1, -1], torch.tensor([63.5, 47.5]), atol=1e-4)


def test_noise_l1_is_the_mean_magnitude_of_both_frames_where_noise_is_on(bank):
    params = sample_params(render_config(), bank, seed=0, indices=range(2))
    params.noise = torch.randn(params.noise.shape, generator=torch.Generator().manual_seed(0))
    params.noise_on = torch.tensor([True, False])
    expected = params.noise[0, 0].abs().mean() + params.noise[0, 1].abs().mean()
    assert torch.allclose(noise_l1(params), torch.stack([expected, torch.tensor(0.0)]))


def save_checkpoint(path, model_name="raft-small"):
    torch.save({"model": build_raft(model_name).state_dict(), "model_name": model_name}, path)
    return path


def test_load_proxy_gives_a_frozen_model(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "proxy.pth")
    model = load_proxy(checkpoint, "raft-small", "cpu", mixed_precision=True)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.mixed_precision is False  # bf16 autocast only on CUDA


def test_proxy_checkpoint_errors_are_one_line_user_errors(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "small.pth")
    with pytest.raises(DflowgenError, match="does not fit raft"):
        load_proxy(checkpoint, "raft", "cpu")
    with pytest.raises(DflowgenError, match="not found"):
        load_proxy(tmp_path / "absent.pth", "raft-small", "cpu")
    with pytest.raises(DflowgenError, match="weights fetch raft-sintel"):
        load_proxy("raft-sintel", "raft", "cpu")
    with pytest.raises(DflowgenError, match="unknown proxy model"):
        load_proxy(checkpoint, "flownet", "cpu")
    with pytest.raises(DflowgenError, match="target_weights"):
        load_proxies(OptimizeConfig(base_weights=str(checkpoint), base_model="raft-small"), "cpu")
    small = dict(base_model="raft-small", target_model="raft-small")
    proxies = load_proxies(OptimizeConfig(base_weights=str(checkpoint), target_weights=str(checkpoint), **small), "cpu")
    assert proxies.base is not proxies.target


def test_settings_are_checked_and_alpha_cycles():
    with pytest.raises(ValueError, match="form"):
        OptimizeConfig(form="add-cosine")
    with pytest.raises(ValueError, match="target_model"):
        OptimizeConfig(target_model="pwc")
    with pytest.raises(ValueError, match="alpha"):
        OptimizeConfig(alpha=(10.0, -1.0))
    config = OptimizeConfig(alpha=(10.0, 20.0, 30.0))
    assert [config.alpha_for(i) for i in range(5)] == [10.0, 20.0, 30.0, 10.0, 20.0]
