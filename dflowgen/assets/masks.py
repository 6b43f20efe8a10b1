"""Object masks as the layer bank stores them: square, cropped to the object, with their aspect ratio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MASK_SIZE = 128
"""Side of the square every mask is stored at (its aspect ratio is kept separately)."""


@dataclass
class Mask:
    """A mask stored at ``MASK_SIZE``², its aspect ratio, and the map from its pixels to its paired image's."""

    pixels: torch.Tensor  # S×S
    aspect: float
    name: str
    image_index: int
    to_image: tuple[float, float, float, float]

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        name: str,
        image_index: int = -1,
        pixel_transform: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0),
    ) -> Mask:
        """Crop ``array`` (H×W in [0, 1]) to its object, pad one zero pixel, resize to S×S.

        ``pixel_transform`` (kx, ky, bx, by) maps the array's pixels to the paired image's
        bank pixels; the result's ``to_image`` maps stored mask pixels there.
        """
        rows = np.flatnonzero(array.max(axis=1) > 0.0)
        cols = np.flatnonzero(array.max(axis=0) > 0.0)
        y0, y1, x0, x1 = rows[0] - 1, rows[-1] + 2, cols[0] - 1, cols[-1] + 2
        padded = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        src = array[max(y0, 0) : y1, max(x0, 0) : x1]
        padded[max(-y0, 0) : max(-y0, 0) + src.shape[0], max(-x0, 0) : max(-x0, 0) + src.shape[1]] = src
        ph, pw = padded.shape
        resized = np.asarray(Image.fromarray(padded, mode="F").resize((MASK_SIZE, MASK_SIZE), Image.BILINEAR))
        pixels = torch.from_numpy(np.clip(resized, 0.0, 1.0).astype(np.float32))
        pixels[0, :] = pixels[-1, :] = pixels[:, 0] = pixels[:, -1] = 0.0
        # Stored pixel centre u sits at array pixel x0 + (u + 0.5)·pw/S − 0.5, then the image map.
        kx, ky, bx, by = pixel_transform
        ax, ay = pw / MASK_SIZE, ph / MASK_SIZE
        cx, cy = x0 + 0.5 * ax - 0.5, y0 + 0.5 * ay - 0.5
        to_image = (kx * ax, ky * ay, kx * cx + bx, ky * cy + by)
        return cls(pixels, (x1 - x0) / (y1 - y0), name, image_index, to_image)
