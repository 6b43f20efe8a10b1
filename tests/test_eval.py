"""evaluate(): padding to /8 and back, which pixels are measured, and how pairs are aggregated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dflowgen.data.sample import FlowPair
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import PairResult, aggregate, evaluate


class PositionFlow(nn.Module):
    """A stand-in network whose 'flow' is each pixel's position in the padded frame, (x, y)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.seen_shapes: list[tuple[int, int]] = []

    def forward(self, image1, image2, iters=12, final_only=False):
        assert final_only and image1.shape[-2] % 8 == 0 and image1.shape[-1] % 8 == 0
        self.seen_shapes.append(tuple(image1.shape[-2:]))
        batch, _, height, width = image1.shape
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        flow = torch.stack([xs, ys]).float()[None].expand(batch, -1, -1, -1)
        return [flow]


def _pair(height: int, width: int, flow: np.ndarray, valid: np.ndarray | None = None, name: str = "p") -> FlowPair:
    image = np.zeros((height, width, 3), np.uint8)
    return FlowPair(image, image, flow.astype(np.float32), valid, name)


def _positions(height: int, width: int, left: int, top: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs + left, ys + top], axis=-1)


def test_pairs_are_padded_centred_and_cropped_back():
    # 51×69 pads to 56×72: 2 rows above and 3 below, 1 column left and 2 right (official: odd extra after).
    model = PositionFlow()
    result = evaluate(model, [_pair(51, 69, _positions(51, 69, left=1, top=2))], iters=2)
    assert model.seen_shapes == [(56, 72)]
    assert result.pairs[0].epe == 0.0 and result.pairs[0].rates["1px"] == 100.0
    kitti = evaluate(model, [_pair(51, 69, _positions(51, 69, left=1, top=0))], iters=2, pad_mode="kitti")
    assert kitti.pairs[0].epe == 0.0


def test_valid_masks_are_used_unless_all_pixels_are_asked_for():
    flow = _positions(16, 16, 0, 0).astype(np.float32)
    flow[:8] += 3.0  # wrong by 3·√2 px in the top half
    valid = np.zeros((16, 16), bool)
    valid[8:] = True
    model = PositionFlow()
    masked = evaluate(model, [_pair(16, 16, flow, valid)], iters=2)
    everything = evaluate(model, [_pair(16, 16, flow, valid)], iters=2, all_pixels=True)
    assert masked.pairs[0].epe == 0.0 and masked.pairs[0].pixels == 128
    assert everything.pairs[0].epe == pytest.approx(1.5 * np.sqrt(2)) and everything.pairs[0].pixels == 256


def test_aggregate_means_over_pairs_and_pools_rates_over_pixels():
    pairs = [PairResult("a", 1.0, {"1px": 100.0, "3px": 100.0, "5px": 100.0, "fl_all": 0.0}, 300),
             PairResult("b", 4.0, {"1px": 0.0, "3px": 0.0, "5px": 100.0, "fl_all": 100.0}, 100)]
    result = aggregate(pairs)
    assert result["epe"] == pytest.approx(2.5)
    assert result["epe_pixels"] == pytest.approx((300 * 1.0 + 100 * 4.0) / 400)
    assert result["1px"] == pytest.approx(75.0) and result["fl_all"] == pytest.approx(25.0)
    assert result["pairs"] == 2 and result["pixels"] == 400


def test_training_mode_is_restored_and_unlabelled_data_is_refused():
    model = PositionFlow().train()
    model.frozen = nn.BatchNorm2d(1).eval()  # as RAFT.freeze_bn() leaves it
    evaluate(model, [_pair(8, 8, _positions(8, 8, 0, 0))], iters=1)
    assert model.training and not model.frozen.training
    unlabelled = FlowPair(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), None, None, "frames/0")
    with pytest.raises(DflowgenError, match="no ground-truth flow"):
        evaluate(model, [unlabelled], iters=1)


def test_eval_cli_scale_resizes_pairs_before_measuring(tmp_path):
    """``eval --scale 0.5`` measures at half size: each pair's pixel count is a quarter, flow halved."""
    from click.testing import CliRunner
    from test_reproduce import write_tiny_sintel

    from dflowgen.cli import cli
    from dflowgen.weights import resolve_weights

    write_tiny_sintel(tmp_path / "sintel")
    checkpoint = str(resolve_weights("demo-base"))
    spec = f"sintel:{tmp_path / 'sintel'}:final:scenes=gamma"
    figures = {}
    for scale in ("1", "0.5"):
        out = tmp_path / f"scale-{scale}.json"
        result = CliRunner().invoke(cli, ["eval", "--ckpt", checkpoint, "--data", spec, "--iters", "2",
                                          "--scale", scale, "--json", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        assert report["scale"] == float(scale)
        figures[scale] = report["datasets"][0]["pairs"][0]
    assert figures["1"]["pixels"] == 96 * 128 and figures["0.5"]["pixels"] == 48 * 64
    assert figures["0.5"]["epe"] != figures["1"]["epe"]
    refused = CliRunner().invoke(cli, ["eval", "--ckpt", checkpoint, "--data", spec, "--scale", "0"])
    assert refused.exit_code == 2 and "--scale" in refused.output
