"""`dflowgen infer` and `dflowgen.infer`: pairs, frame folders and videos, outputs, reruns and one-line errors.

The network is the packaged `demo-base` (the released RAFT-small), so a translating pattern must come out
with its known flow; sizes are at most 128×96.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dflowgen.cli import cli
from dflowgen.flow.io import read_flo, read_kitti_png
from dflowgen.flow.viz import flow_to_color
from dflowgen.infer import estimate_flow
from dflowgen.models.registry import load_model

MOTION = (3.0, -2.0)  # frame 2 = frame 1 moved 3 px right and 2 px up


def scene(height: int = 120, width: int = 152, seed: int = 0) -> np.ndarray:
    """A smooth random texture, larger than the frames cut from it."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def translating_frames(count: int, step: tuple[int, int] = (3, -2),
                       size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """``count`` H×W×3 frames of one texture moving by ``step`` (x, y) px per frame."""
    (height, width) = size
    texture = scene(height + 32, width + 32)
    frames = []
    for index in range(count):
        top, left = 12 - index * step[1], 12 - index * step[0]
        frames.append(np.ascontiguousarray(texture[top:top + height, left:left + width]))
    return frames


def assert_motion(flow: np.ndarray, motion: tuple[float, float], tolerance: float) -> None:
    """The median flow inside a 16-px margin is ``motion`` within ``tolerance`` px."""
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.allclose(np.median(inner, axis=0), motion, atol=tolerance), np.median(inner, axis=0)


@pytest.fixture(scope="module")
def model():
    return load_model("demo-base")


def test_estimate_flow_gives_the_known_flow_of_a_translating_pattern(model):
    frames = translating_frames(3)
    flows = list(estimate_flow(model, iter(frames), iters=12, batch_size=2))
    assert len(flows) == 2 and all(flow.shape == (96, 128, 2) and flow.dtype == np.float32 for flow in flows)
    for flow in flows:
        assert_motion(flow, MOTION, 0.3)
    # Shrunk to half size for speed, the flow is resized and scaled back to full-size pixels.
    (small,) = estimate_flow(model, translating_frames(2, step=(6, -4), size=(192, 256)), iters=12, max_size=128)
    assert small.shape == (192, 256, 2)
    assert_motion(small, (6.0, -4.0), 0.5)


def _write_frames(folder: Path, frames: list[np.ndarray], suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames):
        paths.append(folder / f"frame_{index + 1}{suffix}")
        Image.fromarray(frame).save(paths[-1])
    return paths


def _infer(*args: str) -> object:
    return CliRunner().invoke(cli, ["infer", "--ckpt", "demo-base", "--device", "cpu", "--quiet", *args])


def test_cli_pair_writes_every_format_and_colours_that_match_the_motion(tmp_path):
    first, second = _write_frames(tmp_path / "in", translating_frames(2))
    out = tmp_path / "out"
    result = _infer(str(first), str(second), "--out", str(out), "--format", "flo,kitti,png,viz")
    assert result.exit_code == 0, result.output
    assert "1 pairs written, 0 already there" in result.output
    flow = read_flo(out / "flo" / "frame_1.flo")
    assert_motion(flow, MOTION, 0.3)
    kitti, valid = read_kitti_png(out / "kitti" / "frame_1.png")
    assert valid.all() and np.abs(kitti - flow).max() <= 1 / 128 + 1e-6
    colours = np.asarray(Image.open(out / "png" / "frame_1.png"))
    assert np.array_equal(colours, flow_to_color(flow))
    viz = np.asarray(Image.open(out / "viz" / "frame_1.png"))
    assert viz.shape == (96, 256, 3)
    assert np.array_equal(viz[:, :128], np.asarray(Image.open(first).convert("RGB")))
    # The colour of the known motion, at full saturation (the wheel is scaled by the largest flow).
    expected = flow_to_color(np.broadcast_to(np.array(MOTION, np.float32), (1, 1, 2)))[0, 0].astype(int)
    centre = np.median(viz[32:64, 128 + 40:128 + 88].reshape(-1, 3), axis=0)
    assert np.abs(centre - expected).max() < 40, (centre, expected)


