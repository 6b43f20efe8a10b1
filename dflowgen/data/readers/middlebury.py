"""The Middlebury optical-flow benchmark (Baker et al. 2011), colour two-frame sets.

::

    ROOT/other-data/<scene>/frame10.png, frame11.png     training images (other-color-twoframes)
    ROOT/other-gt-flow/<scene>/flow10.flo                their ground truth
    ROOT/eval-data/<scene>/frame10.png, frame11.png      test images (eval-color-twoframes), no flow

Ground truth stores "unknown" as values above 1e9; those pixels are invalid (and set to 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo

UNKNOWN_FLOW = 1e9
SPLITS = ("train", "test")


class Middlebury(PairReader):
    """Middlebury pairs (frame10 → frame11).

    Args:
        root: the folder holding ``other-data/`` and ``other-gt-flow/`` (train) or ``eval-data/`` (test).
        split: "train" (scenes with ground truth) or "test" (flow None).

    Names are the scene names, ``"RubberWhale"``.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = require_folder(root, "Middlebury")
        if split not in SPLITS:
            raise DflowgenError(f"Middlebury split must be one of {', '.join(SPLITS)}, got {split!r}")
        image_dir = root / ("other-data" if split == "train" else "eval-data")
        flow_dir = root / "other-gt-flow"
        expected = f"{image_dir}/<scene>/frame10.png"
        if split == "train":
            expected += f" and {flow_dir}/<scene>/flow10.flo"
        if not image_dir.is_dir() or (split == "train" and not flow_dir.is_dir()):
            raise DflowgenError(f"no Middlebury data under {root}: expected {expected}")
        pairs = []
        for scene_dir in sorted(p for p in image_dir.iterdir() if p.is_dir()):
            img1, img2 = scene_dir / "frame10.png", scene_dir / "frame11.png"
            flow = flow_dir / scene_dir.name / "flow10.flo" if split == "train" else None
            if img1.is_file() and img2.is_file() and (flow is None or flow.is_file()):
                pairs.append(PairFiles(img1, img2, flow, scene_dir.name))
        if not pairs:
            raise DflowgenError(f"no Middlebury pairs under {root}: expected {expected}")
        super().__init__(pairs)

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        flow = read_flo(path)
        valid = (np.abs(flow) < UNKNOWN_FLOW).all(axis=2)
        flow[~valid] = 0.0
        return flow, valid
