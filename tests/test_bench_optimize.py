"""bench/optimize.py's arithmetic figure (issue #17): the counted operations of one DFlow update, and the least time
they need at the machine's matrix-product rate."""

from __future__ import annotations

import re

import pytest
import torch

from dflowgen.assets import load_layer_bank
from dflowgen.models.modes import freeze
from dflowgen.models.raft import build_raft
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.optimize.proxies import Proxies
from dflowgen.render import RenderConfig, sample_params
from dflowgen.seeding import sample_generator


@pytest.fixture(scope="module")
def bench_optimize(bench_script):
    return bench_script("optimize")


def _update_flops(bench_optimize, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    render_config = RenderConfig(width=64, height=48, canvas_margin=12, num_layers=(2, 2))
    config = OptimizeConfig(base_model="raft-small", target_model="raft-small", proxy_iters=2, copies=2)
    proxies = Proxies(base=freeze(build_raft("raft-small")), target=freeze(build_raft("raft-small")))
    bank = load_layer_bank(size=render_config.canvas_size)
    params = sample_params(render_config, bank, seed=0, indices=range(batch)).requires_grad_()
    generators = [sample_generator(0, index, "optimize") for index in range(batch)]
    return bench_optimize.update_flops(params, generators, (64, 48), bank, render_config, config, proxies)


def test_an_update_counts_the_proxies_forward_and_backward_per_sample(bench_optimize):
    one, two = _update_flops(bench_optimize, 1), _update_flops(bench_optimize, 2)
    forward = one["aten.convolution"]
    # Gradients reach the images through every convolution but the motion encoder's, whose input is detached.
    assert 0.5 * forward < one["aten.convolution_backward"] < forward
    assert sum(two.values()) == pytest.approx(2 * sum(one.values()), rel=0.01)


def test_the_floor_is_the_counted_operations_at_the_matmul_rate(bench_optimize, capsys, monkeypatch):
    monkeypatch.setattr(bench_optimize, "matmul_flop_rate", lambda device: 100e9)
    bench_optimize.report_arithmetic({"aten.convolution": 30e9, "aten.mm": 10e9}, 0.8, torch.device("cpu"))
    line = capsys.readouterr().out
    assert "40.0 GFLOP (75% in convolutions), 50 GFLOP/s" in line
    assert re.search(r"alone need 0\.400 s = 50% of the update", line)