def test_cli_rerun_skips_finished_pairs_and_redoes_missing_ones(tmp_path):
    _write_frames(tmp_path / "clip", translating_frames(4))
    out = tmp_path / "out"
    args = [str(tmp_path / "clip"), "--out", str(out), "--iters", "2"]
    assert "3 pairs written, 0 already there" in _infer(*args).output
    before = (out / "clip" / "flo" / "frame_2.flo").stat().st_mtime_ns
    (out / "clip" / "viz" / "frame_3.png").unlink()
    result = _infer(*args)
    assert result.exit_code == 0 and "1 pairs written, 2 already there" in result.output
    assert (out / "clip" / "flo" / "frame_2.flo").stat().st_mtime_ns == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_an_output_folder_inside_the_input_is_not_read_as_frames(tmp_path):
    clip = _write_frames(tmp_path / "clip", translating_frames(3))[0].parent
    args = [str(clip), "--out", str(clip / "flow"), "--iters", "1"]
    assert "2 pairs written" in _infer(*args).output
    result = _infer(*args)
    assert result.exit_code == 0 and "0 pairs written, 2 already there" in result.output


def encode_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An mp4 of ``frames`` (H.264 at near-lossless quality, else MPEG-4), written with PyAV."""
    with av.open(str(path), mode="w") as container:
        codec = "h264" if "h264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=fps, options={"crf": "1"} if codec == "h264" else {})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_cli_video_gives_the_known_flow_and_a_visualisation_video(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", translating_frames(4))
    out = tmp_path / "out"
    result = _infer(str(video), "--out", str(out), "--format", "flo", "--video-out", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    flows = sorted((out / "clip" / "flo").iterdir())
    assert [p.name for p in flows] == ["000000.flo", "000001.flo", "000002.flo"]
    for path in flows:
        assert_motion(read_flo(path), MOTION, 0.5)
    assert len(list((out / "clip" / "viz").iterdir())) == 3
    with av.open(str(out / "clip" / "viz.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == (96, 256, 3)


def test_cli_runs_on_the_shared_unlabelled_frames(tmp_path, shared_data):
    out = tmp_path / "out"
    for folder, pairs in (("sintel-unlabeled", 9), ("davis-unlabeled/bmx-trees", 79)):
        result = _infer(str(shared_data / folder), "--out", str(out), "--max-size", "64", "--iters", "1",
                        "--format", "flo")
        assert result.exit_code == 0, result.output
        assert f"{pairs} pairs written" in result.output
    flow = read_flo(out / "sintel-unlabeled" / "training" / "final" / "demo" / "flo" / "frame_0016.flo")
    assert flow.shape == (436, 1024, 2) and np.isfinite(flow).all()
    assert len(list((out / "bmx-trees" / "flo").iterdir())) == 79


@pytest.mark.parametrize("make_inputs, message", [
    (lambda d: [d / "absent"], "input .*absent not found"),
    (lambda d: _write_frames(d, translating_frames(3)), "give exactly two images"),
    (lambda d: [*_write_frames(d, translating_frames(1)), _corrupt(d / "bad.png")], "cannot read image .*bad.png"),
    (lambda d: [_write_frames(d / "seq", translating_frames(1) + translating_frames(1, size=(64, 64)))[0].parent],
     "frames of different sizes"),
    (lambda d: [encode_video(d / "one.mp4", translating_frames(1))], "one.mp4 has 1 frame: flow needs at least two"),
    (lambda d: [_corrupt(d / "notes.mp4")], "cannot read .*notes.mp4 as a video"),
    (lambda d: [d], "no frames under"),
])
def test_cli_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, make_inputs, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "out"
    result = _infer(*map(str, make_inputs(inputs)), "--out", str(out))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"not an image or a video")
    return path


def test_cli_bad_format_is_a_one_line_error(tmp_path):
    first, second = _write_frames(tmp_path, translating_frames(2))
    result = _infer(str(first), str(second), "--out", str(tmp_path / "out"), "--format", "flo,jpeg")
    assert result.exit_code == 2 and "--format flo,jpeg: choose from flo, png, kitti, viz" in result.output


def test_a_frames_spec_on_a_video_points_to_infer(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", translating_frames(2))
    result = CliRunner().invoke(cli, ["eval", "--ckpt", "demo-base", "--data", f"frames:{video}", "--device", "cpu"])
    assert result.exit_code == 2
    assert f"is a file: estimate flow on a video with `dflowgen infer {video}`" in result.output
