"""Image bombs: files whose headers claim huge sizes are refused before any decoder allocates them."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dflowgen.cli import cli
from dflowgen.data.readers.files import read_mask, read_rgb
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_kitti_png, write_kitti_png
from dflowgen.image_limits import MAX_PIXELS


def kitti_png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid tiny KITTI flow PNG whose IHDR (with a correct CRC) claims ``width``×``height``."""
    write_kitti_png(path, np.zeros((4, 5, 2)))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def ppm_claiming(path: Path, width: int, height: int) -> Path:
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode() + bytes(300))
    return path


def test_kitti_png_claiming_half_a_billion_pixels_is_refused_from_its_header(tmp_path):
    path = kitti_png_claiming(tmp_path / "000000_10.png", 1, 512_958_455)
    assert path.stat().st_size < 1000
    with pytest.raises(DflowgenError, match=r"declares 1×512958455 pixels"):
        read_kitti_png(path)


def test_kitti_png_of_the_wrong_kind_or_not_png_is_one_error(tmp_path):
    eight_bit = tmp_path / "grey.png"
    Image.new("L", (4, 3)).save(eight_bit)
    with pytest.raises(DflowgenError, match="needs 16-bit RGB"):
        read_kitti_png(eight_bit)
    other = tmp_path / "x.png"
    other.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(DflowgenError, match="not a PNG file"):
        read_kitti_png(other)


@pytest.mark.parametrize("width, height", [(30000, 30000), (10000, 10000), (MAX_PIXELS + 1, 1)])
def test_ppm_headers_claiming_huge_sizes_are_refused(tmp_path, width, height):
    path = ppm_claiming(tmp_path / "frame.ppm", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not print either
        with pytest.raises(DflowgenError, match="declares"):
            read_rgb(path)
        with pytest.raises(DflowgenError, match="declares"):
            read_mask(path)


def test_generate_with_a_bomb_among_the_layer_images_is_one_line(tmp_path):
    assets = tmp_path / "layers"
    assets.mkdir()
    ppm_claiming(assets / "huge.ppm", 30000, 30000)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["generate", "--mode", "random", "--num-samples", "2", "--size", "64x48",
                                      "--assets", str(assets), "--out", str(out), "--device", "cpu", "--quiet"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "huge.ppm declares" in lines[0], result.output
    assert not out.exists()


def test_png_claiming_more_than_its_bytes_can_inflate_to_is_refused(tmp_path):
    """Within MAX_PIXELS, but 4000×4000 16-bit RGB (96 MB) cannot come out of a file of a few hundred bytes."""
    path = kitti_png_claiming(tmp_path / "000000_10.png", 4000, 4000)
    for read in (read_kitti_png, read_rgb):
        with pytest.raises(DflowgenError, match="more than its .* bytes can hold"):
            read(path)
