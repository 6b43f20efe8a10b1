"""`generate_set`: a tiny set end to end, resuming after Ctrl-C and kill -9, splitting, overwriting."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dflowgen.data.batches
import dflowgen.render
from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.data.shard_dataset import ShardDataset
from dflowgen.data.manifest import MANIFEST_NAME, read_manifest, verify_shards
from dflowgen.data.shards import shard_name
from dflowgen.errors import DflowgenError
from dflowgen.data.sets import ShardSplit
from dflowgen.generate import generate_set
from dflowgen.data.preview import PREVIEW_FOLDER
from dflowgen.recipes import parse_recipe, recipe_to_toml, with_overrides
from dflowgen.render import SceneParams

TINY = parse_recipe(
    textwrap.dedent(
        """
        [render]
        width = 64
        height = 48
        canvas_margin = 8
        num_layers = [2, 3]
        blur_kernel_size = 9
        [generate]
        seed = 7
        batch_size = 2
        shard_size = 3
        preview_count = 2
        """
    )
)
NUM_SAMPLES = 7  # shards of 3, 3 and 1 samples


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every shard and the manifest."""
    names = [path.name for path in folder.iterdir() if path.name.startswith("shard-")] + [MANIFEST_NAME]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(names)}


@pytest.fixture(scope="module")
def bank() -> LayerBank:
    return load_layer_bank(None, size=TINY.render.canvas_size)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bank) -> Path:
    """An uninterrupted single-process run, with previews."""
    out = tmp_path_factory.mktemp("reference")
    result = generate_set(TINY, NUM_SAMPLES, out, device="cpu", preview=True, assets=bank, quiet=True)
    assert (result.shards_written, result.samples_rendered, result.complete) == (3, NUM_SAMPLES, True)
    return out


def test_set_is_complete_verifiable_and_described(reference):
    assert verify_shards(reference) == []
    manifest = read_manifest(reference)
    assert manifest.header.recipe == recipe_to_toml(TINY)
    assert (manifest.header.seed, manifest.header.width, manifest.header.height) == (7, 64, 48)
    assert [entry.num_samples for entry in manifest.shards] == [3, 3, 1]
    assert not any(path.name.endswith(".tmp") for path in reference.iterdir())

    dataset = ShardDataset(reference)
    assert len(dataset) == NUM_SAMPLES
    pair = dataset[4]
    assert pair.img1.shape == (48, 64, 3) and pair.flow.shape == (48, 64, 2) and pair.valid.shape == (48, 64)
    assert pair.name == "sample-0000004"
    meta = dataset.meta(4)
    assert meta["index"] == 4 and {"effect_fog", "effect_blur", "effect_noise", "effect_white_balance"} <= meta.keys()
    previews = sorted(path.name for path in (reference / PREVIEW_FOLDER).iterdir())
    assert previews == ["sample-0000000.png", "sample-0000001.png"]


def test_stored_params_re_render_the_stored_sample(reference, bank):
    dataset = ShardDataset(reference)
    output = dflowgen.render.render(SceneParams.from_numpy(dataset.params(5)), bank, TINY.render)
    pair = dataset[5]
    img1 = output.img1[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(img1, pair.img1)
    np.testing.assert_allclose(output.flow[0].permute(1, 2, 0).numpy(), pair.flow, atol=1e-4)


def test_same_command_twice_gives_the_same_bytes(reference, bank, tmp_path):
    generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, quiet=True)
    assert digests(tmp_path) == digests(reference)


def test_resume_after_ctrl_c_is_byte_identical(reference, bank, tmp_path, monkeypatch):
    real_render = dflowgen.data.batches.render
    calls = []

    def interrupted_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # first batch of the second shard
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(dflowgen.data.batches, "render", interrupted_render)
    with pytest.raises(KeyboardInterrupt):
        generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, quiet=True)
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".manifest.lock")) == [
        MANIFEST_NAME,
        shard_name(0),
    ]
    assert [p.kind for p in verify_shards(tmp_path)] == ["missing", "missing"]

    monkeypatch.setattr(dflowgen.data.batches, "render", real_render)
    result = generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, quiet=True)
    assert (result.shards_written, result.shards_skipped) == (2, 1)
    assert digests(tmp_path) == digests(reference)


