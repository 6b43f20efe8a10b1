"""The released AutoFlow training set (Sun et al. 2021, "static_40k") in its archive layout.

::

    ROOT/static_40k_png_1_of_4/table_0_batch_0/im0.png, im1.png, forward.flo
    ROOT/static_40k_png_2_of_4/...  (four archives of 10k samples each; any of them may be absent)

``ROOT`` may also be one ``static_40k_png_N_of_4`` folder itself. ``forward.flo`` is the
flow from ``im0.png`` to ``im1.png``, dense.
"""

from __future__ import annotations

import re
from pathlib import Path

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import natural_key, require_folder
from dflowgen.errors import DflowgenError

_PART = re.compile(r"static_40k_png_\d+_of_\d+")
FILES = ("im0.png", "im1.png", "forward.flo")


def _sample_folders(root: Path) -> list[Path]:
    """The sample folders of every archive part under ``root``, or of ``root`` when it is a part."""
    parts = sorted((p for p in root.iterdir() if p.is_dir() and _PART.fullmatch(p.name)), key=natural_key)
    folders = []
    for part in parts or [root]:
        folders += sorted((p for p in part.iterdir() if p.is_dir() and (p / FILES[0]).is_file()), key=natural_key)
    return folders


class AutoFlow(PairReader):
    """AutoFlow's released pairs, in archive-part order and then natural order of the sample folders.

    Names are ``"<part>/<sample>"``, e.g. ``"static_40k_png_1_of_4/table_0_batch_0"``. A sample
    folder with ``im0.png`` but no ``im1.png`` or ``forward.flo`` is an error.
    """

    def __init__(self, root: str | Path) -> None:
        root = require_folder(root, "AutoFlow")
        pairs = []
        for folder in _sample_folders(root):
            img1, img2, flow = (folder / name for name in FILES)
            for needed in (img2, flow):
                if not needed.is_file():
                    raise DflowgenError(f"AutoFlow sample {folder} is incomplete: {needed} is missing")
            pairs.append(PairFiles(img1, img2, flow, f"{folder.parent.name}/{folder.name}"))
        if not pairs:
            raise DflowgenError(f"no AutoFlow samples under {root}: expected "
                                f"{root}/static_40k_png_1_of_4/table_0_batch_0/{{{','.join(FILES)}}}")
        super().__init__(pairs)
