"""Shard writer, manifest, verification and ShardDataset on small synthetic samples."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from torch.utils.data import DataLoader

from dflowgen.cli import cli
from dflowgen.data.shard_dataset import ShardDataset
from dflowgen.errors import DflowgenError
from dflowgen.data.manifest import MANIFEST_NAME, read_manifest, record_shard, sync_manifest, verify_shards
from dflowgen.data.shard_check import shard_entry_from_file
from dflowgen.data.shards import SampleBatch, ShardSetHeader, ShardWriter, shard_name
from dflowgen.data.statistics import set_statistics

H, W = 12, 16


def synthetic_batch(indices: range) -> SampleBatch:
    """Samples whose every value is a function of their global index alone."""
    index = np.asarray(indices)
    rngs = [np.random.default_rng(i) for i in indices]
    return SampleBatch(
        img1=np.stack([rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for rng in rngs]),
        img2=np.stack([rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for rng in rngs]),
        flow=np.stack([rng.normal(0, 5, (H, W, 2)).astype(np.float32) for rng in rngs]),
        valid=np.stack([(rng.random((H, W)) > 0.1).astype(np.uint8) for rng in rngs]),
        occ=np.stack([(rng.random((H, W)) > 0.7).astype(np.uint8) for rng in rngs]),
        params={
            "translation": np.stack([rng.normal(size=(9, 2)).astype(np.float32) for rng in rngs]),
            "num_layers": index % 3 + 1,
        },
        meta={"index": index.astype(np.int64), "effect_fog": (index % 2).astype(np.uint8)},
    )


def make_header(num_samples: int = 7, shard_size: int = 3, flow_dtype: str = "float32") -> ShardSetHeader:
    return ShardSetHeader(
        recipe="[generate]\nseed = 5\n", seed=5, total_samples=num_samples, shard_size=shard_size,
        width=W, height=H, flow_dtype=flow_dtype, asset_fingerprint="abc",
    )


def write_set(folder: Path, header: ShardSetHeader, batch_size: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sync_manifest(folder, header)
    for shard_index in range(header.num_shards):
        with ShardWriter(folder, header, shard_index) as writer:
            for start in range(0, len(writer.samples), batch_size):
                writer.append(synthetic_batch(writer.samples[start : start + batch_size]))
            record_shard(folder, writer.commit())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_roundtrip_through_shard_dataset(tmp_path):
    header = make_header()
    write_set(tmp_path, header)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".manifest.lock", MANIFEST_NAME] + [shard_name(k) for k in range(3)]
    dataset = ShardDataset(tmp_path)
    assert len(dataset) == 7
    expected = synthetic_batch(range(7))
    for index in range(7):
        pair = dataset[index]
        np.testing.assert_array_equal(pair.img1, expected.img1[index])
        np.testing.assert_array_equal(pair.img2, expected.img2[index])
        np.testing.assert_array_equal(pair.flow, expected.flow[index])
        np.testing.assert_array_equal(pair.valid, expected.valid[index].astype(bool))
        np.testing.assert_array_equal(pair.occ, expected.occ[index].astype(bool))
        assert pair.flow.dtype == np.float32 and pair.valid.dtype == bool and pair.img1.dtype == np.uint8
        assert pair.name == f"sample-{index:07d}"
        params = dataset.params(index)
        np.testing.assert_array_equal(params["translation"], expected.params["translation"][index : index + 1])
        assert dataset.meta(index) == {"index": index, "effect_fog": index % 2}
    with pytest.raises(IndexError):
        dataset[7]

    manifest = read_manifest(tmp_path)
    assert manifest.complete and manifest.samples_written == 7 and manifest.samples_not_written == 0
    assert [entry.num_samples for entry in manifest.shards] == [3, 3, 1]
    with h5py.File(tmp_path / shard_name(1)) as shard:
        assert shard["flow"].chunks == (1, H, W, 2) and shard["flow"].compression == "gzip"
        assert shard.attrs["first_sample"] == 3 and shard.attrs["recipe"] == header.recipe
        assert ShardSetHeader.from_mapping(shard.attrs) == header


def test_format_1_shards_still_read_with_their_old_meaning(tmp_path):
    """Format 1 had no ``occ`` (its ``valid`` left occluded points out): read as it is, ``occ`` None."""
    header = dataclasses.replace(make_header(num_samples=2), format_version=1)
    write_set(tmp_path, header)
    with h5py.File(tmp_path / shard_name(0), "r+") as shard:
        del shard["occ"]
    (tmp_path / MANIFEST_NAME).unlink()  # the edit changed the shard's bytes: describe it anew
    sync_manifest(tmp_path, header)
    pair = ShardDataset(tmp_path)[1]
    assert pair.occ is None
    np.testing.assert_array_equal(pair.valid, synthetic_batch(range(2)).valid[1].astype(bool))
    assert set_statistics(tmp_path).occluded_fraction is None


def test_float16_flow_is_stored_as_float16_and_read_as_float32(tmp_path):
    write_set(tmp_path, make_header(num_samples=2, flow_dtype="float16"))
    with h5py.File(tmp_path / shard_name(0)) as shard:
        assert shard["flow"].dtype == np.float16
    pair = ShardDataset(tmp_path)[1]
    assert pair.flow.dtype == np.float32
    np.testing.assert_allclose(pair.flow, synthetic_batch(range(2)).flow[1], atol=0.01)


def test_same_samples_give_the_same_bytes(tmp_path):
    header = make_header()
    write_set(tmp_path / "a", header)
    write_set(tmp_path / "b", header)
    for name in [shard_name(k) for k in range(3)] + [MANIFEST_NAME]:
        assert sha(tmp_path / "a" / name) == sha(tmp_path / "b" / name), name


def test_interrupted_writer_leaves_no_file(tmp_path):
    header = make_header()
    sync_manifest(tmp_path, header)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, header, 0) as writer:
            writer.append(synthetic_batch(range(2)))
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [".manifest.lock", MANIFEST_NAME]


def test_dropped_samples_shrink_the_shard_and_are_counted(tmp_path):
    header = make_header(num_samples=3)
    sync_manifest(tmp_path, header)
    with ShardWriter(tmp_path, header, 0) as writer:
        writer.append(synthetic_batch(range(0, 2)))
        record_shard(tmp_path, writer.commit({"threshold": 1}))
    manifest = read_manifest(tmp_path)
    assert (manifest.samples_written, manifest.samples_dropped, manifest.complete) == (2, 1, True)
    assert manifest.dropped_by_reason == {"threshold": 1}
    assert shard_entry_from_file(tmp_path / shard_name(0)) == manifest.shards[0]
    dataset = ShardDataset(tmp_path)
    assert len(dataset) == 2 and dataset[1].name == "sample-0000001"


def test_commit_refuses_unaccounted_samples(tmp_path):
    header = make_header(num_samples=3)
    sync_manifest(tmp_path, header)
    with pytest.raises(ValueError, match="2 written \\+ 0 dropped != 3 planned"):
        with ShardWriter(tmp_path, header, 0) as writer:
            writer.append(synthetic_batch(range(0, 2)))
            writer.commit()
    assert not list(tmp_path.glob("*.h5"))


def test_unrecorded_shard_is_reported_then_adopted(tmp_path):
    header = make_header()
    write_set(tmp_path, header)
    manifest = read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(manifest.with_shards({e.index: e for e in manifest.shards[:2]}).to_json())
    assert [(p.file, p.kind) for p in verify_shards(tmp_path)] == [(shard_name(2), "unlisted")]
    assert sync_manifest(tmp_path, header) == manifest
    assert verify_shards(tmp_path) == []


def test_verify_names_missing_truncated_and_corrupt_shards(tmp_path):
    write_set(tmp_path, make_header(num_samples=12, shard_size=3))
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 0 and "ok" in result.output and "12 samples" in result.output

    (tmp_path / shard_name(0)).unlink()
    truncated = tmp_path / shard_name(1)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    corrupt = tmp_path / shard_name(3)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))

    problems = verify_shards(tmp_path)
    assert [(p.file, p.kind) for p in problems] == [
        (shard_name(0), "missing"),
        (shard_name(1), "truncated"),
        (shard_name(3), "corrupt"),
    ]
    result = runner.invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 1
    for name in (shard_name(0), shard_name(1), shard_name(3)):
        assert name in result.output
    assert shard_name(2) not in result.output


def test_verify_without_manifest_is_a_problem(tmp_path):
    assert [p.kind for p in verify_shards(tmp_path)] == ["missing"]
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "not found" in result.output


def _keep(batch):
    return batch


def test_shard_dataset_with_dataloader_workers(tmp_path):
    write_set(tmp_path, make_header(num_samples=10, shard_size=3))
    dataset = ShardDataset(tmp_path)
    dataset[0]  # a handle opened in the parent must not leak into the workers
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=_keep)
    pairs = [pair for batch in loader for pair in batch]
    assert [pair.name for pair in pairs] == [f"sample-{i:07d}" for i in range(10)]
    expected = synthetic_batch(range(10))
    for index, pair in enumerate(pairs):
        np.testing.assert_array_equal(pair.flow, expected.flow[index])


def _one_line_error(args: list[str]) -> str:
    """Run the CLI, check it failed with one line and exit 2, and return that line."""
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("dflowgen: error:"), result.output
    return lines[0]


def _edit_manifest(folder: Path, **changes) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**data, **changes}))


@pytest.mark.parametrize("changes, fragment", [
    ({"total_samples": 10**15}, "'total_samples' must be in"),
    ({"shard_size": 0}, "'shard_size' must be in"),
    ({"shard_size": "3"}, "'shard_size' must be an integer"),
    ({"width": 1 << 30}, "'width' must be in"),
    ({"flow_dtype": "object"}, "flow_dtype"),
    ({"shards": [{"file": "x"}]}, "shard entry"),
    ({"shards": "all"}, "'shards' must be a list"),
])
def test_bad_manifests_are_one_line_errors_at_once(tmp_path, changes, fragment):
    """A manifest is checked field by field: no 139 s loop over 10^15 planned samples, no MemoryError."""
    write_set(tmp_path, make_header())
    _edit_manifest(tmp_path, **changes)
    with pytest.raises(DflowgenError, match=re.escape(fragment)):
        read_manifest(tmp_path)
    for command in (["verify"], ["inspect", "--no-plot"]):
        assert MANIFEST_NAME in _one_line_error([*command, str(tmp_path)])
    with pytest.raises(DflowgenError, match=MANIFEST_NAME):
        ShardDataset(tmp_path)


def test_manifest_of_random_bytes_is_a_one_line_error(tmp_path):
    write_set(tmp_path, make_header())
    (tmp_path / MANIFEST_NAME).write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert "is not a dflowgen manifest" in _one_line_error(["verify", str(tmp_path)])


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "foreign"])
def test_damaged_shards_are_named_by_every_reader(tmp_path, damage):
    header = make_header()
    write_set(tmp_path, header)
    path = tmp_path / shard_name(1)
    if damage == "zeroed":
        path.write_bytes(bytes(path.stat().st_size))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a whole shard of another set (other seed) under this set's name
        write_set(tmp_path / "other", dataclasses.replace(header, seed=6))
        path.write_bytes((tmp_path / "other" / shard_name(1)).read_bytes())
        (tmp_path / MANIFEST_NAME).unlink()  # no size or checksum to compare: the header check must find it
    assert shard_name(1) in _one_line_error(["inspect", "--no-plot", str(tmp_path)])
    with pytest.raises(DflowgenError, match=shard_name(1)):
        ShardDataset(tmp_path)
    run = tmp_path / "run"
    assert shard_name(1) in _one_line_error(["train", "--data", f"shards:{tmp_path}", "--out", str(run)])
    assert not run.exists()


def test_unreadable_sample_is_named_with_its_shard(tmp_path):
    """A shard whose header is sound but one sample's compressed chunk is damaged: the error names both."""
    write_set(tmp_path, make_header())
    (tmp_path / MANIFEST_NAME).unlink()
    path = tmp_path / shard_name(0)
    with h5py.File(path, "r") as shard:
        chunk = shard["flow"].id.get_chunk_info(1)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset : chunk.byte_offset + chunk.size] = bytes(chunk.size)
    path.write_bytes(bytes(data))
    dataset = ShardDataset(tmp_path)
    dataset[0]
    with pytest.raises(DflowgenError, match=rf"{shard_name(0)}: sample 1 is unreadable"):
        dataset[1]
