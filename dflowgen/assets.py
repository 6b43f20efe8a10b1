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
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dflowgen.errors import DflowgenError
from dflowgen.image_limits import open_image

MASK_SIZE = 128
"""Side of the square every mask is stored at (its aspect ratio is kept separately)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"
PROCEDURAL_VERSION = "procedural-v1"
"""Bump when procedural generation changes, so fingerprints of old shards stop matching."""

_PROCEDURAL_SEED = 20240521
_SUPERSAMPLE = 2


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
    source_tree = Path(__file__).resolve().parents[1] / "layers_assets"
    installed = Path(sys.prefix) / "share" / "dflowgen" / "layers_assets"
    for folder in (source_tree, installed):
        if folder.is_dir():
            return folder
    raise DflowgenError("the bundled layers_assets/ folder is missing from this installation; pass a folder of images")


def load_layer_bank(folder: str | Path | None = None, size: tuple[int, int] | None = None) -> LayerBank:
    """Load a layer bank; images are resized to ``size`` = (W, H) by scaling to cover and centre-cropping.

    Args:
        folder: ``None`` for the bundled assets plus procedural layers, else a folder of
            images (and optional ``name_mask.png`` masks, see the module notes).
        size: (W, H) of the stored images; default ``RenderConfig().canvas_size``. Any size
            renders; one at least the render canvas keeps full detail.

    Raises:
        DflowgenError: a missing, empty or unreadable folder, or an unreadable image or mask,
            naming the file.
    """
    if size is None:
        from dflowgen.render.config import RenderConfig

        size = RenderConfig().canvas_size
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
    masks: list[_Mask] = []
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
            masks.append(_Mask.from_array(raw, mask_path.name, image_index=index, pixel_transform=transform))
    for path in free_masks:
        hasher.update(_file_digest(path, source_dir))
        masks.append(_Mask.from_array(_read_mask(path), path.name))

    user_masks = bool(paired_masks or free_masks) and not bundled
    if not user_masks:
        hasher.update(PROCEDURAL_VERSION.encode())
        generator = torch.Generator().manual_seed(_PROCEDURAL_SEED)
        for index, image in enumerate(list(images)):
            cut = _cut_mask(image, generator)
            if cut is not None:
                masks.append(_Mask.from_array(cut, f"cut:{image_names[index]}", image_index=index))
        masks.extend(_procedural_masks(generator))
    if bundled:
        textures = _procedural_textures(width, height, torch.Generator().manual_seed(_PROCEDURAL_SEED + 1))
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


@dataclass
class _Mask:
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
    ) -> _Mask:
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


def _smooth_noise(
    generator: torch.Generator, height: int, width: int, octaves: int, base: int = 2, channels: int = 1
) -> torch.Tensor:
    """``channels×H×W`` multi-octave value noise in about [-1, 1] (each octave half the last)."""
    total = torch.zeros(1, channels, height, width)
    for octave in range(octaves):
        cells = base * 2**octave
        coarse = torch.rand(1, channels, cells + 1, cells + 1, generator=generator) * 2 - 1
        total += F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True) / 2**octave
    return total[0] / (2 - 2 ** (1 - octaves))


def _cut_mask(image: torch.Tensor, generator: torch.Generator) -> np.ndarray | None:
    """An object-like mask cut from ``image`` (3×H×W): bright or dark smooth regions in an ellipse."""
    gray = image.mean(0)[None, None]
    h, w = gray.shape[-2:]
    smooth = F.avg_pool2d(F.interpolate(gray, scale_factor=0.25, mode="area"), 5, 1, 2, count_include_pad=False)
    smooth = F.interpolate(smooth, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    radius = float(torch.empty(1).uniform_(0.45, 0.8, generator=generator))
    window = (xs / radius) ** 2 + (ys / radius) ** 2 <= 1.0
    threshold = smooth[window].median()
    keep_bright = bool(torch.rand(1, generator=generator) < 0.5)
    mask = (smooth > threshold) if keep_bright else (smooth <= threshold)
    mask = (mask & window).float()
    fill = float(mask.sum() / window.sum())
    if not 0.15 <= fill <= 0.85:
        return None
    return mask.numpy()


def _procedural_masks(generator: torch.Generator) -> list[_Mask]:
    """Blobs, star polygons and ellipses, drawn at twice the size and averaged down (soft edges)."""
    big = _SUPERSAMPLE * MASK_SIZE
    masks = []
    for i in range(8):
        aspect = float(torch.empty(1).uniform_(0.6, 1.6, generator=generator))
        noise = _smooth_noise(generator, big, big, octaves=3, base=2)[0]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, big), torch.linspace(-1, 1, big), indexing="ij")
        envelope = 1.0 - (xs * min(aspect, 1.0)) ** 2 - (ys / max(aspect, 1.0)) ** 2
        inside = envelope + 0.45 * noise > 0.25
        masks.append(_Mask.from_array(_downsample(inside.float().numpy()), f"blob:{i}"))
    for i in range(8):
        vertices = int(torch.randint(5, 13, (1,), generator=generator))
        angles = torch.sort(torch.rand(vertices, generator=generator) * 2 * math.pi).values.tolist()
        radii = (0.35 + 0.6 * torch.rand(vertices, generator=generator)).tolist()
        canvas = Image.new("L", (big, big), 0)
        points = [(big / 2 * (1 + r * math.cos(a)), big / 2 * (1 + r * math.sin(a))) for a, r in zip(angles, radii)]
        ImageDraw.Draw(canvas).polygon(points, fill=255)
        masks.append(_Mask.from_array(_downsample(np.asarray(canvas, dtype=np.float32) / 255.0), f"polygon:{i}"))
    for i in range(4):
        aspect = float(torch.empty(1).uniform_(0.4, 1.0, generator=generator))
        canvas = Image.new("L", (big, big), 0)
        half = big * 0.45
        box = (big / 2 - half, big / 2 - half * aspect, big / 2 + half, big / 2 + half * aspect)
        ImageDraw.Draw(canvas).ellipse(box, fill=255)
        masks.append(_Mask.from_array(_downsample(np.asarray(canvas, dtype=np.float32) / 255.0), f"ellipse:{i}"))
    return masks


def _downsample(array: np.ndarray) -> np.ndarray:
    """Area-average a supersampled binary mask (anti-aliased edges)."""
    h, w = array.shape
    return array.reshape(h // _SUPERSAMPLE, _SUPERSAMPLE, w // _SUPERSAMPLE, _SUPERSAMPLE).mean(axis=(1, 3))


def _procedural_textures(width: int, height: int, generator: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """Colour noise, gratings, warped checkerboards and Voronoi cells (``3×H×W`` in [0, 1])."""
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    textures = []
    for i in range(2):
        noise = _smooth_noise(generator, height, width, octaves=6, base=2, channels=3)
        textures.append((f"noise:{i}", (0.5 + 0.5 * noise).clamp(0, 1)))
    for i in range(2):
        angle = float(torch.rand(1, generator=generator)) * math.pi
        period = float(torch.empty(1).uniform_(8.0, 40.0, generator=generator))
        phase = 6.0 * _smooth_noise(generator, height, width, octaves=3)[0]
        wave = 0.5 + 0.5 * torch.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period + phase)
        textures.append((f"grating:{i}", _two_colours(wave, generator)))
    for i in range(2):
        cell = float(torch.empty(1).uniform_(12.0, 48.0, generator=generator))
        warp = 0.6 * cell * _smooth_noise(generator, height, width, octaves=3, channels=2)
        checker = ((torch.floor((xs + warp[0]) / cell) + torch.floor((ys + warp[1]) / cell)) % 2).float()
        textures.append((f"checker:{i}", _two_colours(checker, generator)))
    for i in range(2):
        seeds = torch.rand(96, 2, generator=generator) * torch.tensor([width, height])
        colours = torch.rand(96, 3, generator=generator)
        points = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        nearest = torch.cdist(points, seeds).argmin(dim=1)
        textures.append((f"voronoi:{i}", colours[nearest].T.reshape(3, height, width).contiguous()))
    return textures


def _two_colours(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blend two random colours by ``weight`` (H×W in [0, 1]) into a ``3×H×W`` texture."""
    first, second = torch.rand(2, 3, 1, 1, generator=generator)
    return first * weight + second * (1 - weight)
