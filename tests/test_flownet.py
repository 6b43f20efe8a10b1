"""FlowNetS and FlowNetC: the correlation layer, shapes and gradients, the ports' checkpoint layout, the
multi-scale loss and a tiny overfit. Sizes are 64×48 (64×64 for the overfit)."""

from __future__ import annotations

import itertools

import pytest
import torch

from dflowgen.errors import DflowgenError
from dflowgen.losses.multiscale import FLOWNET_SCALE_WEIGHTS, multiscale_epe
from dflowgen.models.flownet import FlowNet, build_flownet, correlation
from dflowgen.models.registry import load_model, training_loss


def naive_correlation(features1: torch.Tensor, features2: torch.Tensor, max_displacement: int,
                      stride: int) -> torch.Tensor:
    batch, channels, height, width = features1.shape
    shifts = list(range(-max_displacement, max_displacement + 1, stride))
    out = torch.zeros(batch, len(shifts) ** 2, height, width, dtype=features1.dtype)
    for (i, dy), (j, dx) in itertools.product(enumerate(shifts), enumerate(shifts)):
        for y, x in itertools.product(range(height), range(width)):
            if 0 <= y + dy < height and 0 <= x + dx < width:
                out[:, i * len(shifts) + j, y, x] = (features1[:, :, y, x] * features2[:, :, y + dy, x + dx]).sum(1)
    return out / channels


@pytest.mark.parametrize("max_displacement, stride", [(4, 2), (2, 1)])
def test_correlation_matches_a_naive_loop(max_displacement, stride):
    generator = torch.Generator().manual_seed(0)
    features1 = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    features2 = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    expected = naive_correlation(features1, features2, max_displacement, stride)
    torch.testing.assert_close(correlation(features1, features2, max_displacement, stride), expected)


def test_flownetc_correlates_441_displacements_at_one_eighth():
    model = build_flownet("flownetc")
    assert model.encoder.correlation.out_channels == 21 * 21
    assert model.encoder.conv3_1[0].in_channels == 32 + 441


@pytest.mark.parametrize("name", ["flownets", "flownetc"])
def test_shapes_and_a_finite_gradient(name):
    model = build_flownet(name)
    image1 = (255 * torch.rand(2, 3, 48, 64)).requires_grad_()
    image2 = 255 * torch.rand(2, 3, 48, 64)
    flows = model(image1, image2)
    assert [tuple(flow.shape) for flow in flows] == [(2, 2, 12, 16), (2, 2, 6, 8), (2, 2, 3, 4), (2, 2, 2, 2),
                                                     (2, 2, 1, 1)]
    loss, metrics = multiscale_epe(flows, torch.randn(2, 2, 48, 64), torch.ones(2, 48, 64))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(metrics["epe"])
    assert torch.isfinite(image1.grad).all() and image1.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    finals = model(image1.detach(), image2, final_only=True)
    assert len(finals) == 1 and tuple(finals[0].shape) == (2, 2, 48, 64)


def test_multiscale_loss_is_zero_for_the_pooled_truth_and_weights_scales_like_the_paper():
    flow = torch.randn(2, 2, 64, 64) * 5
    pooled = [torch.nn.functional.adaptive_avg_pool2d(flow / 20, 64 // 2**level) for level in range(2, 7)]
    loss, metrics = multiscale_epe(pooled, flow)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    worse = [p + 0.1 for p in pooled]
    per_sample, _ = multiscale_epe(worse, flow, reduction="none")
    assert per_sample.shape == (2,) and per_sample.mean().item() == pytest.approx(multiscale_epe(worse, flow)[0].item())
    assert FLOWNET_SCALE_WEIGHTS == (0.005, 0.01, 0.02, 0.08, 0.32)


def _port_state(model: FlowNet) -> dict[str, torch.Tensor]:
    """The state dict as the widely used PyTorch ports (ClementPinard/FlowNetPytorch) name it: flat keys."""
    return {key.split(".", 1)[1]: value for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name, batch_norm", [("flownets", False), ("flownetc", False), ("flownets", True)])
def test_a_port_checkpoint_loads_with_its_key_names(tmp_path, name, batch_norm):
    source = build_flownet(name, batch_norm=batch_norm)
    port = _port_state(source)
    # The ports' names and shapes, written out (not derived from this model).
    expected = {"conv1.0.weight": (64, 6 if name == "flownets" else 3, 7, 7), "conv6_1.0.weight": (1024, 1024, 3, 3),
                "deconv5.0.weight": (1024, 512, 4, 4), "deconv2.0.weight": (386, 64, 4, 4),
                "predict_flow6.weight": (2, 1024, 3, 3), "predict_flow2.weight": (2, 194, 3, 3),
                "upsampled_flow6_to_5.weight": (2, 2, 4, 4), "upsampled_flow3_to_2.weight": (2, 2, 4, 4)}
    if name == "flownetc":
        expected |= {"conv_redir.0.weight": (32, 256, 1, 1), "conv3_1.0.weight": (256, 473, 3, 3)}
    if batch_norm:
        expected |= {"conv1.1.running_mean": (64,), "conv1.1.weight": (64,)}
    else:
        expected |= {"conv1.0.bias": (64,)}
    assert {key: tuple(port[key].shape) for key in expected} == expected
    arch = name + ("_bn" if batch_norm else "")
    torch.save({"arch": arch, "div_flow": 20, "state_dict": port}, tmp_path / "port.pth.tar")
    loaded = load_model(tmp_path / "port.pth.tar")
    assert isinstance(loaded, FlowNet) and loaded.model_name == name and not loaded.training
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    del port["predict_flow2.weight"]
    torch.save({"arch": arch, "state_dict": port}, tmp_path / "short.pth.tar")
    with pytest.raises(DflowgenError, match=r"does not fit .*1 missing keys \(decoder.predict_flow2.weight\)"):
        load_model(tmp_path / "short.pth.tar")


def test_a_dflowgen_checkpoint_is_recognised_without_a_name(tmp_path):
    model = build_flownet("flownetc")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    assert load_model(tmp_path / "bare.pth").model_name == "flownetc"
    with pytest.raises(DflowgenError, match="does not fit flownets"):
        load_model(tmp_path / "bare.pth", model_name="flownets")


def test_a_tiny_flownets_overfits_one_pair():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(1, 3, 9, 9, generator=generator)
    scene = 255 * torch.nn.functional.interpolate(coarse, size=(72, 72), mode="bilinear", align_corners=False)
    image1, image2 = scene[..., 4:68, 4:68], scene[..., 2:66, 7:71]  # frame 2 = frame 1 moved by (-3, +2)
    flow = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 64, 64)
    model = build_flownet("flownets", width=1 / 8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss, _ = training_loss(model, image1, image2, flow, None, iters=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
