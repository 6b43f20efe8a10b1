"""The shared shape of a benchmark reader: a list of file records, decoded one pair at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def expand_choice(value: str, choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``(value,)``, or every other choice when ``value`` is "both"; an error naming ``what`` when not a choice."""
    if value not in choices:
        raise DflowgenError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return tuple(choice for choice in choices if choice != "both") if value == "both" else (value,)


def mask_bad_flow(flow: np.ndarray, limit: float = np.inf) -> tuple[np.ndarray, np.ndarray | None]:
    """H×W×2 ``flow`` with non-finite vectors and components of ``limit`` px or more zeroed, and their mask.

    Returns (flow, H×W bool valid), or (flow, None) when every vector is good. Zero, not NaN,
    under the mask: a masked loss multiplies by 0, and 0·NaN is NaN.
    """
    valid = (np.abs(flow) < limit).all(axis=2)  # NaN compares False, so it is masked too
    if valid.all():
        return flow, None
    flow = flow.copy()
    flow[~valid] = 0.0
    return flow, valid


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


def stepped_pairs(frames: Mapping[int, Path], step: int, flow_for: Callable[[int], Path] | None,
                  name: str) -> list[PairFiles]:
    """The pairs (frame n, frame n + ``step``) of one sequence whose frames are ``frames[n]``.

    With ``flow_for`` (n → flow file of frame n), only pairs whose flow file exists; without,
    every pair, unlabelled. Names are ``"<name>/<n as 4 digits>"``.
    """
    pairs = []
    for number in sorted(frames):
        if number + step not in frames:
            continue
        flow = flow_for(number) if flow_for is not None else None
        if flow is None or flow.is_file():
            pairs.append(PairFiles(frames[number], frames[number + step], flow, f"{name}/{number:04d}"))
    return pairs


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
