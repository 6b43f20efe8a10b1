"""What ``dflowgen infer`` reads: two images, folders of frames, or videos, each as a stream of frames.

A :class:`FrameSequence` yields ``(stem, frame)`` with ``frame`` an H×W×3 uint8 RGB array, one at a
time, so memory stays flat in the sequence's length; pairs are consecutive frames of one sequence.

* two image files → one sequence of two frames (name ``""``);
* a folder → one sequence per folder under it (itself included) that holds images, in natural order,
  named by its path relative to the folder's parent (``bmx-trees``, ``sintel/training/final/demo``);
* any other file → a video, decoded frame by frame with PyAV (any format ffmpeg reads), named by its stem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dflowgen.data.readers.files import IMAGE_SUFFIXES, list_images, natural_key, read_rgb
from dflowgen.errors import DflowgenError

Frames = Iterator[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class FrameSequence:
    """One sequence of frames: its output name, a way to stream its frames, and its length when known."""

    name: str
    source: Path
    open: Callable[[], Frames]
    count: int | None

    @property
    def pairs(self) -> int | None:
        """How many consecutive pairs it has (None for a video that does not say)."""
        return None if self.count is None else max(self.count - 1, 0)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DflowgenError(f"cannot read image {path}: {reason}") from None


def _image_sequence(name: str, files: list[Path]) -> FrameSequence:
    """Frames from image files; their sizes are checked up front, so a mismatch stops before any output."""
    sizes = {path: _image_size(path) for path in files}
    first = files[0]
    for path, size in sizes.items():
        if size != sizes[first]:
            raise DflowgenError(f"frames of different sizes: {path} is {size[0]}×{size[1]}, "
                                f"{first} is {sizes[first][0]}×{sizes[first][1]}")

    def frames() -> Frames:
        for path in files:
            yield path.stem, read_rgb(path)

    return FrameSequence(name, files[0].parent, frames, len(files))


def _video_frames(path: Path) -> Frames:
    """Decode ``path`` one frame at a time (stems ``000000``, ``000001``, …); every size must be the first's."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise DflowgenError(f"cannot read {path} as a video: {' '.join(str(error).split())}") from None
    with container:
        if not container.streams.video:
            raise DflowgenError(f"{path} has no video stream")
        size = None
        count = 0
        try:
            for count, frame in enumerate(container.decode(container.streams.video[0]), start=1):
                image = frame.to_ndarray(format="rgb24")
                if size is None:
                    size = image.shape
                elif image.shape != size:
                    raise DflowgenError(f"frames of different sizes in {path}: frame {count - 1} is "
                                        f"{image.shape[1]}×{image.shape[0]}, the first {size[1]}×{size[0]}")
                yield f"{count - 1:06d}", image
        except av.error.FFmpegError as error:
            raise DflowgenError(f"cannot decode {path}: {' '.join(str(error).split())}") from None
        if count < 2:
            raise DflowgenError(f"{path} has {count} frame{'s' if count != 1 else ''}: flow needs at least two")


def _video_sequence(path: Path) -> FrameSequence:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DflowgenError(f"{path} has no video stream")
            frames = container.streams.video[0].frames or None
    except (av.error.FFmpegError, OSError) as error:
        raise DflowgenError(f"cannot read {path} as a video: {' '.join(str(error).split())}") from None
    return FrameSequence(path.stem, path, lambda: _video_frames(path), frames)


def _folder_sequences(folder: Path, exclude: Path | None) -> list[FrameSequence]:
    sequences = []
    for root, dirs, _ in os.walk(folder):
        # An output folder inside the input holds images too; they are not frames.
        dirs[:] = sorted((name for name in dirs if exclude is None or (Path(root) / name).resolve() != exclude),
                         key=lambda name: natural_key(Path(name)))
        files = list_images(Path(root))
        if len(files) == 1:
            raise DflowgenError(f"{root} holds a single frame: flow needs at least two")
        if files:
            sequences.append(_image_sequence(Path(root).relative_to(folder.parent).as_posix(), files))
    if not sequences:
        raise DflowgenError(f"no frames under {folder}: expected images ({', '.join(IMAGE_SUFFIXES)}) "
                            "in it or in its sub-folders")
    return sequences


def open_inputs(inputs: list[str | Path], exclude: str | Path | None = None) -> list[FrameSequence]:
    """The frame sequences of ``dflowgen infer``'s INPUT arguments (see the module docstring).

    Folders are searched for frames except below ``exclude`` (the output folder, which may lie inside an input).

    Raises:
        DflowgenError: a missing input, images mixed with folders or videos, not exactly two images,
            a folder without frames, an unreadable image or video, or frames of different sizes.
    """
    paths = [Path(item) for item in inputs]
    if not paths:
        raise DflowgenError("give two images, a folder of frames or a video")
    for path in paths:
        if not path.exists():
            raise DflowgenError(f"input {path} not found")
    images = [path for path in paths if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    if images:
        if len(images) != 2 or len(paths) != 2:
            raise DflowgenError(f"give exactly two images as a pair (got {len(images)} images and "
                                f"{len(paths) - len(images)} other inputs); pass longer sequences as a folder")
        return [_image_sequence("", images)]
    sequences = []
    for path in paths:
        excluded = Path(exclude).resolve() if exclude is not None else None
        sequences += _folder_sequences(path, excluded) if path.is_dir() else [_video_sequence(path)]
    names = [sequence.name for sequence in sequences]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DflowgenError(f"two inputs would write to the same output folder {duplicates[0]!r}: rename one")
    return sequences
