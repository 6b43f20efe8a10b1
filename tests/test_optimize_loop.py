"""optimize_batch on a tiny configuration: direction of the losses, frozen proxies, reproducibility,
the keep threshold, non-finite samples and batch independence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import dflowgen.optimize.loop as loop
from dflowgen.assets import load_layer_bank
from dflowgen.models.raft import build_raft
from dflowgen.optimize.config import CopyAugmentConfig, OptimizeConfig
from dflowgen.optimize.loop import optimize_batch
from dflowgen.optimize.copies import draw_copy_transforms
from dflowgen.optimize.proxies import Proxies, load_proxy
from dflowgen.render import LEARNABLE_GROUPS, RenderConfig, SceneParams, WarpRanges, render, sample_params
from dflowgen.seeding import sample_generator

SMALL_MOTION = WarpRanges(
    translation=(-1.5, 1.5), rotation_deg=(-2.0, 2.0), scale=(0.97, 1.03), perspective=(-1.0, 1.0)
)
RENDER = RenderConfig(
    width=64, height=48, canvas_margin=16, num_layers=(2, 3), grid_size=(3, 3), blur_kernel_size=9,
    layer_warp=SMALL_MOTION, anchor_warp=SMALL_MOTION, layer_translation=(-1.5, 1.5),
)
SEED = 3
NO_FLIPS = CopyAugmentConfig(hflip_prob=0.0, vflip_prob=0.0)
"""For the constant proxies: a constant prediction is not flip-equivariant (a flipped copy asks for −4 px)."""


def settings(**changes) -> OptimizeConfig:
    values = dict(
        proxy_iters=2, copies=2, updates=2, decay_updates=20, base_model="raft-small", target_model="raft-small"
    )
    values.update(changes)
    return OptimizeConfig(**values)


@pytest.fixture(scope="module")
def bank():
    return load_layer_bank(size=RENDER.canvas_size)


def saved_proxy(folder, name: str, model: torch.nn.Module) -> torch.nn.Module:
    path = folder / f"{name}.pth"
    torch.save({"model": model.state_dict(), "model_name": "raft-small"}, path)
    return load_proxy(path, "raft-small", "cpu")


def constant_model(final_flow: tuple[float, float], iters: int = 2) -> torch.nn.Module:
    """RAFT-small predicting ``final_flow`` px everywhere at its last iterate, whatever the images."""
    model = build_raft("raft-small")
    with torch.no_grad():
        model.update_block.flow_head.conv2.weight.zero_()
        # Each step adds the bias at 1/8 resolution, upsampled ×8.
        model.update_block.flow_head.conv2.bias.copy_(torch.tensor(final_flow) / (8 * iters))
    return model


@pytest.fixture(scope="module")
def constant_proxies(tmp_path_factory):
    """Target: predicts (4, 3) px everywhere; base: predicts no motion. Optimising the scene's
    motion towards (4, 3) lowers the target loss and raises the base loss, whatever the images
    look like, so the direction of both is known in advance."""
    folder = tmp_path_factory.mktemp("constant")
    return Proxies(base=saved_proxy(folder, "base", constant_model((0.0, 0.0))),
                   target=saved_proxy(folder, "target", constant_model((4.0, 3.0))))


@pytest.fixture(scope="module")
def network_proxies(tmp_path_factory):
    """Two randomly initialised RAFT-small: their losses depend on the images through the whole network."""
    folder = tmp_path_factory.mktemp("network")
    torch.manual_seed(11)
    base = build_raft("raft-small")
    target = build_raft("raft-small")
    return Proxies(base=saved_proxy(folder, "base", base), target=saved_proxy(folder, "target", target))


def run(bank, proxies, indices, config, params: SceneParams | None = None, **kwargs):
    params = sample_params(RENDER, bank, SEED, indices) if params is None else params
    return optimize_batch(params, indices, SEED, bank, RENDER, config, proxies, torch.device("cpu"), **kwargs)


def test_target_loss_falls_and_base_loss_rises(bank, constant_proxies):
    config = settings(updates=8, copies=1, lr_pixel=0.5, keep_best=False, alpha=(1.0,), augment=NO_FLIPS)
    result = run(bank, constant_proxies, [0, 1], config)
    losses = result.losses
    assert result.finite.all()
    assert (losses["updates"] == 8).all()
    # A flipped gradient would move the motion away from (4, 3): the target loss would rise.
    assert losses["target_loss_final"].mean() < 0.6 * losses["target_loss_initial"].mean()
    assert losses["base_loss_final"].mean() > 1.4 * losses["base_loss_initial"].mean()
    assert (losses["task_loss_final"] > 0).all()


def test_proxies_stay_frozen(bank, network_proxies):
    models = network_proxies._asdict()
    before = {name: {k: v.clone() for k, v in model.state_dict().items()} for name, model in models.items()}
    result = run(bank, network_proxies, [0, 1], settings())
    assert result.finite.all()
    for name, model in models.items():
        assert not model.training
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[name][key]), f"{name}.{key} changed"
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_same_seed_gives_identical_results(bank, network_proxies):
    params = sample_params(RENDER, bank, SEED, [4, 5])
    untouched = {name: tensor.clone() for name, tensor in params.tensors().items()}
    first = run(bank, network_proxies, [4, 5], settings(keep_best=False), params=params)
    second = run(bank, network_proxies, [4, 5], settings(keep_best=False))
    for name, tensor in params.tensors().items():
        assert torch.equal(tensor, untouched[name]), f"the caller's {name} was modified"
    for name in first.losses:
        np.testing.assert_array_equal(first.losses[name], second.losses[name], err_msg=name)
    for name in SceneParams.field_names():
        assert torch.equal(getattr(first.params, name), getattr(second.params, name)), name
    for field in ("img1", "img2", "flow", "valid"):
        assert torch.equal(getattr(first.output, field), getattr(second.output, field)), field
    moved = [name for names in LEARNABLE_GROUPS.values() for name in names
             if not torch.equal(getattr(first.params, name), untouched[name])]
    assert "anchor_translation" in moved and "flow_translation" in moved


def test_kept_samples_satisfy_the_threshold(bank, constant_proxies):
    calls = []
    config = settings(updates=3, copies=1, lr_pixel=0.5, alpha=(1.0,), augment=NO_FLIPS, keep_threshold=1e9)
    first = run(bank, constant_proxies, [6, 7], config, on_update=lambda: calls.append(1))
    assert len(calls) == 3 and first.kept.all()
    threshold = float(first.losses["target_loss_final"].mean())  # between the two samples' losses
    second = run(bank, constant_proxies, [6, 7], dataclasses.replace(config, keep_threshold=threshold))
    losses = second.losses
    assert second.kept.sum() == 1
    np.testing.assert_array_equal(second.kept, second.finite & (losses["target_loss_final"] < threshold))
    # The best iterate is kept: never worse than the first, and the output renders it.
    assert (losses["target_loss_final"] <= losses["target_loss_initial"]).all()
    assert ((losses["updates"] >= 0) & (losses["updates"] <= 3)).all() and (losses["updates"] > 0).any()
    assert second.output.img1.shape == (2, 3, 48, 64) and second.output.flow.shape == (2, 2, 48, 64)
    rerendered = render(second.params, bank, RENDER)
    torch.testing.assert_close(second.output.flow, rerendered.flow)


def assert_same_sample(result, row: int, reference, reference_row: int) -> None:
    """The same sample optimised in two batches agrees to float rounding."""
    for name in ("target_loss_initial", "base_loss_initial", "target_loss_final", "base_loss_final", "task_loss_final"):
        np.testing.assert_allclose(
            result.losses[name][row], reference.losses[name][reference_row], rtol=1e-4, err_msg=name
        )
    assert result.losses["updates"][row] == reference.losses["updates"][reference_row]
    for name in loop._LEARNABLE:
        torch.testing.assert_close(getattr(result.params, name)[row], getattr(reference.params, name)[reference_row],
                                   atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(result.output.flow[row], reference.output.flow[reference_row], atol=1e-3, rtol=0)


def draw_for(indices, config: OptimizeConfig):
    generators = [sample_generator(SEED, index, loop.AUGMENT_STREAM) for index in indices]
    return draw_copy_transforms(generators, config.copies, (RENDER.width, RENDER.height), config.augment)


def gradient_of(params: SceneParams, row: int) -> torch.Tensor:
    """Every learnable field's gradient for sample ``row``, flattened (zeros where none arrived)."""
    parts = []
    for name in loop._LEARNABLE:
        tensor = getattr(params, name)
        parts.append((tensor.grad if tensor.grad is not None else torch.zeros_like(tensor))[row].flatten())
    return torch.cat(parts)


