"""FlyingChairs in its official layout.

::

    ROOT/FlyingChairs_release/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo ...
    ROOT/FlyingChairs_train_val.txt      one line per pair in numeric order: 1 = train, 2 = val

``ROOT`` may also be ``FlyingChairs_release`` itself or its ``data`` folder; the split file
is looked for at ROOT, next to ``data/`` and inside it.
"""

from __future__ import annotations

from pathlib import Path

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError

SPLIT_FILE = "FlyingChairs_train_val.txt"
SPLIT_LABELS = {"train": 1, "val": 2}
SPLIT_CHOICES = ("train", "val", "all")


def _data_dir(root: Path) -> Path:
    for candidate in (root / "FlyingChairs_release" / "data", root / "data", root):
        if candidate.is_dir() and any(candidate.glob("*_img1.ppm")):
            return candidate
    raise DflowgenError(f"no FlyingChairs pairs under {root}: expected {root}/FlyingChairs_release/data/00001_img1.ppm")


def _split_labels(root: Path, data_dir: Path, count: int) -> list[int]:
    candidates = [root / SPLIT_FILE, data_dir.parent / SPLIT_FILE, data_dir / SPLIT_FILE]
    split_file = next((p for p in candidates if p.is_file()), None)
    if split_file is None:
        raise DflowgenError(f"FlyingChairs train/val split needs {root / SPLIT_FILE} (or use the split 'all')")
    tokens = split_file.read_text().split()
    if len(tokens) != count or any(t not in ("1", "2") for t in tokens):
        raise DflowgenError(f"{split_file} must hold one label 1 (train) or 2 (val) per pair: "
                            f"{count} pairs in {data_dir}, {len(tokens)} labels")
    return [int(t) for t in tokens]


class FlyingChairs(PairReader):
    """FlyingChairs pairs with dense ``.flo`` flow.

    Args:
        root: the dataset folder (see the module docstring).
        split: "train", "val" (per ``FlyingChairs_train_val.txt``) or "all".

    Names are the pair numbers, ``"00001"``.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = require_folder(root, "FlyingChairs")
        if split not in SPLIT_CHOICES:
            raise DflowgenError(f"FlyingChairs split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
        data_dir = _data_dir(root)
        ids = sorted(p.name.removesuffix("_img1.ppm") for p in data_dir.glob("*_img1.ppm"))
        if split != "all":
            labels = _split_labels(root, data_dir, len(ids))
            ids = [i for i, label in zip(ids, labels) if label == SPLIT_LABELS[split]]
        pairs = []
        for pair_id in ids:
            files = PairFiles(data_dir / f"{pair_id}_img1.ppm", data_dir / f"{pair_id}_img2.ppm",
                              data_dir / f"{pair_id}_flow.flo", pair_id)
            for needed in (files.img2, files.flow):
                if not needed.is_file():
                    raise DflowgenError(f"FlyingChairs pair {pair_id} is incomplete: {needed} is missing")
            pairs.append(files)
        if not pairs:
            raise DflowgenError(f"no FlyingChairs pairs in split '{split}' under {data_dir}")
        super().__init__(pairs)
