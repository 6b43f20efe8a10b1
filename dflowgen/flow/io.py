"""Flow file formats: Middlebury ``.flo``, KITTI 16-bit PNG, ``.pfm`` and Spring's ``.flo5``.

Arrays are H×W×2 float32 (channel 0 = x, 1 = y); KITTI's validity is an H×W bool array.
Every reader raises :class:`DflowgenError` naming the file when it is not what it claims.
"""

from __future__ import annotations

import re
from pathlib import Path

import kornia_rs.io as kornia_io
import numpy as np

from dflowgen.errors import DflowgenError
from dflowgen.image_limits import read_png_header

FLO_MAGIC = 202021.25
# Spring's 2× flow is 3840×2160 (8.3M vectors); 4× that still reads, a bomb does not.
MAX_FLO5_VECTORS = 4 * 3840 * 2160


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file into an H×W×2 float32 array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DflowgenError(f"cannot read flow file {path}: {error.strerror}") from None
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != FLO_MAGIC:
        raise DflowgenError(f"{path} is not a .flo file (bad magic number)")
    width, height = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    expected = 12 + 8 * width * height
    if width <= 0 or height <= 0 or len(raw) != expected:
        raise DflowgenError(f"{path} is truncated or corrupt: {width}×{height} needs {expected} bytes, has {len(raw)}")
    return np.frombuffer(raw[12:], "<f4").reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write an H×W×2 flow array as a Middlebury ``.flo`` file."""
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H×W×2, got shape {flow.shape}")
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    Path(path).write_bytes(header + flow.tobytes())


def read_kitti_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG: (H×W×2 float32 flow, H×W bool valid)."""
    path = Path(path)
    if not path.is_file():
        raise DflowgenError(f"cannot read KITTI flow PNG {path}: no such file")
    header = read_png_header(path, "KITTI flow PNG")  # the decoder allocates what IHDR claims: check it first
    if (header.bit_depth, header.colour_type) != (16, 2):
        raise DflowgenError(f"{path} is not a KITTI flow PNG (needs 16-bit RGB, the file is {header.bit_depth}-bit "
                            f"of colour type {header.colour_type})")
    # Pillow decodes 16-bit RGB PNGs to 8 bits, so decode with kornia-rs (installed with kornia).
    try:
        array = np.asarray(kornia_io.read_image_png_u16(str(path), "rgb"))
    except Exception as error:  # kornia-rs raises bare Exception for format errors
        raise DflowgenError(f"{path} is not a KITTI flow PNG (needs 16-bit RGB): {error}") from None
    flow = (array[..., :2].astype(np.float32) - 2**15) / 64.0
    valid = array[..., 2] > 0
    return flow, valid


def write_kitti_png(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write flow (and validity) as a KITTI 16-bit PNG; flow is rounded to 1/64 px."""
    flow = np.asarray(flow, dtype=np.float64)
    if valid is None:
        valid = np.ones(flow.shape[:2], dtype=bool)
    encoded = np.clip(np.round(flow * 64.0 + 2**15), 0, 2**16 - 1).astype(np.uint16)
    array = np.concatenate([encoded, np.asarray(valid, np.uint16)[..., None]], axis=2)
    kornia_io.write_image_png_u16(str(path), np.ascontiguousarray(array), "rgb")


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a ``.pfm`` file: H×W (grey) or H×W×3 float32, top row first.

    For flow files (FlyingThings3D) take ``[..., :2]``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            kind = handle.readline().strip()
            dims = handle.readline().strip()
            scale_line = handle.readline().strip()
            data = handle.read()
    except OSError as error:
        raise DflowgenError(f"cannot read PFM file {path}: {error.strerror}") from None
    if kind not in (b"PF", b"Pf"):
        raise DflowgenError(f"{path} is not a PFM file (header {kind[:8]!r})")
    match = re.fullmatch(rb"(\d+)\s+(\d+)", dims)
    if match is None:
        raise DflowgenError(f"{path}: malformed PFM size line {dims[:32]!r}")
    width, height = int(match.group(1)), int(match.group(2))
    try:
        scale = float(scale_line)
    except ValueError:
        raise DflowgenError(f"{path}: malformed PFM scale line {scale_line[:32]!r}") from None
    channels = 3 if kind == b"PF" else 1
    endian = "<" if scale < 0 else ">"
    count = width * height * channels
    if len(data) < 4 * count:
        raise DflowgenError(f"{path} is truncated: needs {4 * count} data bytes, has {len(data)}")
    array = np.frombuffer(data[: 4 * count], endian + "f4").reshape(height, width, channels)
    array = np.flipud(array).astype(np.float32)
    return array[..., 0] if channels == 1 else array


def read_flo5(path: str | Path) -> np.ndarray:
    """Read a Spring ``.flo5`` file (HDF5, dataset ``flow``): H×W×2 float32, NaN where flow is undefined.

    Spring stores flow at twice the image resolution; this returns it as stored.
    """
    import h5py  # imported here: only Spring flow and shards need it, and it costs start-up time

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            dataset = handle.get("flow")
            if (not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3 or dataset.shape[2] != 2
                    or dataset.dtype.kind != "f"):
                shape = getattr(dataset, "shape", None)
                raise DflowgenError(f"{path} is not a Spring flow file: needs an H×W×2 float dataset 'flow', "
                                    f"has {shape}")
            # Checked before decoding: a few compressed bytes can declare gigabytes.
            if dataset.shape[0] * dataset.shape[1] > MAX_FLO5_VECTORS:
                raise DflowgenError(f"{path} declares a {dataset.shape[1]}×{dataset.shape[0]} flow, more than "
                                    f"{MAX_FLO5_VECTORS} vectors (Spring's is 3840×2160)")
            return np.asarray(dataset[()], dtype=np.float32)
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DflowgenError(f"cannot read Spring flow file {path}: {reason}") from None