def test_a_samples_gradient_comes_from_its_own_loss_only(bank, network_proxies):
    config = settings()
    pair = sample_params(RENDER, bank, SEED, [9, 10]).requires_grad_()
    alpha = torch.tensor([20.0, 20.0])
    evaluation = loop.evaluate(pair, draw_for([9, 10], config), alpha, bank, RENDER, config, network_proxies)
    evaluation.total[0].backward(retain_graph=True)
    assert gradient_of(pair, 0).abs().sum() > 0
    assert not gradient_of(pair, 1).any(), "sample 1 gets a gradient from sample 0's loss"
    for name in loop._LEARNABLE:
        getattr(pair, name).grad = None
    evaluation.total[1].backward()

    alone = sample_params(RENDER, bank, SEED, [10]).requires_grad_()
    single = loop.evaluate(alone, draw_for([10], config), torch.tensor([20.0]), bank, RENDER, config, network_proxies)
    single.total[0].backward()
    np.testing.assert_allclose(evaluation.total[1].item(), single.total[0].item(), rtol=1e-4)
    # The proxies' loss is piecewise smooth in the images (ReLUs, L1, bilinear look-ups): the
    # renderer's batch-size-dependent rounding (~1e-4) moves its gradient by a few percent.
    in_pair, by_itself = gradient_of(pair, 1), gradient_of(alone, 0)
    assert (in_pair - by_itself).norm() < 0.1 * by_itself.norm()


