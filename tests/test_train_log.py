"""Visible training: TensorBoard event files written by hand, validation while training, `dflowgen plot`.

Tiny on purpose: RAFT-small, 64×64 crops, 2 GRU iterations, a handful of steps.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_train import TINY, PairList, synthetic_pair, write_chairs

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import Validation
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.data import DataSource
from dflowgen.train.log import EVENTS_NAME, LOG_NAME
from dflowgen.train.tfevents import (
    crc32c,
    decode_event,
    encode_event,
    file_header,
    masked_crc32c,
    read_records,
    read_scalars,
    scalar_record,
)
from dflowgen.train.trainer import train


def test_crc32c_and_its_mask_match_the_published_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    assert crc32c(b"\x00" * 32) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_events_have_the_tensorflow_wire_format_and_read_back():
    # Event{wall_time: 1.5, file_version: "brain.Event:2"}, as protoc serialises it.
    assert encode_event(1.5, file_version="brain.Event:2") == b"\x09" + struct.pack("<d", 1.5) + b"\x1a\x0dbrain.Event:2"
    # Event{wall_time: 0, step: 300, summary {value {tag: "a", simple_value: 0.5}}}
    expected = (b"\x09" + bytes(8) + b"\x10\xac\x02" + b"\x2a\x0a" + b"\x0a\x08" + b"\x0a\x01a" + b"\x15"
                + struct.pack("<f", 0.5))
    assert encode_event(0.0, 300, {"a": 0.5}) == expected
    header = file_header(2.0)
    assert struct.unpack("<Q", header[:8])[0] == len(header) - 16
    assert struct.unpack("<I", header[8:12])[0] == masked_crc32c(header[:8])
    event = decode_event(encode_event(3.25, 7, {"train/loss": 1.5, "val/x/epe": 2.0}))
    assert event == {"wall_time": 3.25, "step": 7, "scalars": {"train/loss": 1.5, "val/x/epe": 2.0}}


def test_a_damaged_event_file_is_a_clean_error(tmp_path):
    path = tmp_path / "events.out.tfevents.x"
    blob = file_header(1.0) + scalar_record(1.0, 5, {"train/loss": 0.25})
    path.write_bytes(blob)
    assert read_scalars(path) == [(5, "train/loss", 0.25)]
    damaged = bytearray(blob)
    damaged[-6] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(DflowgenError, match="bad data checksum"):
        list(read_records(path))
    path.write_bytes(blob[:-3])
    with pytest.raises(DflowgenError, match="truncated"):
        list(read_records(path))


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_validation_is_logged_to_jsonl_and_tensorboard_and_leaves_training_untouched(tmp_path):
    pairs = [synthetic_pair(index) for index in range(3)]
    config = dataclasses.replace(TINY, num_steps=3, val_every=2, val_iters=2, checkpoint_every=3)
    val = [DataSource(PairList(pairs[:2]), name="held-out")]
    with_val = train(config, [DataSource(PairList(pairs))], tmp_path / "val", device="cpu", quiet=True,
                     validation=Validation(val, config.val_iters))
    without = train(config, [DataSource(PairList(pairs))], tmp_path / "plain", device="cpu", quiet=True)
    # Validation reads no random state and restores the training mode: the parameters are bitwise the same.
    expected, actual = load_checkpoint(without.checkpoint)["model"], load_checkpoint(with_val.checkpoint)["model"]
    assert all(torch.equal(expected[key], actual[key]) for key in expected)

    records = _log(tmp_path / "val" / LOG_NAME)
    validations = [record for record in records if record.get("event") == "val"]
    assert [record["step"] for record in validations] == [2, 3]  # every val_every steps and after the last
    assert all(record["data"] == "held-out" and record["epe"] > 0 and 0 <= record["1px"] <= 100
               for record in validations)
    scalars = read_scalars(tmp_path / "val" / EVENTS_NAME)
    assert [(step, value) for step, tag, value in scalars if tag == "val/held-out/epe"] == [
        (record["step"], pytest.approx(record["epe"], rel=1e-6)) for record in validations]
    assert [step for step, tag, _ in scalars if tag == "train/loss"] == [1, 2, 3]

    with pytest.raises(DflowgenError, match="no ground-truth flow"):
        unlabelled = [pair._replace(flow=None) for pair in pairs]
        Validation([DataSource(PairList(unlabelled), name="frames")], config.val_iters)


def test_a_resumed_run_rewrites_the_event_file_to_match_the_trimmed_log(tmp_path):
    pairs = [synthetic_pair(index) for index in range(3)]
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # dies in step 4: steps 1-3 logged, last checkpoint at step 2
        train(TINY, [DataSource(PairList(pairs, fail_after=3 * TINY.batch_size))], out, device="cpu", quiet=True)
    assert [step for step, tag, _ in read_scalars(out / EVENTS_NAME) if tag == "train/loss"] == [1, 2, 3]
    train(TINY, [DataSource(PairList(pairs))], out, resume=True, device="cpu", quiet=True)
    losses = [(step, value) for step, tag, value in read_scalars(out / EVENTS_NAME) if tag == "train/loss"]
    assert losses == [(record["step"], pytest.approx(record["loss"], rel=1e-6)) for record in _log(out / LOG_NAME)]
    assert [step for step, _ in losses] == [1, 2, 3, 4]


def test_tensorboard_reads_the_event_file(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="tensorboard is not installed (the format is checked by our reader)")
    (tmp_path / EVENTS_NAME).write_bytes(file_header(1.0) + scalar_record(2.0, 10, {"train/loss": 0.5}))
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(scalar.step, scalar.value) for scalar in events.Scalars("train/loss")] == [(10, 0.5)]


def test_cli_train_with_val_then_plot(tmp_path):
    chairs = write_chairs(tmp_path / "chairs")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[train]\nmodel = "raft-small"\nnum_steps = 2\nbatch_size = 2\ncrop_size = [64, 64]\n'
                      "iters = 2\ncheckpoint_every = 2\nlog_every = 1\nnum_workers = 0\nval_every = 1\n"
                      "val_iters = 2\n")
    runner = CliRunner()
    spec = f"chairs:{chairs}:all"
    result = runner.invoke(cli, ["train", "--data", spec, "--val", spec, "--recipe", str(recipe), "--out",
                                 str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in _log(tmp_path / "run" / LOG_NAME) if r.get("event") == "val"] == [1, 2]
    assert (tmp_path / "run" / LAST_NAME).is_file()

    result = runner.invoke(cli, ["plot", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    result = runner.invoke(cli, ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and (tmp_path / "c.png").stat().st_size > 1000

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / LOG_NAME).write_text("not json\n")
    for folder, message in ((tmp_path / "none", "holds no training log"), (tmp_path / "bad", "is not a training log")):
        result = runner.invoke(cli, ["plot", str(folder)])
        assert result.exit_code == 2 and message in result.output
        assert len(result.output.strip().splitlines()) == 1
