"""`generate --target`: optimised sets end to end at a tiny size, with the packaged demo proxies.

The proxies are the real packaged RAFT-small pair (`demo-base`, `demo-target`), so these
tests need nothing from ../shared; sizes are 64×48 with 2 GRU iterations and 2 updates.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dflowgen.data.batches
import dflowgen.generate
from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.cli import cli
from dflowgen.data.shard_dataset import ShardDataset
from dflowgen.data.manifest import MANIFEST_NAME, read_manifest, verify_shards
from dflowgen.data.shard_check import shard_files
from dflowgen.data.spec import open_spec
from dflowgen.generate import generate_mix, generate_set
from dflowgen.optimize.proxies import Proxies, load_proxies
from dflowgen.recipes import parse_recipe, recipe_to_toml, with_overrides

# A 64×48 scene with pixel lengths to match; test_reproduce.py builds on it too.
TINY_RENDER = textwrap.dedent(
    """
    [render]
    width = 64
    height = 48
    canvas_margin = 8
    num_layers = [2, 3]
    layer_translation = [-4.0, 4.0]
    blur_kernel_size = 9
    [render.layer_warp]
    translation = [-6.0, 6.0]
    perspective = [-2.0, 2.0]
    [render.anchor_warp]
    translation = [-6.0, 6.0]
    perspective = [-2.0, 2.0]
    """
)
TINY = parse_recipe(
    'name = "tiny-dflow"\n'
    + TINY_RENDER
    + textwrap.dedent(
        """
        [generate]
        mode = "dflow"
        seed = 3
        batch_size = 2
        shard_size = 2
        preview_count = 1
        [optimize]
        base_model = "raft-small"
        base_weights = "demo-base"
        target_model = "raft-small"
        target_weights = "demo-target"
        proxy_iters = 2
        updates = 2
        decay_updates = 2
        copies = 1
        keep_threshold = 1e9
        """
    )
)
NUM_SAMPLES = 4
LOSS_COLUMNS = ("target_loss_initial", "target_loss_final", "base_loss_initial", "base_loss_final", "task_loss_final")


@pytest.fixture(scope="module")
def bank() -> LayerBank:
    return load_layer_bank(None, size=TINY.render.canvas_size)


@pytest.fixture(scope="module")
def proxies() -> Proxies:
    return load_proxies(TINY.optimize, torch.device("cpu"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bank, proxies) -> Path:
    """An uninterrupted run every other test compares with."""
    out = tmp_path_factory.mktemp("reference")
    generate_set(TINY, NUM_SAMPLES, out, device="cpu", assets=bank, proxies=proxies, quiet=True)
    return out


def digests(folder: Path) -> dict[str, str]:
    names = [path.name for path in shard_files(folder).values()] + [MANIFEST_NAME]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(names)}


def column(folder: Path, name: str) -> np.ndarray:
    """A meta column over the set's shards (a shard whose every sample was dropped holds none)."""
    shards = [h5py.File(path, "r") for path in shard_files(folder).values()]
    return np.concatenate([shard[f"meta/{name}"][:] for shard in shards if shard.attrs["num_samples"] > 0])


def test_every_sample_records_its_losses_alpha_updates_and_params(reference):
    dataset = ShardDataset(reference)
    assert len(dataset) == NUM_SAMPLES and not verify_shards(reference)
    meta = dataset.meta(1)
    for name in (*LOSS_COLUMNS, "alpha", "updates", "index", "seed"):
        assert name in meta, name
    assert meta["alpha"] == pytest.approx(TINY.optimize.alpha[0])
    assert 0 <= meta["updates"] <= TINY.optimize.updates
    assert all(np.isfinite(meta[name]) for name in LOSS_COLUMNS)
    assert "noise" in dataset.params(1)


def test_kept_samples_meet_the_threshold_and_the_others_are_counted(tmp_path, reference, bank, proxies):
    final = column(reference, "target_loss_final")
    threshold = float(np.median(final))
    strict = with_overrides(TINY, {"optimize.keep_threshold": threshold})
    result = generate_set(strict, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, proxies=proxies, quiet=True)
    kept = column(tmp_path, "target_loss_final")
    assert np.all(kept < threshold)
    np.testing.assert_array_equal(np.sort(kept), np.sort(final[final < threshold]))
    manifest = read_manifest(tmp_path)
    expected_dropped = int(np.sum(final >= threshold))
    assert expected_dropped > 0
    assert result.samples_dropped == manifest.samples_dropped == expected_dropped
    assert manifest.dropped_by_reason == {"threshold": expected_dropped} and manifest.complete


