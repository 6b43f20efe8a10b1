"""Spring (Mehl et al. 2023) in its official layout, with ``.flo5`` flow at twice the image resolution.

::

    ROOT/train/<scene>/frame_left/frame_left_0001.png ...        also frame_right/
    ROOT/train/<scene>/flow_FW_left/flow_FW_left_0001.flo5 ...   frame n → n + 1 (also _right)
    ROOT/train/<scene>/flow_BW_left/flow_BW_left_0002.flo5 ...   frame n → n − 1
    ROOT/test/<scene>/frame_left/frame_left_0001.png ...         no flow

Spring's flow is 2H×2W (four sub-pixels per pixel of the 1920×1080 frames, values in image
pixels); the reader keeps every second row and column, the top-left sub-pixel of each pixel,
unscaled, as the Spring loaders of SEA-RAFT and ptlflow do. Undefined (NaN) vectors are invalid.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from dflowgen.data.readers.base import PairReader, expand_choice, mask_bad_flow, stepped_pairs
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo5

SPLITS = {"train": "train", "test": "test"}
CAMERA_CHOICES = ("left", "right", "both")
DIRECTIONS = {"forward": ("FW", 1), "backward": ("BW", -1)}
DIRECTION_CHOICES = ("forward", "backward", "both")


def _flow_file(folder: Path, stem: str, number: int) -> Path:
    return folder / f"{stem}_{number:04d}.flo5"


class Spring(PairReader):
    """Spring pairs of one or both cameras and directions.

    Args:
        root: the folder holding ``train/`` (and/or ``test/``).
        split: "train" (with flow) or "test" (flow None).
        camera: "left", "right" or "both".
        direction: "forward" (frame n → n + 1), "backward" (n → n − 1) or "both".

    Names are ``"<scene>/<camera>/<forward|backward>/0001"``.
    """

    def __init__(self, root: str | Path, split: str = "train", camera: str = "left",
                 direction: str = "forward") -> None:
        root = require_folder(root, "Spring")
        if split not in SPLITS:
            raise DflowgenError(f"Spring split must be one of {', '.join(SPLITS)}, got {split!r}")
        cameras = expand_choice(camera, CAMERA_CHOICES, "Spring camera")
        directions = expand_choice(direction, DIRECTION_CHOICES, "Spring direction")
        split_dir = root / SPLITS[split]
        scenes = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        labelled = split == "train"
        pairs = []
        for scene in scenes:
            for cam in cameras:
                frame_pattern = re.compile(rf"frame_{cam}_(\d+)\.png")
                frame_dir = scene / f"frame_{cam}"
                if not frame_dir.is_dir():
                    continue
                frames = {int(m.group(1)): p for p in frame_dir.iterdir() if (m := frame_pattern.fullmatch(p.name))}
                for direction in directions:
                    code, step = DIRECTIONS[direction]
                    stem = f"flow_{code}_{cam}"
                    flow_for = partial(_flow_file, scene / stem, stem) if labelled else None
                    pairs += stepped_pairs(frames, step, flow_for, f"{scene.name}/{cam}/{direction}")
        if not pairs:
            flow_hint = f" and {split_dir}/0001/flow_FW_{cameras[0]}/flow_FW_{cameras[0]}_0001.flo5" if labelled else ""
            raise DflowgenError(f"no Spring {split} pairs under {root}: expected "
                                f"{split_dir}/0001/frame_{cameras[0]}/frame_{cameras[0]}_0001.png{flow_hint}")
        super().__init__(pairs)

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        return mask_bad_flow(np.ascontiguousarray(read_flo5(path)[::2, ::2]))
