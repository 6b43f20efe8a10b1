"""The one sample type every reader returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FlowPair(NamedTuple):
    """An image pair with optional ground truth, as numpy arrays in file conventions.

    img1, img2: H×W×3 uint8 RGB. flow: H×W×2 float32 (x, y) from img1 to img2, or None
    when unlabelled. valid: H×W bool (True where flow is defined), or None when all of
    ``flow`` is valid or there is no flow. name: a stable identifier ("alley_1/frame_0002").
    occ: H×W bool (True where the point is hidden in img2 or leaves it), or None when
    unknown.
    """

    img1: np.ndarray
    img2: np.ndarray
    flow: np.ndarray | None
    valid: np.ndarray | None
    name: str
    occ: np.ndarray | None = None
