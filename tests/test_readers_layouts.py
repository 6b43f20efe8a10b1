"""Readers on tiny fake datasets written into tmp_path: KITTI, Middlebury, HD1K, Sintel test, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from dflowgen.data.readers import HD1K, KITTI, FlyingChairs, FrameFolder, Middlebury, Sintel
from dflowgen.data.readers.files import read_rgb
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import write_flo, write_kitti_png

HEIGHT, WIDTH = 12, 16


def write_image(path: Path, seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A random RGB PNG at ``path`` (parents made); returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _flow(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, (HEIGHT, WIDTH, 2)).astype(np.float32)


def _kitti(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for index in range(2):
        for split in ("training", "testing"):
            write_image(root / split / "image_2" / f"{index:06d}_10.png", index)
            write_image(root / split / "image_2" / f"{index:06d}_11.png", index + 10)
        flow, valid = _flow(index), np.random.default_rng(index).random((HEIGHT, WIDTH)) < 0.3
        for name, mask in (("flow_occ", valid), ("flow_noc", valid & (np.arange(WIDTH) < 8))):
            (root / "training" / name).mkdir(parents=True, exist_ok=True)
            write_kitti_png(root / "training" / name / f"{index:06d}_10.png", flow, mask)
            truth[f"{name}/{index}"] = (flow, mask)
    return truth


def test_kitti_reads_sparse_16bit_flow(tmp_path):
    truth = _kitti(tmp_path)
    dataset = KITTI(tmp_path)
    assert dataset.sparse and dataset.names == ["000000", "000001"]
    pair = dataset[1]
    flow, valid = truth["flow_occ/1"]
    np.testing.assert_array_equal(pair.valid, valid)
    np.testing.assert_allclose(pair.flow, np.round(flow * 64) / 64, atol=1e-6)
    noc = KITTI(tmp_path, flow="noc")[1]
    np.testing.assert_array_equal(noc.valid, truth["flow_noc/1"][1])
    test = KITTI(tmp_path, split="test")
    assert len(test) == 2 and test[0].flow is None


def test_kitti_wrong_layout_says_what_was_expected(tmp_path):
    with pytest.raises(DflowgenError, match=r"no KITTI frames under .*training/image_2/000000_10.png"):
        KITTI(tmp_path)
    write_image(tmp_path / "training" / "image_2" / "000000_10.png", 0)
    write_image(tmp_path / "training" / "image_2" / "000000_11.png", 1)
    with pytest.raises(DflowgenError, match=r"no KITTI flow .*flow_occ"):
        KITTI(tmp_path)


def test_middlebury_marks_unknown_flow_invalid(tmp_path):
    flow = _flow(3)
    flow[2:4, 5:9] = 1.666e9  # Middlebury's UNKNOWN_FLOW value
    write_image(tmp_path / "other-data" / "Venus" / "frame10.png", 0)
    write_image(tmp_path / "other-data" / "Venus" / "frame11.png", 1)
    write_image(tmp_path / "other-data" / "NoTruth" / "frame10.png", 2)
    write_image(tmp_path / "other-data" / "NoTruth" / "frame11.png", 3)
    (tmp_path / "other-gt-flow" / "Venus").mkdir(parents=True)
    write_flo(tmp_path / "other-gt-flow" / "Venus" / "flow10.flo", flow)
    dataset = Middlebury(tmp_path)
    assert dataset.names == ["Venus"]
    pair = dataset[0]
    assert pair.valid.sum() == HEIGHT * WIDTH - 8 and not pair.valid[2:4, 5:9].any()
    assert np.abs(pair.flow).max() <= 20
    with pytest.raises(DflowgenError, match=r"eval-data/<scene>/frame10.png"):
        Middlebury(tmp_path, "test")


def test_hd1k_pairs_each_flow_map_with_the_next_frame(tmp_path):
    for frame in range(3):
        write_image(tmp_path / "hd1k_input" / "image_2" / f"000000_{frame:04d}.png", frame)
    flow_dir = tmp_path / "hd1k_flow_gt" / "flow_occ"
    flow_dir.mkdir(parents=True)
    for frame in range(3):  # the last map has no next frame on disk: skipped
        write_kitti_png(flow_dir / f"000000_{frame:04d}.png", _flow(frame), np.ones((HEIGHT, WIDTH), bool))
    dataset = HD1K(tmp_path)
    assert dataset.sparse and dataset.names == ["000000_0000", "000000_0001"]
    pair = dataset[1]
    np.testing.assert_array_equal(pair.img2, read_rgb(tmp_path / "hd1k_input" / "image_2" / "000000_0002.png"))
    assert pair.valid.all()
    with pytest.raises(DflowgenError, match=r"no HD1K data under .*hd1k_input/image_2/000000_0000.png"):
        HD1K(tmp_path / "hd1k_input")


def test_sintel_test_split_has_all_consecutive_pairs_without_flow(tmp_path):
    for frame in (1, 2, 3):
        write_image(tmp_path / "test" / "final" / "market_1" / f"frame_{frame:04d}.png", frame)
    dataset = Sintel(tmp_path, "final", split="test")
    assert dataset.names == ["final/market_1/frame_0001", "final/market_1/frame_0002"]
    assert dataset[1].flow is None and dataset[1].valid is None


def test_sintel_wrong_layout_is_one_line(tmp_path):
    with pytest.raises(DflowgenError) as error:
        Sintel(tmp_path, "clean")
    expected = f"{tmp_path}/training/clean/<scene>/frame_0001.png"
    assert str(error.value) == f"no Sintel frames under {tmp_path}: expected {expected}"
    with pytest.raises(DflowgenError, match="is not a folder"):
        Sintel(tmp_path / "missing")
    with pytest.raises(DflowgenError, match="clean, final, both"):
        Sintel(tmp_path, "albedo")


def test_corrupt_image_names_the_file(tmp_path):
    for frame in (1, 2):
        write_image(tmp_path / "training" / "clean" / "s" / f"frame_{frame:04d}.png", frame)
    (tmp_path / "training" / "flow" / "s").mkdir(parents=True)
    write_flo(tmp_path / "training" / "flow" / "s" / "frame_0001.flo", _flow(0))
    broken = tmp_path / "training" / "clean" / "s" / "frame_0002.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = Sintel(tmp_path, "clean")
    with pytest.raises(DflowgenError, match=f"cannot read image {broken}"):
        dataset[0]
    truncated = tmp_path / "training" / "flow" / "s" / "frame_0001.flo"
    truncated.write_bytes(truncated.read_bytes()[:40])
    write_image(broken, 2)
    with pytest.raises(DflowgenError, match="frame_0001.flo is truncated"):
        dataset[0]


def test_flow_of_another_size_is_an_error(tmp_path):
    data = tmp_path / "FlyingChairs_release" / "data"
    write_image(data / "00001_img1.ppm", 0)
    write_image(data / "00001_img2.ppm", 1)
    write_flo(data / "00001_flow.flo", np.zeros((HEIGHT + 1, WIDTH, 2), np.float32))
    with pytest.raises(DflowgenError, match=r"00001_flow.flo is 16×13 but .*00001_img1.ppm is 16×12"):
        FlyingChairs(tmp_path, "all")[0]
    (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n1\n")
    with pytest.raises(DflowgenError, match="one label 1 \\(train\\) or 2 \\(val\\) per pair: 1 pairs"):
        FlyingChairs(tmp_path)


def test_grey_and_16bit_frames_become_rgb(tmp_path):
    Image.fromarray(np.full((HEIGHT, WIDTH), 90, np.uint8)).save(tmp_path / "a_0.png")
    Image.fromarray(np.full((HEIGHT, WIDTH), 200 * 257, np.uint16)).save(tmp_path / "a_1.png")
    pair = FrameFolder(tmp_path)[0]
    assert pair.img1.shape == pair.img2.shape == (HEIGHT, WIDTH, 3)
    assert (pair.img1 == 90).all() and (pair.img2 == 200).all()


def test_frame_folder_needs_two_frames(tmp_path):
    write_image(tmp_path / "only.png", 0)
    with pytest.raises(DflowgenError, match="at least two images"):
        FrameFolder(tmp_path)


def test_readers_work_in_dataloader_workers(tmp_path):
    for frame in range(5):
        write_image(tmp_path / f"frame_{frame}.png", frame)
    dataset = FrameFolder(tmp_path)
    assert len(pickle.dumps(dataset)) < 2000  # file lists only, nothing decoded
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    names = [pair.name for pair in loader]
    assert names == ["frame_0", "frame_1", "frame_2", "frame_3"]
