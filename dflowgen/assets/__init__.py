"""The layer bank: textures and object masks that rendered layers are cut from.

A layer of a rendered sample is an image (the texture) and a mask (the object's shape).
The bank holds both as tensors laid out for batched sampling: all images share one size
and are stacked vertically into one atlas (``1×3×(K·h)×w``), so one ``grid_sample`` call
can read any layer from any image; masks are stored the same way at a fixed square size.

Sources:

* ``load_layer_bank(None)``: the photographs bundled in ``layers_assets/`` (public domain or
  CC0, listed with checksums in ``layers_assets/MANIFEST.csv``), procedural textures,
  procedural masks (smooth-noise blobs, star polygons, ellipses), masks cut from the
  bundled photographs by thresholds, and the bundled stand-alone masks.
* ``load_layer_bank(folder)``: the user's images. A file ``name_mask.png`` beside
  ``name.<ext>`` is that image's object mask (same size as the image; white = object);
  a ``*_mask.png`` with no image beside it is a stand-alone mask. Without any mask file the
  procedural masks and masks cut from the user's images are used.

A mask that came with an image (its own ``_mask`` file or a threshold cut) is *paired*:
a layer that draws it shows the image region it was cut from, so objects keep their own
texture.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dflowgen.assets.masks import MASK_SIZE, Mask
from dflowgen.assets.procedural import PROCEDURAL_SEED, PROCEDURAL_VERSION, cut_mask, procedural_masks, procedural_textures
from dflowgen.bundled import shipped_dirs
from dflowgen.errors import DflowgenError
from dflowgen.image_limits import open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"


@dataclass
class LayerBank:
    """Images and masks to cut layers from, laid out as atlases for batched sampling.

    Attributes:
        image_atlas: ``1×3×(K·h)×w`` float32 in [0, 1]; image ``k`` is rows ``k·h .. k·h+h-1``.
        mask_atlas: ``1×1×(Km·S)×S`` float32 in [0, 1] with ``S = MASK_SIZE``; every mask is
            cropped to its object and has a one-pixel zero border, so reading outside it gives 0.
        mask_aspect: ``Km`` width/height of each mask's object box.
        mask_image: ``Km`` int64, the image a mask was cut from, or -1 for a free mask.
        mask_to_image: ``Km×4`` float (ax, ay, bx, by): mask pixel ``u`` lies at image pixel
            ``a·u + b`` of its paired image (unused for free masks).
        image_names, mask_names: where each entry came from.
        fingerprint: sha256 over the source files, the size and the procedural version.
    """

    image_atlas: torch.Tensor
    mask_atlas: torch.Tensor
    mask_aspect: torch.Tensor
    mask_image: torch.Tensor
    mask_to_image: torch.Tensor
    image_names: list[str]
    mask_names: list[str]
    fingerprint: str
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_tensors(
        cls, images: torch.Tensor, masks: torch.Tensor, mask_aspect: torch.Tensor | None = None
    ) -> LayerBank:
        """A bank from pictures in memory (free masks, no pairing).

        Args:
            images: ``K×3×h×w`` in [0, 1].
            masks: ``Km×1×m×m`` in [0, 1], white = object; resized to ``MASK_SIZE`` and given
                a zero border.
            mask_aspect: ``Km`` width/height of each mask's object box (default 1).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be K×3×h×w, got {tuple(images.shape)}")
        if masks.dim() != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks must be Km×1×m×m, got {tuple(masks.shape)}")
        images = images.detach().float().cpu().clamp(0, 1)
        masks = F.interpolate(masks.detach().float().cpu(), size=(MASK_SIZE, MASK_SIZE), mode="bilinear")
        masks = masks.clamp(0, 1)
        masks[..., 0, :] = masks[..., -1, :] = masks[..., :, 0] = masks[..., :, -1] = 0.0
        count, mask_count = images.shape[0], masks.shape[0]
        hasher = hashlib.sha256(b"dflowgen-layer-bank-tensors-v1")
        hasher.update(images.numpy().tobytes())
        hasher.update(masks.numpy().tobytes())
        return cls(
            image_atlas=images.transpose(0, 1).reshape(1, 3, -1, images.shape[-1]).contiguous(),
            mask_atlas=masks.transpose(0, 1).reshape(1, 1, -1, MASK_SIZE).contiguous(),
            mask_aspect=torch.ones(mask_count) if mask_aspect is None else mask_aspect.float().cpu(),
            mask_image=torch.full((mask_count,), -1, dtype=torch.int64),
            mask_to_image=torch.zeros(mask_count, 4),
            image_names=[f"tensor:{i}" for i in range(count)],
            mask_names=[f"tensor:{i}" for i in range(mask_count)],
            fingerprint=hasher.hexdigest(),
        )

    @property
    def num_images(self) -> int:
        return len(self.image_names)

    @property
    def num_masks(self) -> int:
        return len(self.mask_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """(w, h) of every bank image."""
        return self.image_atlas.shape[-1], self.image_atlas.shape[-2] // self.num_images

    @property
    def images(self) -> torch.Tensor:
        """``K×3×h×w`` view of the image atlas."""
        w, h = self.image_size
        return self.image_atlas[0].view(3, self.num_images, h, w).transpose(0, 1)

    @property
    def masks(self) -> torch.Tensor:
        """``Km×1×S×S`` view of the mask atlas."""
        return self.mask_atlas[0].view(1, self.num_masks, MASK_SIZE, MASK_SIZE).transpose(0, 1)

    @property
    def device(self) -> torch.device:
        return self.image_atlas.device

    def to(self, device: torch.device | str) -> LayerBank:
        """This bank on ``device``; the copy is kept, so rendering many batches moves it once."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = LayerBank(
                image_atlas=self.image_atlas.to(device),
                mask_atlas=self.mask_atlas.to(device),
                mask_aspect=self.mask_aspect.to(device),
                mask_image=self.mask_image.to(device),
                mask_to_image=self.mask_to_image.to(device),
                image_names=self.image_names,
                mask_names=self.mask_names,
                fingerprint=self.fingerprint,
            )
        return self._on_device[key]


def bundled_assets_dir() -> Path:
    """``layers_assets/`` of the source tree, or of an installed copy."""
    for folder in shipped_dirs("layers_assets"):
        if folder.is_dir():
            return folder
    raise DflowgenError("the bundled layers_assets/ folder is missing from this installation; pass a folder of images")


def load_layer_bank(folder: str | Path | None = None, *, size: tuple[int, int]) -> LayerBank:
    """Load a layer bank; images are resized to ``size`` = (W, H) by scaling to cover and centre-cropping.

    Args:
        folder: ``None`` for the bundled assets plus procedural layers, else a folder of
            images (and optional ``name_mask.png`` masks, see the module notes).
        size: (W, H) of the stored images, usually the recipe's ``render.canvas_size``. Any
            size renders; one at least the render canvas keeps full detail.

    Raises:
        DflowgenError: a missing, empty or unreadable folder, or an unreadable image or mask,
            naming the file.
    """
    width, height = int(size[0]), int(size[1])
    if width < 8 or height < 8:
        raise DflowgenError(f"layer bank size must be at least 8×8, got {width}×{height}")
    bundled = folder is None
    source_dir = bundled_assets_dir() if bundled else Path(folder)
    image_paths, paired_masks, free_masks = _scan_folder(source_dir)
    if not image_paths and not bundled:
        raise DflowgenError(f"layer folder {source_dir} has no images ({', '.join(IMAGE_SUFFIXES)})")

    hasher = hashlib.sha256(f"dflowgen-layer-bank-v1 {width}x{height} mask{MASK_SIZE}".encode())
    images: list[torch.Tensor] = []
    image_names: list[str] = []
    masks: list[Mask] = []
    for path in image_paths:
        hasher.update(_file_digest(path, source_dir))
        image, transform = _read_image(path, width, height)
        index = len(images)
        images.append(image)
        image_names.append(path.name)
        mask_path = paired_masks.get(path)
        if mask_path is not None:
            hasher.update(_file_digest(mask_path, source_dir))
            with Image.open(path) as source:  # header only: _read_image has decoded it already
                raw = _read_mask(mask_path, expected_size=source.size)
            masks.append(Mask.from_array(raw, mask_path.name, image_index=index, pixel_transform=transform))
    for path in free_masks:
        hasher.update(_file_digest(path, source_dir))
        masks.append(Mask.from_array(_read_mask(path), path.name))

    user_masks = bool(paired_masks or free_masks) and not bundled
    if not user_masks:
        hasher.update(PROCEDURAL_VERSION.encode())
        generator = torch.Generator().manual_seed(PROCEDURAL_SEED)
        for index, image in enumerate(list(images)):
            cut = cut_mask(image, generator)
            if cut is not None:
                masks.append(Mask.from_array(cut, f"cut:{image_names[index]}", image_index=index))
        masks.extend(procedural_masks(generator))
    if bundled:
        textures = procedural_textures(width, height, torch.Generator().manual_seed(PROCEDURAL_SEED + 1))
        for name, texture in textures:
            images.append(texture)
            image_names.append(name)

    image_atlas = torch.cat(images, dim=1)[None].contiguous()
    mask_atlas = torch.cat([m.pixels for m in masks], dim=0)[None, None].contiguous()
    return LayerBank(
        image_atlas=image_atlas,
        mask_atlas=mask_atlas,
        mask_aspect=torch.tensor([m.aspect for m in masks], dtype=torch.float32),
        mask_image=torch.tensor([m.image_index for m in masks], dtype=torch.int64),
        mask_to_image=torch.tensor([m.to_image for m in masks], dtype=torch.float32),
        image_names=image_names,
        mask_names=[m.name for m in masks],
        fingerprint=hasher.hexdigest(),
    )


def _scan_folder(folder: Path) -> tuple[list[Path], dict[Path, Path], list[Path]]:
    """(images, image → its mask, stand-alone masks), each sorted by name."""
    if not folder.exists():
        raise DflowgenError(f"layer folder not found: {folder}")
    if not folder.is_dir():
        raise DflowgenError(f"layer folder is not a directory: {folder}")
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as error:
        raise DflowgenError(f"cannot list layer folder {folder}: {error.strerror}") from None
    mask_files = [p for p in files if p.stem.endswith(MASK_SUFFIX)]
    images = [p for p in files if not p.stem.endswith(MASK_SUFFIX)]
    by_stem = {p.stem: p for p in images}
    paired: dict[Path, Path] = {}
    free: list[Path] = []
    for mask in mask_files:
        owner = by_stem.get(mask.stem[: -len(MASK_SUFFIX)])
        if owner is None:
            free.append(mask)
        else:
            paired[owner] = mask
    if not images and not free:
        raise DflowgenError(f"layer folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return images, paired, free


def _file_digest(path: Path, root: Path) -> bytes:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DflowgenError(f"cannot read layer file {path}: {error.strerror}") from None
    return f"{path.relative_to(root)}:{hashlib.sha256(content).hexdigest()}\n".encode()


def _read_image(path: Path, width: int, height: int) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """``3×H×W`` float image scaled to cover (W, H) and centre-cropped, and the pixel map.

    The map (kx, ky, bx, by) takes a source pixel centre ``x`` to ``k·x + b`` in the result.
    """
    image = open_image(path, "layer image").convert("RGB")
    scale = max(width / image.width, height / image.height)
    new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    resized = image.resize((new_w, new_h), Image.BICUBIC).crop((left, top, left + width, top + height))
    kx, ky = new_w / image.width, new_h / image.height
    transform = (kx, ky, 0.5 * kx - 0.5 - left, 0.5 * ky - 0.5 - top)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), transform


def _read_mask(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as an ``H×W`` float array in [0, 1] (white = object)."""
    image = open_image(path, "mask")
    if expected_size is not None and image.size != expected_size:
        raise DflowgenError(
            f"mask {path} is {image.size[0]}×{image.size[1]} but its image is {expected_size[0]}×{expected_size[1]}"
        )
    if image.mode in ("RGBA", "LA"):
        array = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        if array.min() == array.max():
            array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    else:
        array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if not (array > 0.5).any():
        raise DflowgenError(f"mask {path} is empty (no pixel above half intensity)")
    return array
