"""Declared image sizes, checked before anything is decoded.

An image file states its size in a few header bytes; a decoder then allocates what the
header claims. A 14 KB PNG that claims 1×512,958,455 pixels, or a ``.ppm`` header claiming
30000×30000, would make it allocate gigabytes, so every reader checks the declared size
against :data:`MAX_PIXELS` first, and a PNG's also against what its file size can hold once
inflated, and raises a one-line :class:`DflowgenError` naming the file.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from dflowgen.errors import DflowgenError

MAX_PIXELS = 1 << 26
"""The most pixels an image file may declare (67 M: 8192×8192, ~30× a Sintel or KITTI frame)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Deflate expands at most ~1032× (258-byte runs in 2 bits): a PNG claiming more raw bytes than this many times its
# file size cannot hold them, whatever MAX_PIXELS allows.
_DEFLATE_MAX_RATIO = 1100
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PngHeader(NamedTuple):
    """What a PNG's IHDR chunk declares."""

    width: int
    height: int
    bit_depth: int
    colour_type: int


def check_declared_size(path: Path, width: int, height: int, what: str = "image") -> None:
    """Raise unless ``width``×``height`` (as a file's header declares them) is positive and at most MAX_PIXELS."""
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise DflowgenError(f"{what} {path} declares {width}×{height} pixels (at most {MAX_PIXELS:,} are read); "
                            "the file is damaged or not an image of this kind")


def read_png_header(path: Path, what: str = "PNG") -> PngHeader:
    """The IHDR of PNG ``path`` (33 bytes read), size-checked; a one-line error for anything that is not a PNG."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(33)
    except OSError as error:
        raise DflowgenError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(head) < 33 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise DflowgenError(f"cannot read {what} {path}: not a PNG file (no PNG signature and IHDR header)")
    header = PngHeader(*struct.unpack(">IIBB", head[16:26]))
    check_declared_size(path, header.width, header.height, what)
    channels = _PNG_CHANNELS.get(header.colour_type)
    if channels is None or header.bit_depth not in (1, 2, 4, 8, 16):
        raise DflowgenError(f"{what} {path} has a damaged PNG header (bit depth {header.bit_depth}, colour type "
                            f"{header.colour_type})")
    raw_bytes = header.height * (1 + -(-header.width * channels * header.bit_depth // 8))
    size = path.stat().st_size
    if raw_bytes > _DEFLATE_MAX_RATIO * size:
        raise DflowgenError(f"{what} {path} declares {header.width}×{header.height} pixels, more than its {size} "
                            "bytes can hold; the file is damaged")
    return header


def open_image(path: Path, what: str = "image") -> Image.Image:
    """Open and decode an image with Pillow after checking the size its header declares."""
    try:
        with open(path, "rb") as stream:
            signature = stream.read(len(PNG_SIGNATURE))
    except OSError as error:
        raise DflowgenError(f"cannot read {what} {path}: {error.strerror}") from None
    if signature == PNG_SIGNATURE:  # Pillow's header check has no compression bound: apply ours
        read_png_header(path, what)
    with contextlib.ExitStack() as opened:  # closes the file unless it decodes
        try:
            with warnings.catch_warnings():
                # Pillow warns (or refuses) past its own, larger limit; ours below is the one that applies.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = opened.enter_context(Image.open(path))
            check_declared_size(path, *image.size, what)
            image.load()
        except Image.DecompressionBombError:
            raise DflowgenError(f"{what} {path} declares more than {MAX_PIXELS:,} pixels; the file is damaged or "
                                "not an image of this kind") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise DflowgenError(f"cannot read {what} {path}: {_reason(error)}") from None
        opened.pop_all()
    return image


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__
