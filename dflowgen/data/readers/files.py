"""Decoding the files benchmark readers share: RGB frames and binary masks.

Every function raises :class:`DflowgenError` naming the file when it cannot be decoded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dflowgen.errors import DflowgenError
from dflowgen.image_limits import open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB.

    Grey, palette and RGBA images are converted; 16-bit images keep their high byte.
    """
    path = Path(path)
    with open_image(path, "image") as image:
        if image.mode.startswith("I"):
            wide = np.asarray(image, dtype=np.float64)
            grey = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask image (0 / 255, any mode) as an H×W bool array, True where set."""
    path = Path(path)
    with open_image(path, "mask") as image:
        return np.asarray(image.convert("L")) > 127


def natural_key(path: Path) -> tuple:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=natural_key)


def require_folder(root: str | Path, kind: str) -> Path:
    """``root`` as a Path, or a DflowgenError when it is not an existing folder."""
    root = Path(root)
    if not root.is_dir():
        raise DflowgenError(f"{kind} root {root} is not a folder")
    return root
