"""Unlabelled video: a folder of consecutive frames, read as pairs (i, i + 1) without flow.

::

    FOLDER/00000.jpg, 00001.jpg, ...                    one sequence
    FOLDER/<sequence>/00000.jpg, ...                    or one sequence per sub-folder

Frames are ``.png``, ``.jpg``, ``.jpeg``, ``.ppm`` or ``.bmp`` files in natural order
(``frame_2`` before ``frame_10``); pairs never cross from one sequence to the next.
"""

from __future__ import annotations

from pathlib import Path

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import IMAGE_SUFFIXES, list_images, require_folder
from dflowgen.errors import DflowgenError


class FrameFolder(PairReader):
    """Consecutive-frame pairs from a folder (or its sub-folders), flow and valid None.

    Names are ``"<first frame's stem>"`` for a flat folder and ``"<sequence>/<stem>"`` otherwise.
    """

    def __init__(self, folder: str | Path) -> None:
        if Path(folder).is_file():
            raise DflowgenError(
                f"frames: reads a folder of frames, and {folder} is a file: estimate flow on a video with "
                f"`dflowgen infer {folder}`, or extract its frames first (ffmpeg -i {folder} DIR/%05d.png)")
        folder = require_folder(folder, "frame")
        sequences = [(folder, "")]
        if not list_images(folder):
            sequences = [(d, f"{d.name}/") for d in sorted(p for p in folder.iterdir() if p.is_dir())]
        pairs = []
        for sequence, prefix in sequences:
            frames = list_images(sequence)
            pairs += [PairFiles(a, b, None, prefix + a.stem) for a, b in zip(frames, frames[1:])]
        if not pairs:
            raise DflowgenError(
                f"no consecutive frames under {folder}: expected at least two images "
                f"({', '.join(IMAGE_SUFFIXES)}) in it or in each of its sub-folders")
        super().__init__(pairs)
