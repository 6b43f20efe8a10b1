"""KITTI 2015 scene flow benchmark, optical-flow part, in its official layout.

::

    ROOT/training/image_2/000000_10.png, 000000_11.png ...
    ROOT/training/flow_occ/000000_10.png ...   16-bit KITTI PNG, all pixels with ground truth
    ROOT/training/flow_noc/000000_10.png ...   the same without pixels occluded in frame 11
    ROOT/testing/image_2/000000_10.png, 000000_11.png ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_kitti_png

SPLITS = {"train": "training", "test": "testing"}
FLOW_CHOICES = ("occ", "noc")


class KITTI(PairReader):
    """KITTI 2015 pairs (frame 10 → frame 11); flow is sparse, ``valid`` comes from the PNG.

    Args:
        root: the folder holding ``training/`` (and/or ``testing/``).
        split: "train" (with flow) or "test" (flow None).
        flow: "occ" (``flow_occ``, the benchmark's default) or "noc" (``flow_noc``).

    Names are the frame ids, ``"000000"``.
    """

    sparse = True

    def __init__(self, root: str | Path, split: str = "train", flow: str = "occ") -> None:
        root = require_folder(root, "KITTI")
        if split not in SPLITS:
            raise DflowgenError(f"KITTI split must be one of {', '.join(SPLITS)}, got {split!r}")
        if flow not in FLOW_CHOICES:
            raise DflowgenError(f"KITTI flow must be one of {', '.join(FLOW_CHOICES)}, got {flow!r}")
        image_dir = root / SPLITS[split] / "image_2"
        first_frames = sorted(image_dir.glob("*_10.png")) if image_dir.is_dir() else []
        if not first_frames:
            raise DflowgenError(f"no KITTI frames under {root}: expected {image_dir}/000000_10.png")
        flow_dir = root / SPLITS[split] / f"flow_{flow}"
        if split == "train" and not flow_dir.is_dir():
            raise DflowgenError(f"no KITTI flow under {root}: expected {flow_dir}/000000_10.png")

        pairs = []
        for img1 in first_frames:
            frame_id = img1.name.removesuffix("_10.png")
            img2 = image_dir / f"{frame_id}_11.png"
            flow_path = flow_dir / img1.name if split == "train" else None
            for needed in (img2, flow_path):
                if needed is not None and not needed.is_file():
                    raise DflowgenError(f"KITTI pair {frame_id} is incomplete: {needed} is missing")
            pairs.append(PairFiles(img1, img2, flow_path, frame_id))
        super().__init__(pairs)

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        return read_kitti_png(path)
