"""A dataset of flow pairs resized by a constant factor, flow and valid mask included."""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.transform import resize
from torch.utils.data import Dataset

from dflowgen.data.sample import FlowPair

# A resized pixel keeps its ground truth only where (nearly) every source pixel it blends had one.
_VALID_BLEND = 0.999


class ScaledPairs(Dataset):
    """The FlowPairs of ``dataset`` resized by ``scale`` (1 = unchanged).

    Images are resampled with antialiasing and rounded back to uint8; the flow is resampled
    the same way and multiplied by the exact size ratio of each axis; a pixel stays valid
    only where every source pixel it blends was valid. Pickles with its dataset (DataLoader
    workers).
    """

    def __init__(self, dataset: Dataset, scale: float) -> None:
        self.dataset = dataset
        self.scale = scale

    def __len__(self) -> int:
        return len(self.dataset)

    def size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of a ``height``×``width`` pair after resizing."""
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def __getitem__(self, index: int) -> FlowPair:
        pair = self.dataset[index]
        if self.scale == 1.0:
            return pair
        height, width = pair.img1.shape[:2]
        size = self.size(height, width)
        images = torch.from_numpy(np.stack([pair.img1, pair.img2])).permute(0, 3, 1, 2).float()
        images = resize(images, size, interpolation="bilinear", antialias=True)
        img1, img2 = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        flow = valid = None
        if pair.flow is not None:
            ratio = torch.tensor([size[1] / width, size[0] / height]).view(1, 2, 1, 1)
            flow_map = torch.from_numpy(np.ascontiguousarray(pair.flow)).permute(2, 0, 1)[None]
            flow = (resize(flow_map, size, interpolation="bilinear", antialias=True) * ratio)[0]
            flow = flow.permute(1, 2, 0).numpy().astype(np.float32)
        if pair.valid is not None:
            valid_map = torch.from_numpy(pair.valid.astype(np.float32))[None, None]
            valid = (resize(valid_map, size, interpolation="bilinear", antialias=True)[0, 0] >= _VALID_BLEND).numpy()
        return FlowPair(img1, img2, flow, valid, pair.name)