def test_same_seed_gives_the_same_bytes_and_a_resumed_run_equals_an_uninterrupted_one(
    tmp_path, reference, bank, proxies, monkeypatch
):
    real = dflowgen.data.batches.optimized_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second shard's first batch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dflowgen.data.batches, "optimized_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, proxies=proxies, quiet=True)
    assert len(shard_files(tmp_path)) == 1 and not read_manifest(tmp_path).complete
    monkeypatch.setattr(dflowgen.data.batches, "optimized_batch", real)
    result = generate_set(TINY, NUM_SAMPLES, tmp_path, device="cpu", assets=bank, proxies=proxies, quiet=True)
    assert (result.shards_written, result.shards_skipped) == (1, 1)
    assert digests(tmp_path) == digests(reference)


def test_a_nonfinite_sample_is_dropped_and_counted(tmp_path, bank, proxies, monkeypatch):
    real = dflowgen.data.batches.optimize_batch

    def poisoned(params, *args, **kwargs):
        params.layer_translation[0, 1, 0] = float("nan")
        return real(params, *args, **kwargs)

    monkeypatch.setattr(dflowgen.data.batches, "optimize_batch", poisoned)
    generate_set(TINY, 2, tmp_path, device="cpu", assets=bank, proxies=proxies, quiet=True)
    manifest = read_manifest(tmp_path)
    assert manifest.dropped_by_reason == {"nonfinite": 1} and manifest.samples_written == 1
    assert column(tmp_path, "index").tolist() == [1]


def test_changing_an_optimize_key_refuses_the_folder_but_not_for_random_sets(tmp_path, reference, bank, proxies):
    other = with_overrides(TINY, {"optimize.alpha": [5.0]})
    with pytest.raises(dflowgen.generate.DflowgenError, match="optimize.alpha"):
        generate_set(other, NUM_SAMPLES, reference, device="cpu", assets=bank, proxies=proxies, quiet=True)
    random = with_overrides(TINY, {"generate.mode": "random"})
    generate_set(random, 2, tmp_path, device="cpu", assets=bank, quiet=True)
    random_other = with_overrides(random, {"optimize.alpha": [5.0]})
    result = generate_set(random_other, 2, tmp_path, device="cpu", assets=bank, quiet=True)
    assert result.shards_skipped == 1


def test_alpha_combination_cycles_through_the_alphas(tmp_path, bank, proxies):
    combined = with_overrides(TINY, {"optimize.alpha": [5.0, 20.0]})
    generate_set(combined, 3, tmp_path, device="cpu", assets=bank, proxies=proxies, quiet=True)
    assert column(tmp_path, "alpha").tolist() == [5.0, 20.0, 5.0]


def test_mix_splits_the_samples_over_recipes_and_reads_as_one_set(tmp_path, bank):
    random = with_overrides(TINY, {"generate.mode": "random"})
    other = with_overrides(random, {"name": "wide", "render.layer_translation": [-5.0, 5.0]})
    results = generate_mix([random, other], 5, tmp_path, device="cpu", assets=bank, quiet=True)
    assert [result.out.name for result in results] == ["part-0-tiny-dflow", "part-1-wide"]
    assert [read_manifest(result.out).samples_written for result in results] == [3, 2]
    assert [read_manifest(result.out).header.seed for result in results] == [3, 4]
    dataset, _, _ = open_spec(f"shards:{tmp_path}")
    assert len(dataset) == 5
    with pytest.raises(dflowgen.generate.DflowgenError, match="other parts"):
        generate_mix([random], 5, tmp_path, device="cpu", assets=bank, quiet=True)


def write_recipe(tmp_path: Path, recipe) -> Path:
    path = tmp_path / "tiny-dflow.toml"
    path.write_text(recipe_to_toml(recipe))
    return path


def test_cli_target_writes_an_optimised_set_with_previews(tmp_path):
    recipe = write_recipe(tmp_path, with_overrides(TINY, {"generate.mode": "random"}))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["generate", "--target", str(recipe), "--num-samples", "2", "--out", str(out),
                                      "--device", "cpu", "--preview"])
    assert result.exit_code == 0, result.output
    assert "set complete with" in result.output and "rendered 2 samples" in result.output
    manifest = read_manifest(out)
    assert manifest.complete and "mode = \"dflow\"" in manifest.header.recipe
    assert list((out / "previews").glob("*.png"))
    inspected = CliRunner().invoke(cli, ["inspect", str(out), "--no-plot"])
    assert inspected.exit_code == 0 and "target     proxy loss" in inspected.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--target", "demo", "--recipe", "demo"], "do not give --recipe"),
        (["--target", "demo", "--mode", "random"], "--mode random"),
        (["--mode", "dflow"], "names no target proxy"),
        (["--target", "demo", "--target-ckpt", "no-such-weights"], "no-such-weights"),
        (["--target", "no-such-preset"], "no recipe named 'no-such-preset'"),
    ],
)
def test_cli_bad_dflow_input_is_one_line(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["generate", *args, "--num-samples", "2", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error:") and fragment in lines[0], result.output
    assert not out.exists()
