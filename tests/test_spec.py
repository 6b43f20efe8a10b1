"""Data spec strings: KIND:ROOT[:OPTION]...[*WEIGHT]."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dflowgen.data.readers import KITTI, FrameFolder, Sintel
from dflowgen.data.spec import KINDS, SPEC_HELP, DataSpec, open_spec, parse_spec
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import write_kitti_png


def test_parse_reads_kind_root_options_and_weight():
    parsed = parse_spec("sintel:/data/Sintel:final:noc:scenes=alley_1,cave_2*100")
    assert (parsed.kind, parsed.root, parsed.weight) == ("sintel", Path("/data/Sintel"), 100)
    assert parsed.options == {"render_pass": "final", "exclude_occluded": True, "scenes": ("alley_1", "cave_2")}
    assert parse_spec("kitti:/d/KITTI:noc").options == {"flow": "noc"}
    assert parse_spec("chairs:/d/FlyingChairs:val").options == {"split": "val"}
    plain = parse_spec("shards:out/dir")
    assert (plain.root, plain.options, plain.weight) == (Path("out/dir"), {}, 1)


def test_root_keeps_colons_that_are_not_options():
    assert parse_spec("frames:/videos/take:2").root == Path("/videos/take:2")
    assert parse_spec("sintel:/a:b/Sintel:clean").root == Path("/a:b/Sintel")
    assert parse_spec("hd1k:/d/clean").root == Path("/d/clean")  # hd1k has no options: 'clean' is path
    assert parse_spec("frames:/v/a*b/c").root == Path("/v/a*b/c")  # a '*' followed by a path is part of ROOT


@pytest.mark.parametrize("spec, message", [
    ("flowers:/d",
     r"unknown data kind 'flowers' .* kinds: sintel, kitti, chairs, things, autoflow, spring, middlebury, hd1k, "
     r"shards, frames"),
    ("sintel:/d*0", r"bad weight '0' .* positive integer"),
    ("sintel:/d*1.5", r"bad weight '1.5'"),
    ("sintel:/d:final*", r"bad weight ''"),
    ("sintel:/d:scene=alley_1", r"unknown option 'scene=alley_1' .* clean\|final\|both, train\|test, noc, scenes=A,B"),
    ("sintel:/d:scenes=", r"bad option 'scenes='"),
    ("sintel:/d:clean:final", r"sets render_pass twice"),
    ("kitti:", r"has no root: expected kitti:ROOT"),
])
def test_malformed_specs_are_one_line_errors(spec, message):
    with pytest.raises(DflowgenError, match=message) as error:
        parse_spec(spec)
    assert "\n" not in str(error.value)


def test_open_spec_unpacks_into_dataset_weight_sparse(shared_data):
    opened = open_spec(f"sintel:{shared_data / 'sintel-mini'}:final*100")
    assert isinstance(opened, DataSpec) and opened.kind == "sintel"
    dataset, weight, sparse = opened
    assert isinstance(dataset, Sintel) and len(dataset) == 6 and weight == 100 and sparse is False
    chairs, _, _ = open_spec(f"chairs:{shared_data / 'chairs-mini'}")
    assert len(chairs) == 3  # the train split by default
    frames, weight, _ = open_spec(f"frames:{shared_data / 'davis-unlabeled' / 'bmx-trees'}*2")
    assert isinstance(frames, FrameFolder) and len(frames) == 79 and weight == 2


def test_open_spec_flags_sparse_kinds(tmp_path):
    image_dir, flow_dir = tmp_path / "training" / "image_2", tmp_path / "training" / "flow_occ"
    image_dir.mkdir(parents=True)
    flow_dir.mkdir(parents=True)
    for suffix in ("10", "11"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image_dir / f"000000_{suffix}.png")
    write_kitti_png(flow_dir / "000000_10.png", np.zeros((8, 8, 2), np.float32))
    dataset, weight, sparse = open_spec(f"kitti:{tmp_path}:occ")
    assert isinstance(dataset, KITTI) and sparse is True and weight == 1


def test_open_spec_explains_a_mistyped_option(shared_data):
    with pytest.raises(DflowgenError, match=r"unknown option 'fnal' .* valid options for sintel"):
        open_spec(f"sintel:{shared_data / 'sintel-mini'}:fnal")
    with pytest.raises(DflowgenError, match=r"/nowhere does not exist \(expected ROOT/training"):
        open_spec("sintel:/nowhere:final")
    with pytest.raises(DflowgenError, match=r"hd1k takes no options"):
        open_spec(f"hd1k:{shared_data / 'tiny'}:occ")


def test_shards_dispatch_to_shard_dataset(monkeypatch, tmp_path):
    opened_folders = []

    class FakeShardDataset:
        def __init__(self, folder):
            opened_folders.append(Path(folder))

    module = types.ModuleType("dflowgen.data.shard_dataset")
    module.ShardDataset = FakeShardDataset
    monkeypatch.setitem(sys.modules, "dflowgen.data.shard_dataset", module)
    dataset, weight, sparse = open_spec(f"shards:{tmp_path}*3")
    assert isinstance(dataset, FakeShardDataset) and opened_folders == [tmp_path] and (weight, sparse) == (3, False)


def test_help_names_every_kind():
    assert all(kind in SPEC_HELP for kind in KINDS)
