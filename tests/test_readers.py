"""Benchmark readers on the shared sample data (sintel-mini, chairs-mini, tiny/, unlabelled frames)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dflowgen.data.readers import FlyingChairs, FrameFolder, Sintel
from dflowgen.data.sample import FlowPair
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo

SINTEL_PAIRS = {
    "clean/alley_1/frame_0002", "clean/alley_2/frame_0002", "clean/cave_2/frame_0002",
    "final/alley_1/frame_0002", "final/ambush_4/frame_0004", "final/ambush_4/frame_0006",
    "final/bandage_1/frame_0035", "final/cave_2/frame_0002", "final/temple_3/frame_0022",
}


def test_sintel_mini_lists_the_nine_labelled_pairs(shared_data):
    both = Sintel(shared_data / "sintel-mini")
    assert set(both.names) == SINTEL_PAIRS and len(both) == 9
    assert len(Sintel(shared_data / "sintel-mini", "clean")) == 3
    assert len(Sintel(shared_data / "sintel-mini", "final")) == 6


def test_sintel_pair_contents_match_the_files(shared_data):
    root = shared_data / "sintel-mini" / "training"
    dataset = Sintel(shared_data / "sintel-mini", "final", scenes=["ambush_4"])
    assert dataset.names == ["final/ambush_4/frame_0004", "final/ambush_4/frame_0006"]  # no (5, 6): frame 5 has no flow
    pair = dataset[1]
    assert isinstance(pair, FlowPair)
    assert pair.img1.shape == (436, 1024, 3) and pair.img1.dtype == np.uint8
    np.testing.assert_array_equal(pair.img1, np.asarray(Image.open(root / "final/ambush_4/frame_0006.png")))
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(root / "final/ambush_4/frame_0007.png")))
    np.testing.assert_array_equal(pair.flow, read_flo(root / "flow/ambush_4/frame_0006.flo"))
    invalid = np.asarray(Image.open(root / "invalid/ambush_4/frame_0006.png")) > 0
    assert pair.valid.dtype == bool
    np.testing.assert_array_equal(pair.valid, ~invalid)


def test_sintel_exclude_occluded_also_drops_occlusions(shared_data):
    root = shared_data / "sintel-mini" / "training"
    pair = Sintel(shared_data / "sintel-mini", "clean", scenes=["alley_1"], exclude_occluded=True)[0]
    occluded = np.asarray(Image.open(root / "occlusions/alley_1/frame_0002.png")) > 0
    invalid = np.asarray(Image.open(root / "invalid/alley_1/frame_0002.png")) > 0
    assert occluded.any()
    np.testing.assert_array_equal(pair.valid, ~occluded & ~invalid)


def test_sintel_scene_filter_rejects_unknown_scenes(shared_data):
    with pytest.raises(DflowgenError, match=r"alley_9.*available: alley_1, alley_2"):
        Sintel(shared_data / "sintel-mini", scenes=["alley_9"])
    with pytest.raises(DflowgenError, match=r"alley_2 not under .* \(final\)"):
        Sintel(shared_data / "sintel-mini", "final", scenes=["alley_2"])  # alley_2 is in the clean pass only
    assert Sintel(shared_data / "sintel-mini", scenes=["alley_2"]).names == ["clean/alley_2/frame_0002"]


def test_chairs_mini_splits_follow_the_split_file(shared_data):
    root = shared_data / "chairs-mini"
    train, val, every = FlyingChairs(root), FlyingChairs(root, "val"), FlyingChairs(root, "all")
    assert (train.names, val.names, len(every)) == (["00001", "00002", "00003"], ["00004"], 4)
    pair = val[0]
    assert pair.img1.shape == (384, 512, 3) and pair.valid is None
    np.testing.assert_array_equal(pair.flow, read_flo(root / "FlyingChairs_release/data/00004_flow.flo"))


def test_chairs_reader_accepts_the_data_folder_itself(shared_data):
    pair_only = FlyingChairs(shared_data / "tiny", "all")  # tiny/ holds 00001_img{1,2}.ppm + 00001_flow.flo
    assert pair_only.names == ["00001"]
    assert pair_only[0].flow.shape == (50, 50, 2)
    with pytest.raises(DflowgenError, match="FlyingChairs_train_val.txt"):
        FlyingChairs(shared_data / "tiny", "train")


def test_frame_folder_pairs_consecutive_frames(shared_data):
    demo = FrameFolder(shared_data / "sintel-unlabeled" / "training" / "final" / "demo")
    assert len(demo) == 9 and demo.names[0] == "frame_0016"
    first, second = demo[0], demo[1]
    assert first.flow is None and first.valid is None
    np.testing.assert_array_equal(first.img2, second.img1)


def test_frame_folder_reads_one_sequence_per_subfolder(shared_data):
    davis = FrameFolder(shared_data / "davis-unlabeled")
    assert len(davis) == 79 and davis.names[0] == "bmx-trees/00000"
    assert davis[78].img1.shape == (240, 432, 3)
