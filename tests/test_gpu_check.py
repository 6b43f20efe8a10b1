"""bench/gpu_check.py (issue #17) runs CPU against CPU and passes, its comparisons fail on results that differ,
and bench/gpu.sh is valid bash. The CUDA run itself needs a GPU: `bash bench/gpu.sh` there."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dflowgen.render import RenderOutput

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("render", "dflow", "train", "eval")


@pytest.fixture(scope="module")
def gpu_check(bench_script):
    return bench_script("gpu_check")


def test_cpu_against_cpu_passes_every_check():
    # One thread: two threads on a loaded 2-core machine run this tiny work many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--reference-device", "cpu",
                          "--size", "64x48"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")], run.stdout
    for check in CHECKS:
        assert any(line.startswith(f"PASS {check}.") for line in lines), f"no PASS line for {check}:\n{run.stdout}"
    assert any(line.startswith("SKIP dflow-bf16") for line in lines), run.stdout
    assert any(line.startswith("peak RSS") for line in lines), run.stdout


def _render_result(gpu_check, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = 2, 16, 24
    output = RenderOutput(
        img1=torch.rand(batch, 3, height, width, generator=generator),
        img2=torch.rand(batch, 3, height, width, generator=generator),
        flow=torch.randn(batch, 2, height, width, generator=generator) * 5,
        valid=torch.ones(batch, 1, height, width),
        occ=torch.zeros(batch, 1, height, width),
        effects={},
    )
    gradients = {name: torch.randn(4, generator=generator) for name in gpu_check.LEARNABLE}
    return gpu_check.RenderResult(output, gradients)


def test_render_comparison_fails_where_results_differ(gpu_check):
    reference = _render_result(gpu_check)
    out = reference.output
    flow = out.flow.clone()
    flow[..., :8] += 1.0  # a third of the pixels moved by 1 px
    gradients = dict(reference.gradients, layer_scale=2 * reference.gradients["layer_scale"])
    result = gpu_check.RenderResult(
        RenderOutput(out.img1 + 0.1, out.img2, flow, out.valid, 1 - out.occ, {}), gradients)
    figures = {figure.name: figure for figure in gpu_check.compare_render(result, reference)}
    failed = {name for name, figure in figures.items() if not figure.passed}
    assert failed == {"render.img1.mean", "render.img1.outliers", "render.flow.outliers", "render.occ",
                      "render.grad", "render.grad.worst-field"}
    assert figures["render.grad.worst-field"].what.endswith("dloss/dlayer_scale")
    assert figures["render.flow.outliers"].line().startswith("FAIL render.flow.outliers: 0.333 vs 0.001 (")
    assert all(figure.passed for figure in gpu_check.compare_render(reference, reference))


def test_step_and_eval_comparisons_fail_beyond_their_tolerance(gpu_check):
    update = torch.linspace(-1, 1, 100)
    reference = gpu_check.TrainResult(loss=2.0, update=update)
    flipped = gpu_check.TrainResult(loss=2.0, update=-update)  # every step the other way
    skipped = gpu_check.TrainResult(loss=math.nan, update=torch.zeros(100))  # a non-finite step leaves W alone
    assert all(figure.passed for figure in gpu_check.compare_train(reference, reference, gpu_check.TRAIN_FP32))
    loss, update = gpu_check.compare_train(flipped, reference, gpu_check.TRAIN_BF16)
    assert loss.passed and not update.passed
    assert not any(figure.passed for figure in gpu_check.compare_train(skipped, reference, gpu_check.TRAIN_BF16))
    [epe] = gpu_check.compare_eval(np.array([10.0, 20.05]), np.array([10.0, 20.0]))
    assert not epe.passed and epe.line().startswith("FAIL eval.epe: 0.0025 vs 0.001 (")


def test_measures(gpu_check):
    assert gpu_check.sign_disagreement(torch.tensor([1.0, -1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 2.0, 0.0])) == 2 / 3
    assert gpu_check.relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert gpu_check.relative_error(torch.ones(3), torch.zeros(3)) == math.inf
    assert gpu_check.max_relative_error([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)
    assert not gpu_check.Figure("x", math.nan, 1.0, "").passed


def test_gpu_script_is_valid_bash():
    run = subprocess.run(["bash", "-n", "bench/gpu.sh"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
