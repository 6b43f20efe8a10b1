"""FlyingThings3D, AutoFlow and Spring readers on tiny fake layouts in tmp_path: the reader, the spec and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dflowgen.cli import cli
from dflowgen.data.readers import AutoFlow, FlyingThings3D, Spring
from dflowgen.data.spec import open_spec
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo5, read_pfm, write_flo
from test_readers_layouts import write_image

HEIGHT, WIDTH = 24, 32


def _image(path: Path, seed: int) -> np.ndarray:
    return write_image(path, seed, HEIGHT, WIDTH)


def _flow(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, (height, width, 2)).astype(np.float32)


def _write_pfm(path: Path, flow: np.ndarray) -> None:
    """FlyingThings3D's flow files: 3-channel little-endian PFM, bottom row first, third channel 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.concatenate([flow, np.zeros_like(flow[..., :1])], axis=2)
    header = f"PF\n{flow.shape[1]} {flow.shape[0]}\n-1.0\n".encode()
    path.write_bytes(header + np.flipud(rgb).astype("<f4").tobytes())


def _things(root: Path) -> dict[str, np.ndarray]:
    """Sequence A/0000 with frames 6–8 in both passes and cameras, and flow both ways; B/0001 with clean only."""
    truth = {}
    for pass_folder in ("frames_cleanpass", "frames_finalpass"):
        for camera in ("left", "right"):
            for number in (6, 7, 8):
                _image(root / pass_folder / "TRAIN" / "A" / "0000" / camera / f"{number:04d}.png", number)
    for number in (6, 7):
        _image(root / "frames_cleanpass" / "TRAIN" / "B" / "0001" / "left" / f"{number:04d}.png", number + 20)
    for sequence, numbers in (("A/0000", (6, 7, 8)), ("B/0001", (6, 7))):
        for camera, letter in (("left", "L"), ("right", "R")):
            for number in numbers:
                for folder, prefix in (("into_future", "IntoFuture"), ("into_past", "IntoPast")):
                    flow = _flow(number * 10 + len(folder) + len(camera))
                    _write_pfm(root / "optical_flow" / "TRAIN" / sequence / folder / camera /
                               f"OpticalFlow{prefix}_{number:04d}_{letter}.pfm", flow)
                    truth[f"{sequence}/{camera}/{folder}/{number:04d}"] = flow
    return truth


def test_pfm_helper_writes_what_the_reader_reads(tmp_path):
    flow = _flow(0)
    _write_pfm(tmp_path / "f.pfm", flow)
    np.testing.assert_array_equal(read_pfm(tmp_path / "f.pfm")[..., :2], flow)


def test_things_reads_left_future_pairs_of_both_passes_by_default(tmp_path):
    truth = _things(tmp_path)
    dataset = FlyingThings3D(tmp_path)
    assert dataset.names == ["clean/A/0000/left/future/0006", "clean/A/0000/left/future/0007",
                             "clean/B/0001/left/future/0006",
                             "final/A/0000/left/future/0006", "final/A/0000/left/future/0007"]
    pair = dataset[1]
    frames = tmp_path / "frames_cleanpass/TRAIN/A/0000/left"
    np.testing.assert_array_equal(pair.img1, np.asarray(Image.open(frames / "0007.png")))
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(frames / "0008.png")))
    np.testing.assert_array_equal(pair.flow, truth["A/0000/left/into_future/0007"])
    assert pair.flow.shape == (HEIGHT, WIDTH, 2) and pair.valid is None


def test_things_options_pick_pass_camera_and_direction(tmp_path):
    truth = _things(tmp_path)
    past = FlyingThings3D(tmp_path, render_pass="final", camera="right", direction="past")
    assert past.names == ["final/A/0000/right/past/0007", "final/A/0000/right/past/0008"]
    pair = past[1]
    frames = tmp_path / "frames_finalpass/TRAIN/A/0000/right"
    np.testing.assert_array_equal(pair.img1, np.asarray(Image.open(frames / "0008.png")))
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(frames / "0007.png")))
    np.testing.assert_array_equal(pair.flow, truth["A/0000/right/into_past/0008"])
    both = open_spec(f"things:{tmp_path}:clean:left+right:future+past").dataset
    assert len(both) == 2 * 2 * 2 + 2  # A: 2 cameras × 2 directions × 2 pairs; B: left only, 1 pair each way
    assert open_spec(f"things:{tmp_path}:final:train").dataset.names == FlyingThings3D(tmp_path, "final").names


def test_things_marks_huge_and_non_finite_flow_invalid_and_zeroes_it(tmp_path):
    flow = _flow(1)
    flow[0, :3] = [[1500.0, 0.0], [0.0, -2000.0], [np.nan, 1.0]]
    root = tmp_path / "things"
    for number in (6, 7):
        _image(root / "frames_cleanpass" / "TEST" / "C" / "0002" / "left" / f"{number:04d}.png", number)
    _write_pfm(root / "optical_flow/TEST/C/0002/into_future/left/OpticalFlowIntoFuture_0006_L.pfm", flow)
    pair = FlyingThings3D(root, "clean", split="test")[0]
    assert pair.valid.sum() == HEIGHT * WIDTH - 3 and not pair.valid[0, :3].any()
    np.testing.assert_array_equal(pair.flow[0, :3], 0.0)
    np.testing.assert_array_equal(pair.flow[1:], flow[1:])


