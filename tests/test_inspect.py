"""`dflowgen inspect` on a small synthetic set with known statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dflowgen.cli import cli
from dflowgen.data.manifest import record_shard, sync_manifest
from dflowgen.data.shards import SampleBatch, ShardSetHeader, ShardWriter
from dflowgen.data.statistics import PLOT_NAME, format_statistics, set_statistics

H, W = 6, 8
NUM_SAMPLES = 5


def write_constant_flow_set(folder):
    """Sample i moves every pixel by (3i, 4i) (magnitude 5i); its left half is valid; fog on even i."""
    header = ShardSetHeader(recipe="", seed=1, total_samples=NUM_SAMPLES, shard_size=2, width=W, height=H,
                            flow_dtype="float32", asset_fingerprint="x")
    sync_manifest(folder, header)
    for shard_index in range(header.num_shards):
        with ShardWriter(folder, header, shard_index) as writer:
            index = np.asarray(writer.samples)
            n = len(index)
            flow = np.broadcast_to(np.stack([3.0 * index, 4.0 * index], axis=1)[:, None, None, :], (n, H, W, 2))
            valid = np.zeros((n, H, W), np.uint8)
            valid[:, :, : W // 2] = 1
            occ = np.zeros((n, H, W), np.uint8)
            occ[:, : H // 2] = 1  # a quarter of the pixels, half of the valid ones
            writer.append(SampleBatch(
                img1=np.zeros((n, H, W, 3), np.uint8), img2=np.zeros((n, H, W, 3), np.uint8),
                flow=flow.astype(np.float32), valid=valid, occ=occ, params={},
                meta={"index": index, "effect_fog": (index % 2 == 0).astype(np.uint8),
                      "effect_blur": np.zeros(n, np.uint8)},
            ))
            record_shard(folder, writer.commit())


def test_statistics_match_the_known_flows(tmp_path):
    write_constant_flow_set(tmp_path)
    stats = set_statistics(tmp_path, bins=4)
    assert (stats.num_samples, stats.num_shards, stats.planned_shards, stats.complete) == (5, 3, 3, True)
    assert (stats.width, stats.height) == (W, H)
    assert stats.valid_fraction == pytest.approx(0.5)
    assert stats.occluded_fraction == pytest.approx(0.5)
    assert stats.flow_mean == pytest.approx(np.mean([0, 5, 10, 15, 20]))
    assert stats.flow_max == pytest.approx(20)
    assert stats.effects == {"blur": 0.0, "fog": pytest.approx(3 / 5)}
    edges, counts = np.asarray(stats.histogram_edges), np.asarray(stats.histogram_counts)
    assert edges[0] == 0 and edges[-1] > 20 and len(counts) <= 4
    assert counts.sum() == NUM_SAMPLES * H * W // 2
    expected = np.histogram([0, 5, 10, 15, 20], bins=edges)[0] * (H * W // 2)
    np.testing.assert_array_equal(counts, expected)
    text = format_statistics(stats)
    assert "5 in 3 of 3 shards" in text and "fog 60%" in text and "#" in text


def test_inspect_cli_text_json_and_plot(tmp_path):
    write_constant_flow_set(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{W}x{H}" in result.output and "max 20.00 px" in result.output
    assert (tmp_path / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = runner.invoke(cli, ["inspect", str(tmp_path), "--json", "--plot", str(tmp_path / "h.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["num_samples"] == NUM_SAMPLES and report["effects"]["fog"] == pytest.approx(0.6)
    assert (tmp_path / "h.png").is_file()


def test_inspect_of_a_folder_without_shards_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no shards" in result.output