_SLOW_AFTER_FIRST_SHARD = """
import sys, time
from pathlib import Path
import torch
import dflowgen.data.batches
from dflowgen.cli import main

torch.set_num_threads({threads})
real_render = dflowgen.data.batches.render
out = Path(sys.argv[sys.argv.index("--out") + 1])

def slow_render(*args, **kwargs):
    if (out / "shard-00000.h5").exists():
        time.sleep(0.5)  # leave the test time to kill us while shard 1 is half-written
    return real_render(*args, **kwargs)

dflowgen.data.batches.render = slow_render
main()
"""


def test_resume_after_kill_9_is_byte_identical(reference, bank, tmp_path):
    out = tmp_path / "set"
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(recipe_to_toml(TINY))
    script = _SLOW_AFTER_FIRST_SHARD.format(threads=torch.get_num_threads())
    command = [sys.executable, "-c", script, "generate", "--mode", "random", "--recipe", str(recipe_file),
               "--num-samples", str(NUM_SAMPLES), "--out", str(out), "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.monotonic() + 120
    while not (out / f".{shard_name(1)}.tmp").exists():
        assert process.poll() is None, "generate ended before it could be killed"
        assert time.monotonic() < deadline, "the first shard never appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / shard_name(0)).exists() and not (out / shard_name(1)).exists()

    result = generate_set(TINY, NUM_SAMPLES, out, device="cpu", assets=bank, quiet=True)
    assert (result.shards_written, result.shards_skipped) == (2, 1)
    assert digests(out) == digests(reference)
    assert not (out / f".{shard_name(1)}.tmp").exists()


def test_split_runs_cover_the_set_like_one_run(reference, bank, tmp_path):
    for index in (1, 0):
        split = ShardSplit(index, 2)
        result = generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", split=split, assets=bank, quiet=True)
        assert result.complete == (index == 0)
    assert digests(tmp_path) == digests(reference)


@pytest.mark.slow
def test_concurrent_split_processes_match_one_run(reference, tmp_path):
    """Two processes started together (torchrun's RANK/WORLD_SIZE) share the manifest through its lock."""
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(recipe_to_toml(TINY))
    out = tmp_path / "set"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-m", "dflowgen", "generate", "--mode", "random", "--recipe", str(recipe_file),
                          "--num-samples", str(NUM_SAMPLES), "--out", str(out), "--device", "cpu", "--quiet"],
                         env={**env, "RANK": str(rank), "WORLD_SIZE": "2"})
        for rank in range(2)
    ]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    assert digests(out) == digests(reference)


def test_set_without_params_is_smaller_and_re_drawn_from_its_seed(reference, bank, tmp_path):
    recipe = with_overrides(TINY, {"generate.store_params": False})
    generate_set(recipe, 2, tmp_path, device="cpu", assets=bank, quiet=True)
    assert (tmp_path / shard_name(0)).stat().st_size < (reference / shard_name(0)).stat().st_size / 2
    dataset = ShardDataset(tmp_path)
    with pytest.raises(DflowgenError, match="store_params"):
        dataset.params(1)
    params = dflowgen.render.sample_params(recipe.render, bank, recipe.generate.seed, [dataset.meta(1)["index"]])
    output = dflowgen.render.render(params, bank, recipe.render)
    img2 = output.img2[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(img2, dataset[1].img2)


def test_split_assigns_every_shard_once():
    shards = [list(ShardSplit(index, 3).shards(8)) for index in range(3)]
    assert sorted(sum(shards, [])) == list(range(8)) and shards[0] == [0, 3, 6]
    assert ShardSplit.resolve(None, None, {"RANK": "1", "WORLD_SIZE": "4"}) == ShardSplit(1, 4)
    assert ShardSplit.resolve(2, 3, {"RANK": "1", "WORLD_SIZE": "4"}) == ShardSplit(2, 3)
    assert ShardSplit.resolve(None, None, {}) == ShardSplit(0, 1)


def test_matching_set_is_resumed_even_with_overwrite(reference, bank, tmp_path):
    generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, quiet=True)
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("shard-*.h5")}
    result = generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", overwrite=True, assets=bank, quiet=True)
    assert (result.shards_written, result.shards_skipped, result.complete) == (0, 3, True)
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("shard-*.h5")} == before