@pytest.mark.parametrize("make, options, message", [
    (lambda root: None, {}, r"no FlyingThings3D clean frames under .*frames_cleanpass/TRAIN/A/0000/left/0006.png"),
    (lambda root: _image(root / "frames_cleanpass/TRAIN/A/0000/left/0006.png", 0), {},
     r"no FlyingThings3D flow under .*optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm"),
    (lambda root: (_image(root / "frames_cleanpass/TRAIN/A/0000/left/0006.png", 0),
                   _write_pfm(root / "optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm",
                              _flow(0))),
     {}, r"no FlyingThings3D clean pairs with left flow"),
    (lambda root: _things(root), {"camera": "middle"}, r"camera must be one of left, right, both, got 'middle'"),
])
def test_things_wrong_layout_says_what_was_expected(tmp_path, make, options, message):
    make(tmp_path)
    with pytest.raises(DflowgenError, match=message):
        FlyingThings3D(tmp_path, "clean", **options)


def _autoflow(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for part, samples in ((1, ("table_0_batch_2", "table_0_batch_10")), (3, ("table_7_batch_0",))):
        for index, sample in enumerate(samples):
            folder = root / f"static_40k_png_{part}_of_4" / sample
            _image(folder / "im0.png", 2 * index)
            _image(folder / "im1.png", 2 * index + 1)
            truth[sample] = _flow(part * 10 + index)
            write_flo(folder / "forward.flo", truth[sample])
    return truth


def test_autoflow_reads_every_part_in_natural_order(tmp_path):
    truth = _autoflow(tmp_path)
    dataset, weight, sparse = open_spec(f"autoflow:{tmp_path}*3")
    assert weight == 3 and not sparse
    assert dataset.names == ["static_40k_png_1_of_4/table_0_batch_2", "static_40k_png_1_of_4/table_0_batch_10",
                             "static_40k_png_3_of_4/table_7_batch_0"]
    pair = dataset[1]
    np.testing.assert_array_equal(pair.flow, truth["table_0_batch_10"])
    folder = tmp_path / "static_40k_png_1_of_4" / "table_0_batch_10"
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(folder / "im1.png")))
    assert pair.valid is None
    assert AutoFlow(tmp_path / "static_40k_png_3_of_4").names == ["static_40k_png_3_of_4/table_7_batch_0"]


def test_autoflow_wrong_layout_or_incomplete_sample_is_an_error(tmp_path):
    with pytest.raises(DflowgenError, match=r"no AutoFlow samples under .*static_40k_png_1_of_4/table_0_batch_0/"):
        AutoFlow(tmp_path)
    _autoflow(tmp_path)
    (tmp_path / "static_40k_png_3_of_4" / "table_7_batch_0" / "forward.flo").unlink()
    with pytest.raises(DflowgenError, match=r"sample .*table_7_batch_0 is incomplete: .*forward.flo is missing"):
        AutoFlow(tmp_path)


def _write_flo5(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("flow", data=flow)


def _spring(root: Path) -> dict[str, np.ndarray]:
    """Scene 0001 with frames 1–3 for both cameras, forward and backward flow at twice the size; test scene 0004."""
    truth = {}
    for camera in ("left", "right"):
        for number in (1, 2, 3):
            _image(root / "train" / "0001" / f"frame_{camera}" / f"frame_{camera}_{number:04d}.png", number)
        for code, numbers in (("FW", (1, 2)), ("BW", (2, 3))):
            for number in numbers:
                fine = _flow(number + len(camera) * 7 + len(code), 2 * HEIGHT, 2 * WIDTH)
                stem = f"flow_{code}_{camera}"
                _write_flo5(root / "train" / "0001" / stem / f"{stem}_{number:04d}.flo5", fine)
                truth[f"{camera}/{code}/{number}"] = fine
    for number in (1, 2):
        _image(root / "test" / "0004" / "frame_left" / f"frame_left_{number:04d}.png", number)
    return truth


def test_spring_reads_forward_left_pairs_at_image_resolution(tmp_path):
    truth = _spring(tmp_path)
    dataset = Spring(tmp_path)
    assert dataset.names == ["0001/left/forward/0001", "0001/left/forward/0002"]
    pair = dataset[1]
    np.testing.assert_array_equal(pair.flow, truth["left/FW/2"][::2, ::2])
    left = tmp_path / "train/0001/frame_left"
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(left / "frame_left_0003.png")))
    assert pair.valid is None


