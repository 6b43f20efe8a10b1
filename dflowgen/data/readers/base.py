"""The shared shape of a benchmark reader: a list of file records, decoded one pair at a time."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

from dflowgen.data.readers.files import read_mask, read_rgb
from dflowgen.data.sample import FlowPair
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo


def _check_same_size(path_a: Path, array_a: np.ndarray, path_b: Path, array_b: np.ndarray) -> None:
    (height_a, width_a), (height_b, width_b) = array_a.shape[:2], array_b.shape[:2]
    if (height_a, width_a) != (height_b, width_b):
        raise DflowgenError(f"{path_a} is {width_a}×{height_a} but {path_b} is {width_b}×{height_b}")


class PairFiles(NamedTuple):
    """Where one pair lives on disk.

    ``invalid_masks`` are mask images whose set pixels are excluded from ``valid``
    (Sintel's ``invalid/`` and, on request, ``occlusions/``).
    """

    img1: Path
    img2: Path
    flow: Path | None
    name: str
    invalid_masks: tuple[Path, ...] = ()


class PairReader(Dataset):
    """A torch Dataset of :class:`FlowPair` over a list of :class:`PairFiles`.

    The constructor of a subclass only lists files (cheap ``__len__``); images and flow
    are decoded in ``__getitem__``, so the dataset pickles small and works with
    DataLoader workers. Subclasses with another flow format override :meth:`read_flow`.
    """

    #: True when ground truth is sparse (KITTI-style): augment with sparse resizing.
    sparse: bool = False

    def __init__(self, pairs: list[PairFiles]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        """The pairs' names, in index order."""
        return [files.name for files in self.pairs]

    def read_flow(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode one flow file: (H×W×2 float32 flow, H×W bool valid or None when all valid)."""
        return read_flo(path), None

    def __getitem__(self, index: int) -> FlowPair:
        files = self.pairs[index]
        img1, img2 = read_rgb(files.img1), read_rgb(files.img2)
        _check_same_size(files.img1, img1, files.img2, img2)
        flow = valid = None
        if files.flow is not None:
            flow, valid = self.read_flow(files.flow)
            _check_same_size(files.flow, flow, files.img1, img1)
            for mask_path in files.invalid_masks:
                invalid = read_mask(mask_path)
                _check_same_size(mask_path, invalid, files.flow, flow)
                valid = ~invalid if valid is None else valid & ~invalid
        return FlowPair(img1, img2, flow, valid, files.name)
