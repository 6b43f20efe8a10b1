"""Training refuses, before it writes anything, a run whose estimated peak memory exceeds what is available."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from test_train_modes import write_frames

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import load_recipe
from dflowgen.train.config import TrainConfig
from dflowgen.train.memory import (
    PROCESS_BYTES,
    STEP_BYTES,
    available_bytes,
    check_fits,
    correlation_bytes,
    estimate_peak_bytes,
    parse_bytes,
    recipes_that_fit,
    weight_bytes,
)

GIB = 2**30


def test_the_estimate_is_the_documented_formula():
    config = TrainConfig(model="raft-small", batch_size=4, crop_size=(256, 320), iters=4)
    activations = estimate_peak_bytes(config, include_process=False) - 3 * weight_bytes("raft-small") - STEP_BYTES
    assert activations - correlation_bytes(4, (256, 320)) == pytest.approx(4 * 256 * 320 * (1540 + 220 * 4), rel=1e-6)
    assert estimate_peak_bytes(config) - estimate_peak_bytes(config, include_process=False) == (
        PROCESS_BYTES + weight_bytes("raft-small"))
    # The measured check of bench/train_memory.py: 0.95 GiB above the process (raft-small), 2.06 GiB (raft).
    assert 0.8 * GIB < estimate_peak_bytes(config, include_process=False) < 1.1 * GIB
    raft = dataclasses.replace(config, model="raft")
    assert 1.8 * GIB < estimate_peak_bytes(raft, include_process=False) < 2.4 * GIB
    # More of anything costs more; the label-free modes run the network on more frames per sample.
    for bigger in (dict(batch_size=8), dict(crop_size=(256, 384)), dict(iters=12), dict(mode="self-supervised"),
                   dict(mode="distill")):
        assert estimate_peak_bytes(dataclasses.replace(config, **bigger)) > estimate_peak_bytes(config), bigger
    # Two processes share the global batch.
    assert estimate_peak_bytes(config, world_size=2) < estimate_peak_bytes(config)


def test_the_paper_size_defaults_do_not_fit_a_small_machine_but_the_cpu_recipes_do():
    assert estimate_peak_bytes(TrainConfig(mode="self-supervised")) > 16 * GIB
    assert estimate_peak_bytes(load_recipe("train-selfsup").train) < 4 * GIB
    assert "train-selfsup" in recipes_that_fit("self-supervised", 4 * GIB)
    assert "train-cpu-mini" in recipes_that_fit("supervised", 4 * GIB)
    assert "train-chairs" not in recipes_that_fit("supervised", 4 * GIB)


def test_budget_sizes_and_the_detected_memory(monkeypatch):
    assert parse_bytes("8G") == 8 * GIB and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000
    assert parse_bytes("1.5g") == int(1.5 * GIB)
    with pytest.raises(DflowgenError, match="is not a size"):
        parse_bytes("lots")
    monkeypatch.setenv("DFLOWGEN_MEMORY_BUDGET", "3G")
    assert available_bytes("cpu") == 3 * GIB
    with pytest.raises(DflowgenError, match=r"needs about .* GiB .* but 3\.0 GiB are available on cpu"):
        check_fits(TrainConfig(), "cpu")
    check_fits(load_recipe("train-cpu-mini").train, "cpu")
    # Two processes on one machine share its memory.
    with pytest.raises(DflowgenError, match="0.1 GiB are available"):
        check_fits(load_recipe("train-cpu-mini").train, "cpu", local_processes=30)
    monkeypatch.delenv("DFLOWGEN_MEMORY_BUDGET")
    detected = available_bytes("cpu")
    assert detected is None or detected > 0


def test_cli_refuses_a_run_that_would_not_fit_before_creating_anything(tmp_path, monkeypatch):
    frames = write_frames(tmp_path / "frames")
    out = tmp_path / "runs" / "ss"
    monkeypatch.setenv("DFLOWGEN_MEMORY_BUDGET", "4G")
    result = CliRunner().invoke(cli, ["train", "--mode", "self-supervised", "--frames", f"frames:{frames}", "--out",
                                      str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error: this training run needs about")
    assert "batch 10 at 368×496" in lines[0] and "4.0 GiB are available" in lines[0]
    assert "recipes that fit: " in lines[0] and "train-selfsup" in lines[0]
    assert not (tmp_path / "runs").exists()

    monkeypatch.setenv("DFLOWGEN_MEMORY_BUDGET", "plenty")
    result = CliRunner().invoke(cli, ["train", "--mode", "self-supervised", "--frames", f"frames:{frames}", "--out",
                                      str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "DFLOWGEN_MEMORY_BUDGET='plenty' is not a size" in result.output