def test_spring_options_and_nan_flow(tmp_path):
    truth = _spring(tmp_path)
    fine = truth["right/BW/3"].copy()
    fine[0, 0] = np.nan  # kept by the subsampling: pixel (0, 0)
    fine[1, 1] = np.nan  # dropped by it
    _write_flo5(tmp_path / "train/0001/flow_BW_right/flow_BW_right_0003.flo5", fine)
    backward = open_spec(f"spring:{tmp_path}:train:right:backward").dataset
    assert backward.names == ["0001/right/backward/0002", "0001/right/backward/0003"]
    pair = backward[1]
    right = tmp_path / "train/0001/frame_right"
    np.testing.assert_array_equal(pair.img2, np.asarray(Image.open(right / "frame_right_0002.png")))
    assert pair.valid.sum() == HEIGHT * WIDTH - 1 and not pair.valid[0, 0] and pair.flow[0, 0].tolist() == [0.0, 0.0]
    assert len(open_spec(f"spring:{tmp_path}:left+right:forward+backward").dataset) == 8
    test = Spring(tmp_path, split="test")
    assert test.names == ["0004/left/forward/0001"] and test[0].flow is None


def test_spring_errors_name_the_expected_layout_and_bad_flow_files(tmp_path):
    with pytest.raises(DflowgenError, match=r"no Spring train pairs under .*train/0001/frame_left/frame_left_0001.png"):
        Spring(tmp_path)
    _spring(tmp_path)
    bad = tmp_path / "train/0001/flow_FW_left/flow_FW_left_0001.flo5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DflowgenError, match=r"cannot read Spring flow file .*flow_FW_left_0001.flo5"):
        Spring(tmp_path)[0]
    with h5py.File(bad, "w") as handle:
        handle.create_dataset("disparity", data=np.zeros((4, 4), np.float32))
    with pytest.raises(DflowgenError, match=r"not a Spring flow file: needs an H×W×2 float dataset 'flow'"):
        read_flo5(bad)
    with h5py.File(bad, "w") as handle:  # 16 GB declared in a few KB: refused before decoding
        handle.create_dataset("flow", shape=(40000, 50000, 2), dtype=np.float32, chunks=(64, 64, 2),
                              compression="gzip", fillvalue=0.0)
    assert bad.stat().st_size < 100_000
    with pytest.raises(DflowgenError, match=r"declares a 50000×40000 flow, more than"):
        read_flo5(bad)


def test_things_autoflow_and_spring_specs_work_from_the_cli(tmp_path):
    """`dflowgen eval --valid-only` on each new kind: one result per pair, and the masked Things pixel not measured."""
    from dflowgen.weights import resolve_weights

    _things(tmp_path / "things")
    huge = _flow(3)
    huge[2, 2] = [5000.0, 0.0]
    _write_pfm(tmp_path / "things/optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm", huge)
    _autoflow(tmp_path / "autoflow")
    _spring(tmp_path / "spring")
    checkpoint = str(resolve_weights("demo-base"))
    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, [
        "eval", "--ckpt", checkpoint, "--iters", "2", "--quiet", "--valid-only", "--json", str(report_path),
        "--data", f"things:{tmp_path / 'things'}:clean", "--data", f"autoflow:{tmp_path / 'autoflow'}",
        "--data", f"spring:{tmp_path / 'spring'}:train"])
    assert result.exit_code == 0, result.output
    datasets = json.loads(report_path.read_text())["datasets"]
    assert [len(d["pairs"]) for d in datasets] == [3, 3, 2]
    things_pairs = {p["name"]: p["pixels"] for p in datasets[0]["pairs"]}
    assert things_pairs["clean/A/0000/left/future/0006"] == HEIGHT * WIDTH - 1
    assert things_pairs["clean/A/0000/left/future/0007"] == HEIGHT * WIDTH


@pytest.mark.parametrize("spec, fragment", [
    ("things:{root}:clean", "no FlyingThings3D clean frames under"),
    ("autoflow:{root}", "no AutoFlow samples under"),
    ("spring:{root}:test", "no Spring test pairs under"),
])
def test_a_bad_root_is_one_line_from_the_cli(tmp_path, spec, fragment):
    from dflowgen.weights import resolve_weights

    checkpoint = str(resolve_weights("demo-base"))
    result = CliRunner().invoke(cli, ["eval", "--ckpt", checkpoint, "--data", spec.format(root=tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error:") and fragment in lines[0], result.output


def test_train_reads_things_through_the_training_pipeline(tmp_path):
    """What the train-things recipe needs: `train --data things:ROOT:future+past` runs (at a tiny size here)."""
    from test_train import write_train_recipe

    from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint

    _things(tmp_path / "things")
    recipe = write_train_recipe(tmp_path / "tiny.toml", crop_size=[24, 32], num_steps=1)
    result = CliRunner().invoke(cli, ["train", "--data", f"things:{tmp_path / 'things'}:future+past",
                                      "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    [source] = load_checkpoint(tmp_path / "run" / LAST_NAME)["data"]["sources"]
    assert source["size"] == 10  # both passes of A/0000 (2 + 2 pairs each) and clean B/0001 (1 + 1)
