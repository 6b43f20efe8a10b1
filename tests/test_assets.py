"""The layer bank: bundled assets and their manifest, user folders, and the errors a user can cause."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from dflowgen.assets import MASK_SIZE, LayerBank, bundled_assets_dir, load_layer_bank
from dflowgen.errors import DflowgenError

SIZE = (80, 60)


@pytest.fixture(scope="module")
def bundled():
    return load_layer_bank(size=SIZE)


def write_image(path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def square_picture(colour: tuple[int, int, int], box: tuple[int, int, int, int], size=(40, 30)) -> tuple[np.ndarray, np.ndarray]:
    """A grey picture with a coloured box, and the box as a mask."""
    width, height = size
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    mask[y0:y1, x0:x1] = 255
    return image, mask


def test_the_manifest_lists_every_bundled_file_with_its_checksum_and_a_free_licence():
    folder = bundled_assets_dir()
    with open(folder / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    listed = {row["file"] for row in rows}
    present = {path.name for path in folder.iterdir() if path.is_file() and path.name != "MANIFEST.csv"}
    assert listed == present
    for row in rows:
        assert hashlib.sha256((folder / row["file"]).read_bytes()).hexdigest() == row["sha256"], row["file"]
        assert row["licence"] in {"public domain", "CC0-1.0"}, row["file"]
        assert row["source"], row["file"]
    assert sum(path.stat().st_size for path in folder.iterdir()) < 3 * 2**20


def test_the_bundled_bank_holds_photographs_procedural_textures_and_masks(bundled):
    assert bundled.image_size == SIZE
    assert bundled.images.shape == (bundled.num_images, 3, SIZE[1], SIZE[0])
    assert bundled.masks.shape == (bundled.num_masks, 1, MASK_SIZE, MASK_SIZE)
    assert 0.0 <= float(bundled.image_atlas.min()) and float(bundled.image_atlas.max()) <= 1.0
    names = set(bundled.image_names)
    assert {"astronaut.jpg", "coffee.jpg", "noise:0", "voronoi:1"} <= names
    assert any(name.startswith("blob:") for name in bundled.mask_names) and "horse_mask.png" in bundled.mask_names
    assert any(name.startswith("cut:") for name in bundled.mask_names)
    masks = bundled.masks[:, 0]
    border = torch.cat([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], dim=1)
    assert float(border.abs().max()) == 0.0, "reads outside a mask must give 0"
    assert (masks.flatten(1).amax(dim=1) > 0.5).all()
    paired = bundled.mask_image >= 0
    assert paired.any() and int(bundled.mask_image.max()) < bundled.num_images


def test_the_fingerprint_is_stable_and_depends_on_the_size(bundled):
    assert len(bundled.fingerprint) == 64
    assert load_layer_bank(size=SIZE).fingerprint == bundled.fingerprint
    assert load_layer_bank(size=(64, 48)).fingerprint != bundled.fingerprint


def test_a_user_folder_pairs_masks_with_their_images(tmp_path):
    image, mask = square_picture((250, 20, 20), (10, 8, 26, 20))
    write_image(tmp_path / "red.png", image)
    write_image(tmp_path / "red_mask.png", mask)
    write_image(tmp_path / "plain.jpg", np.full((30, 40, 3), 128, dtype=np.uint8))
    write_image(tmp_path / "star_mask.png", mask)
    bank = load_layer_bank(tmp_path, size=(40, 30))

    assert bank.image_names == ["plain.jpg", "red.png"]
    assert bank.mask_names == ["red_mask.png", "star_mask.png"]
    assert bank.mask_image.tolist() == [1, -1]
    # The paired mask's first and last stored pixels land on the box's border in its image.
    ax, ay, bx, by = bank.mask_to_image[0].tolist()
    first = (bx, by)
    last = (ax * (MASK_SIZE - 1) + bx, ay * (MASK_SIZE - 1) + by)
    assert first[0] == pytest.approx(9.0, abs=0.6) and first[1] == pytest.approx(7.0, abs=0.6)
    assert last[0] == pytest.approx(26.0, abs=0.6) and last[1] == pytest.approx(20.0, abs=0.6)
    assert bank.mask_aspect[0] == pytest.approx(18 / 14)


def test_a_user_folder_without_masks_gets_procedural_and_cut_masks(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "noise.png", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    bank = load_layer_bank(tmp_path, size=(40, 30))
    assert bank.image_names == ["noise.png"]
    assert any(name.startswith("polygon:") for name in bank.mask_names)


def test_the_fingerprint_follows_file_contents(tmp_path):
    image, _ = square_picture((10, 200, 10), (5, 5, 15, 15))
    write_image(tmp_path / "green.png", image)
    before = load_layer_bank(tmp_path, size=(40, 30)).fingerprint
    image[0, 0] = 0
    write_image(tmp_path / "green.png", image)
    assert load_layer_bank(tmp_path, size=(40, 30)).fingerprint != before


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda folder: None, "has no images"),
        (lambda folder: (folder / "notes.txt").write_text("no pictures here"), "has no images"),
        (lambda folder: (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really"), "broken.png"),
    ],
)
def test_unusable_folders_are_one_line_errors_naming_the_problem(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DflowgenError, match=message) as raised:
        load_layer_bank(tmp_path, size=(40, 30))
    assert "\n" not in str(raised.value)


def test_a_missing_folder_and_bad_masks_are_errors(tmp_path):
    with pytest.raises(DflowgenError, match="not found"):
        load_layer_bank(tmp_path / "nowhere", size=(40, 30))
    image, mask = square_picture((1, 2, 3), (2, 2, 8, 8))
    write_image(tmp_path / "a.png", image)
    write_image(tmp_path / "a_mask.png", mask[:10])
    with pytest.raises(DflowgenError, match="a_mask.png is 40×10 but its image is 40×30"):
        load_layer_bank(tmp_path, size=(40, 30))
    write_image(tmp_path / "a_mask.png", np.zeros_like(mask))
    with pytest.raises(DflowgenError, match="a_mask.png is empty"):
        load_layer_bank(tmp_path, size=(40, 30))


def test_a_bank_from_tensors():
    images = torch.rand(3, 3, 20, 30)
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 1
    bank = LayerBank.from_tensors(images, masks)
    assert bank.image_size == (30, 20) and bank.num_masks == 2
    assert torch.equal(bank.images, images)
    assert float(bank.masks[:, :, 0].abs().max()) == 0.0
    assert bank.fingerprint != LayerBank.from_tensors(images * 0.5, masks).fingerprint
