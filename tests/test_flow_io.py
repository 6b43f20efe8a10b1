import numpy as np
import pytest

from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo, read_kitti_png, read_pfm, write_flo, write_kitti_png


def _random_flow(height=5, width=7, seed=0):
    return np.random.default_rng(seed).normal(scale=20, size=(height, width, 2)).astype(np.float32)


def test_flo_roundtrip_is_exact(tmp_path):
    flow = _random_flow()
    write_flo(tmp_path / "f.flo", flow)
    np.testing.assert_array_equal(read_flo(tmp_path / "f.flo"), flow)


def test_flo_rejects_bad_magic_and_truncation(tmp_path):
    path = tmp_path / "f.flo"
    write_flo(path, _random_flow())
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(DflowgenError, match="truncated"):
        read_flo(path)
    path.write_bytes(b"XXXX" + data[4:])
    with pytest.raises(DflowgenError, match="not a .flo"):
        read_flo(path)
    with pytest.raises(DflowgenError, match="cannot read"):
        read_flo(tmp_path / "missing.flo")


def test_kitti_png_roundtrip_to_1_64_px(tmp_path):
    flow = _random_flow()
    valid = np.random.default_rng(1).random(flow.shape[:2]) > 0.3
    write_kitti_png(tmp_path / "f.png", flow, valid)
    flow_read, valid_read = read_kitti_png(tmp_path / "f.png")
    np.testing.assert_array_equal(valid_read, valid)
    assert np.abs(flow_read - flow).max() <= 0.5 / 64 + 1e-6


def test_kitti_png_rejects_8bit(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb8.png")
    with pytest.raises(DflowgenError, match="16-bit"):
        read_kitti_png(tmp_path / "rgb8.png")


def test_pfm_little_endian_colour_and_bottom_up_order(tmp_path):
    array = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    header = b"PF\n3 2\n-1.0\n"
    (tmp_path / "a.pfm").write_bytes(header + np.flipud(array).astype("<f4").tobytes())
    np.testing.assert_array_equal(read_pfm(tmp_path / "a.pfm"), array)


def test_shared_tiny_files_read(shared_data):
    flow_flo = read_flo(shared_data / "tiny" / "00001_flow.flo")
    assert flow_flo.shape == (50, 50, 2) and np.isfinite(flow_flo).all()
    weights = read_pfm(shared_data / "tiny" / "0000000-occ_weights_01.pfm")
    assert weights.shape[:2] == (50, 50)
