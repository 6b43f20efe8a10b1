"""HD1K (Kondermann et al. 2016) in its official layout.

::

    ROOT/hd1k_input/image_2/000000_0000.png ...        <sequence>_<frame>
    ROOT/hd1k_flow_gt/flow_occ/000000_0000.png ...     16-bit KITTI-format flow, frame → frame + 1
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_kitti_png

_NAME = re.compile(r"(\d+)_(\d+)\.png")


class HD1K(PairReader):
    """HD1K pairs (frame i → i + 1 of a sequence) with sparse KITTI-format flow.

    A flow map whose next frame is not on disk is skipped. Names are ``"000000_0000"``.
    """

    sparse = True

    def __init__(self, root: str | Path) -> None:
        root = require_folder(root, "HD1K")
        image_dir = root / "hd1k_input" / "image_2"
        flow_dir = root / "hd1k_flow_gt" / "flow_occ"
        if not image_dir.is_dir() or not flow_dir.is_dir():
            raise DflowgenError(
                f"no HD1K data under {root}: expected {image_dir}/000000_0000.png and {flow_dir}/000000_0000.png")
        pairs = []
        for flow_path in sorted(flow_dir.glob("*.png")):
            match = _NAME.fullmatch(flow_path.name)
            if match is None:
                continue
            sequence, frame = match.group(1), int(match.group(2))
            width = len(match.group(2))
            img1 = image_dir / flow_path.name
            img2 = image_dir / f"{sequence}_{frame + 1:0{width}d}.png"
            if img1.is_file() and img2.is_file():
                pairs.append(PairFiles(img1, img2, flow_path, flow_path.stem))
        if not pairs:
            raise DflowgenError(
                f"no HD1K pairs under {root}: expected {flow_dir}/000000_0000.png "
                f"with frames {image_dir}/000000_0000.png and 000000_0001.png")
        super().__init__(pairs)

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        return read_kitti_png(path)
