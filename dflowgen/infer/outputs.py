"""What ``dflowgen infer`` writes per pair, each file atomically, and the visualisation video.

``OUT/<sequence>/<format>/<stem of frame 1>.<ext>`` for each chosen format:

=========  ==========================================================================
``flo``    Middlebury ``.flo`` (float32)
``kitti``  16-bit KITTI flow PNG (``.png``; 1/64 px steps, all pixels valid)
``png``    the flow's colours alone (``.png``, Baker et al.'s wheel)
``viz``    frame 1 and the flow's colours side by side (``.png``), as in RAFT's demo
=========  ==========================================================================

``--video-out`` adds ``OUT/<sequence>/viz.mp4``, encoded from the ``viz`` images in order.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dflowgen.errors import DflowgenError, option
from dflowgen.files import atomic_write_bytes, atomic_write_with
from dflowgen.flow.io import write_flo, write_kitti_png
from dflowgen.flow.viz import flow_to_color

OUTPUT_FORMATS = ("flo", "png", "kitti", "viz")
DEFAULT_FORMATS = ("flo", "viz")
_SUFFIXES = {"flo": ".flo", "png": ".png", "kitti": ".png", "viz": ".png"}
VIDEO_NAME = "viz.mp4"
VIDEO_FPS = 10


def parse_formats(text: str) -> tuple[str, ...]:
    """``"flo,viz"`` → ``("flo", "viz")``; a one-line ``DflowgenError`` for an unknown or empty list."""
    formats = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in formats if name not in OUTPUT_FORMATS]
    if unknown or not formats:
        raise DflowgenError(f"{option('formats', text, flag='--format')}: choose from {', '.join(OUTPUT_FORMATS)} (comma-separated)")
    return formats


def output_paths(folder: Path, stem: str, formats: Iterable[str]) -> dict[str, Path]:
    """Where each format of the pair whose first frame is ``stem`` goes."""
    return {name: folder / name / f"{stem}{_SUFFIXES[name]}" for name in formats}


def visualisation(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """H×(2W)×3 uint8: the H×W×3 frame and the H×W×2 flow's colours side by side."""
    return np.concatenate([frame, flow_to_color(flow)], axis=1)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(paths: dict[str, Path], frame: np.ndarray, flow: np.ndarray) -> None:
    """Write each format of ``paths`` for one pair (frame 1, H×W×2 flow), every file atomically."""
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "flo":
            atomic_write_with(path, lambda temp: write_flo(temp, flow))
        elif name == "kitti":
            atomic_write_with(path, lambda temp: write_kitti_png(temp, flow))
        elif name == "png":
            atomic_write_bytes(path, _png_bytes(flow_to_color(flow)))
        else:
            atomic_write_bytes(path, _png_bytes(visualisation(frame, flow)))


def write_video(images: list[Path], path: Path, fps: int = VIDEO_FPS) -> None:
    """Encode PNG ``images`` (one size) as an H.264 mp4 at ``path``, one image in memory at a time, atomically."""

    def encode(temp: Path) -> None:
        with av.open(str(temp), mode="w", format="mp4") as container:
            stream = container.add_stream("h264" if "h264" in av.codecs_available else "mpeg4", rate=fps)
            stream.pix_fmt = "yuv420p"
            for index, image_path in enumerate(images):
                with Image.open(image_path) as image:
                    # yuv420p needs even sides: drop a last odd row or column.
                    array = np.asarray(image.convert("RGB"))
                array = array[: array.shape[0] // 2 * 2, : array.shape[1] // 2 * 2]
                if index == 0:
                    stream.height, stream.width = array.shape[:2]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
            container.mux(stream.encode())

    try:
        atomic_write_with(path, encode)
    except av.error.FFmpegError as error:
        raise DflowgenError(f"cannot write the video {path}: {' '.join(str(error).split())}") from None
