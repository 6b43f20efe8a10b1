"""FlyingThings3D (Mayer et al. 2016) in its official layout, with ``.pfm`` flow.

::

    ROOT/frames_cleanpass/TRAIN/A/0000/left/0006.png ...      also frames_finalpass/, TEST/, B/, C/, right/
    ROOT/optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm ...
    ROOT/optical_flow/TRAIN/A/0000/into_past/left/OpticalFlowIntoPast_0006_L.pfm ...

``into_future`` flow of frame n goes to frame n + 1, ``into_past`` flow of frame n to
frame n − 1. A pair is listed wherever both frames and the flow file exist, so partial
copies work. Like the official RAFT loader, no file list of "unused" frames is applied, and
flow components of 1000 px or more (and non-finite ones) are marked invalid.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from dflowgen.data.readers.base import PairFiles, PairReader, expand_choice, mask_bad_flow, stepped_pairs
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_pfm

PASS_FOLDERS = {"clean": "frames_cleanpass", "final": "frames_finalpass"}
PASS_CHOICES = ("clean", "final", "both")
SPLITS = {"train": "TRAIN", "test": "TEST"}
CAMERAS = {"left": "L", "right": "R"}
CAMERA_CHOICES = ("left", "right", "both")
DIRECTIONS = {"future": ("into_future", "IntoFuture", 1), "past": ("into_past", "IntoPast", -1)}
DIRECTION_CHOICES = ("future", "past", "both")
# The official RAFT loader's bound: larger components are rendering artefacts, not motion.
MAX_FLOW = 1000.0
_FRAME = re.compile(r"(\d+)\.png")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


class FlyingThings3D(PairReader):
    """FlyingThings3D pairs with dense flow from ``optical_flow/``.

    Args:
        root: the folder holding ``frames_cleanpass/``, ``frames_finalpass/`` and ``optical_flow/``.
        render_pass: "clean", "final" or "both" (clean pairs first, as the official RAFT stage 2 mixes both).
        split: "train" (``TRAIN/``) or "test" (``TEST/``); both have flow.
        camera: "left" (the official RAFT setting), "right" or "both".
        direction: "future" (frame n → n + 1), "past" (frame n → n − 1) or "both".

    ``valid`` is None where every flow component is finite and under 1000 px. Names are
    ``"<pass>/<A|B|C>/<sequence>/<camera>/<future|past>/0006"``.
    """

    def __init__(self, root: str | Path, render_pass: str = "both", split: str = "train", camera: str = "left",
                 direction: str = "future") -> None:
        root = require_folder(root, "FlyingThings3D")
        passes = expand_choice(render_pass, PASS_CHOICES, "FlyingThings3D pass")
        cameras = expand_choice(camera, CAMERA_CHOICES, "FlyingThings3D camera")
        directions = expand_choice(direction, DIRECTION_CHOICES, "FlyingThings3D direction")
        if split not in SPLITS:
            raise DflowgenError(f"FlyingThings3D split must be one of {', '.join(SPLITS)}, got {split!r}")
        split_name = SPLITS[split]
        for name in passes:
            if not (root / PASS_FOLDERS[name] / split_name).is_dir():
                raise DflowgenError(f"no FlyingThings3D {name} frames under {root}: expected "
                                    f"{root / PASS_FOLDERS[name] / split_name}/A/0000/left/0006.png")
        flow_root = root / "optical_flow" / split_name
        if not flow_root.is_dir():
            raise DflowgenError(f"no FlyingThings3D flow under {root}: expected "
                                f"{flow_root}/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm")
        pairs = []
        for name in passes:
            for letter_dir in _subfolders(root / PASS_FOLDERS[name] / split_name):
                for sequence_dir in _subfolders(letter_dir):
                    sequence = f"{letter_dir.name}/{sequence_dir.name}"
                    for cam in cameras:
                        pairs += _sequence_pairs(sequence_dir / cam, flow_root / sequence, f"{name}/{sequence}", cam,
                                                 directions)
        if not pairs:
            raise DflowgenError(
                f"no FlyingThings3D {'/'.join(passes)} pairs with {'/'.join(cameras)} flow under {root}: expected "
                f"{root / PASS_FOLDERS[passes[0]] / split_name}/A/0000/{cameras[0]}/0006.png and "
                f"{flow_root}/A/0000/into_future/{cameras[0]}/OpticalFlowIntoFuture_0006_{CAMERAS[cameras[0]]}.pfm")
        super().__init__(pairs)

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        return mask_bad_flow(np.ascontiguousarray(read_pfm(path)[..., :2]), MAX_FLOW)


def _flow_file(folder: Path, prefix: str, camera_letter: str, number: int) -> Path:
    return folder / f"{prefix}_{number:04d}_{camera_letter}.pfm"


def _sequence_pairs(frame_dir: Path, flow_dir: Path, name: str, camera: str,
                    directions: tuple[str, ...]) -> list[PairFiles]:
    """The pairs of one sequence and camera: frames ``frame_dir/NNNN.png``, flow under ``flow_dir``."""
    if not frame_dir.is_dir():
        return []
    frames = {int(m.group(1)): p for p in frame_dir.iterdir() if (m := _FRAME.fullmatch(p.name))}
    pairs = []
    for direction in directions:
        folder, prefix, step = DIRECTIONS[direction]
        flow_for = partial(_flow_file, flow_dir / folder / camera, f"OpticalFlow{prefix}", CAMERAS[camera])
        pairs += stepped_pairs(frames, step, flow_for, f"{name}/{camera}/{direction}")
    return pairs