def test_a_sample_optimised_alone_equals_it_optimised_in_a_batch(bank, constant_proxies):
    # Proxies whose loss is smooth in θ keep float rounding from being amplified by the updates.
    together = run(bank, constant_proxies, [9, 10], settings(updates=3, keep_best=False))
    alone = run(bank, constant_proxies, [10], settings(updates=3, keep_best=False))
    assert_same_sample(together, 1, alone, 0)
    assert not np.isclose(together.losses["target_loss_final"][1], together.losses["target_loss_initial"][1])


def test_a_nan_parameter_drops_only_its_sample(bank, constant_proxies):
    params = sample_params(RENDER, bank, SEED, [0, 1, 2])
    params.anchor_translation[1, 0] = float("nan")
    result = run(bank, constant_proxies, [0, 1, 2], settings(keep_best=False, keep_threshold=1e9), params=params)
    np.testing.assert_array_equal(result.finite, [True, False, True])
    np.testing.assert_array_equal(result.kept, [True, False, True])
    assert (result.output.img1[1] == 0).all() and (result.output.valid[1] == 0).all()
    clean = run(bank, constant_proxies, [0, 2], settings(keep_best=False))
    assert_same_sample(result, 0, clean, 0)
    assert_same_sample(result, 2, clean, 1)


def test_a_loss_turning_nan_drops_only_its_sample(bank, constant_proxies, monkeypatch):
    evaluations = []
    real_task_loss = loop.task_loss

    def task_loss_nan_at_second_evaluation(*args, **kwargs):
        loss = real_task_loss(*args, **kwargs)
        evaluations.append(1)
        if len(evaluations) == 2:
            # NaN with a NaN derivative: backward sends NaN into sample 0's θ, and only there.
            broken = loss[:1] + torch.sqrt(loss[:1] - 1e9)
            loss = torch.cat([broken, loss[1:]])
        return loss

    monkeypatch.setattr(loop, "task_loss", task_loss_nan_at_second_evaluation)
    result = run(bank, constant_proxies, [3, 4], settings(updates=3, keep_best=False, keep_threshold=1e9))
    monkeypatch.undo()
    np.testing.assert_array_equal(result.finite, [False, True])
    np.testing.assert_array_equal(result.kept, [False, True])
    assert result.losses["updates"][0] == 0  # its last finite iterate
    for name in loop._LEARNABLE:
        assert torch.isfinite(getattr(result.params, name)).all(), name
    clean = run(bank, constant_proxies, [4], settings(updates=3, keep_best=False, keep_threshold=1e9))
    assert_same_sample(result, 1, clean, 0)


def test_no_updates_keeps_the_drawn_parameters(bank, network_proxies):
    params = sample_params(RENDER, bank, SEED, [0])
    result = run(bank, network_proxies, [0], settings(updates=0), params=params)
    assert result.losses["updates"][0] == 0
    assert result.losses["target_loss_final"][0] == result.losses["target_loss_initial"][0]
    for name in SceneParams.field_names():
        assert torch.equal(getattr(result.params, name), getattr(params, name)), name
