"""Scene parameters θ of a batch, and drawing them from the ranges λ of a ``RenderConfig``.

Every sample has ``N = config.max_layers`` layer slots: slot 0 is the background, slots
``1..n`` the sample's foregrounds, the rest are inactive padding (``layer_active`` false), so
samples with different layer counts share one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dflowgen.assets import MASK_SIZE, LayerBank
from dflowgen.errors import DflowgenError
from dflowgen.render.config import RenderConfig, WarpRanges
from dflowgen.seeding import sample_generator

LEARNABLE_GROUPS: dict[str, tuple[str, ...]] = {
    "pixel": (
        "layer_translation",
        "layer_corners",
        "layer_grid",
        "anchor_translation",
        "anchor_corners",
        "anchor_grid",
        "flow_translation",
    ),
    "rotation_scale": ("layer_rotation", "layer_scale", "anchor_rotation", "anchor_scale", "depth"),
    "effects": ("white_balance", "fog_density", "fog_color", "fog_field", "blur_sigma", "blur_angle"),
    "noise": ("noise",),
}
"""Learnable fields by optimiser group (per-group learning rates, DFlow App. A.6)."""

_LEARNABLE = frozenset(name for names in LEARNABLE_GROUPS.values() for name in names)
_FOG_BASE_CELLS = (3, 4)


@dataclass
class SceneParams:
    """θ of ``B`` samples with ``N`` layer slots; all tensors have leading dimension ``B``.

    Learnable (floating point, see ``LEARNABLE_GROUPS``):
        layer_translation ``B×N×2`` px, layer_rotation ``B×N`` degrees, layer_scale ``B×N``,
        layer_corners ``B×N×4×2`` px, layer_grid ``B×N×2×gh×gw`` px: warp 1, the sampling map
        from frame 2 (t+1) to each layer's source;
        anchor_translation ``B×2``, anchor_rotation ``B``, anchor_scale ``B``, anchor_corners
        ``B×4×2``, anchor_grid ``B×2×gh×gw``: the anchor field ``A`` of warp 2, shared by all layers;
        flow_translation ``B×N×2`` px: the per-layer translation ``D_l`` of warp 2;
        depth ``B×N``: depth logits ``a_l`` of softmax splatting (``c·(l+1)`` at first);
        white_balance ``B×N×3``; fog_density ``B``; fog_color ``B×3×ch×cw``; fog_field
        ``B×1×fh×fw``; blur_sigma ``B×2`` (σx, σy) px; blur_angle ``B`` degrees;
        noise ``B×2×3×H×W`` (texture noise of frame 1 and frame 2).
    Fixed:
        layer_active ``B×N`` bool; image_index ``B×N`` int64; image_affine ``B×N×4``
        (sx, sy, ox, oy: source pixel x ↦ bank image pixel ``s·x + o``); mask_index ``B×N``
        int64 (-1 for the background); mask_affine ``B×N×4`` (source pixel ↦ mask pixel);
        white_balance_on ``B×N``, blur_layers ``B×N``, noise_on, fog_on, blur_on ``B`` bool.

    Flow convention: a point at pixel ``p`` of frame 1 on layer ``l`` lies at
    ``A(p) + D_l`` in frame 2, so its flow is ``A(p) + D_l − p``.
    """

    layer_translation: torch.Tensor
    layer_rotation: torch.Tensor
    layer_scale: torch.Tensor
    layer_corners: torch.Tensor
    layer_grid: torch.Tensor
    anchor_translation: torch.Tensor
    anchor_rotation: torch.Tensor
    anchor_scale: torch.Tensor
    anchor_corners: torch.Tensor
    anchor_grid: torch.Tensor
    flow_translation: torch.Tensor
    depth: torch.Tensor
    white_balance: torch.Tensor
    fog_density: torch.Tensor
    fog_color: torch.Tensor
    fog_field: torch.Tensor
    blur_sigma: torch.Tensor
    blur_angle: torch.Tensor
    noise: torch.Tensor
    layer_active: torch.Tensor
    image_index: torch.Tensor
    image_affine: torch.Tensor
    mask_index: torch.Tensor
    mask_affine: torch.Tensor
    white_balance_on: torch.Tensor
    blur_layers: torch.Tensor
    noise_on: torch.Tensor
    fog_on: torch.Tensor
    blur_on: torch.Tensor

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.field_names()}

    @property
    def batch_size(self) -> int:
        return self.layer_active.shape[0]

    @property
    def num_slots(self) -> int:
        return self.layer_active.shape[1]

    @property
    def device(self) -> torch.device:
        return self.layer_translation.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layer_translation.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SceneParams:
        """A copy on ``device``; ``dtype`` converts the floating-point fields (e.g. float64 for gradcheck)."""
        moved = {}
        for name, tensor in self.tensors().items():
            target = dtype if dtype is not None and tensor.is_floating_point() else None
            moved[name] = tensor.to(device=device, dtype=target)
        return SceneParams(**moved)

    def detach(self) -> SceneParams:
        """A copy cut from the autograd graph (fresh leaves, sharing storage)."""
        return SceneParams(**{name: tensor.detach() for name, tensor in self.tensors().items()})

    def requires_grad_(self, requires_grad: bool = True) -> SceneParams:
        """Mark every learnable field as an autograd leaf that wants gradients; returns self."""
        for name in _LEARNABLE:
            getattr(self, name).requires_grad_(requires_grad)
        return self

    def learnable_groups(self) -> dict[str, list[torch.Tensor]]:
        """``{"pixel", "rotation_scale", "effects", "noise"}`` → the tensors to optimise."""
        return {group: [getattr(self, name) for name in names] for group, names in LEARNABLE_GROUPS.items()}

    def select(self, index: torch.Tensor | Sequence[int] | slice) -> SceneParams:
        """The samples at ``index`` (leading dimension)."""
        if not isinstance(index, (torch.Tensor, slice)):
            index = torch.as_tensor(list(index), dtype=torch.long)
        return SceneParams(**{name: tensor[index] for name, tensor in self.tensors().items()})

    @classmethod
    def concat(cls, parts: Sequence[SceneParams]) -> SceneParams:
        """Samples of several batches in one (same slot count and shapes)."""
        return cls(**{name: torch.cat([getattr(p, name) for p in parts]) for name in cls.field_names()})

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays with leading dimension ``B``: float32 (float64 if so), int64 indices, uint8 flags."""
        arrays = {}
        for name, tensor in self.tensors().items():
            array = tensor.detach().cpu().numpy()
            arrays[name] = array.astype(np.uint8) if array.dtype == np.bool_ else array
        return arrays

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray]) -> SceneParams:
        """Inverse of :meth:`to_numpy`; a missing or malformed entry is a ``DflowgenError`` naming it."""
        missing = [name for name in cls.field_names() if name not in arrays]
        if missing:
            raise DflowgenError(f"scene parameters lack {', '.join(missing)}")
        tensors = {}
        for name in cls.field_names():
            array = np.asarray(arrays[name])
            if name in _INDEX_FIELDS:
                tensors[name] = torch.from_numpy(array.astype(np.int64))
            elif name in _FLAG_FIELDS:
                tensors[name] = torch.from_numpy(array.astype(np.bool_))
            elif np.issubdtype(array.dtype, np.floating):
                tensors[name] = torch.from_numpy(array.copy())
            else:
                raise DflowgenError(f"scene parameter '{name}' must be floating point, got {array.dtype}")
        batch = {tensor.shape[0] if tensor.dim() else -1 for tensor in tensors.values()}
        if len(batch) != 1:
            raise DflowgenError(f"scene parameters disagree on the batch size: {sorted(batch)}")
        return cls(**tensors)


_INDEX_FIELDS = frozenset({"image_index", "mask_index"})
_FLAG_FIELDS = frozenset({"layer_active", "white_balance_on", "blur_layers", "noise_on", "fog_on", "blur_on"})


def sample_params(config: RenderConfig, bank: LayerBank, seed: int, indices: Sequence[int]) -> SceneParams:
    """Draw θ for samples ``indices`` of run ``seed`` (on the CPU, float32).

    Sample ``i`` is drawn from its own generator ``sample_generator(seed, i)`` in a fixed
    order of fixed-shape draws, so it is identical whatever batch it is drawn in.
    """
    if len(indices) == 0:
        raise ValueError("sample_params needs at least one sample index")
    draws = [_draw_sample(config, bank, sample_generator(seed, int(index))) for index in indices]
    return SceneParams(**{name: torch.stack([d[name] for d in draws]) for name in SceneParams.field_names()})


def _uniform(generator: torch.Generator, bounds: tuple[float, float], *shape: int) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def _bernoulli(generator: torch.Generator, p: float, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator) < p


def _draw_warp(
    generator: torch.Generator, ranges: WarpRanges, grid_size: tuple[int, int], *lead: int
) -> dict[str, torch.Tensor]:
    return {
        "translation": _uniform(generator, ranges.translation, *lead, 2),
        "rotation": _uniform(generator, ranges.rotation_deg, *lead),
        "scale": _uniform(generator, ranges.scale, *lead),
        "corners": _uniform(generator, ranges.perspective, *lead, 4, 2),
        "grid": _uniform(generator, ranges.grid_offset, *lead, 2, *grid_size),
    }


def _draw_sample(config: RenderConfig, bank: LayerBank, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One sample's θ (no batch dimension); the order of draws is part of the format."""
    slots = config.max_layers
    width, height, margin = config.width, config.height, config.canvas_margin
    num_foreground = int(torch.randint(config.num_layers[0], config.num_layers[1] + 1, (1,), generator=generator))
    active = torch.arange(slots) <= num_foreground

    layer = _draw_warp(generator, config.layer_warp, config.grid_size, slots)
    anchor = _draw_warp(generator, config.anchor_warp, config.grid_size)
    flow_translation = _uniform(generator, config.layer_translation, slots, 2)

    image_index = torch.randint(bank.num_images, (slots,), generator=generator)
    image_affine = _image_placement(generator, bank, slots, width + 2 * margin, height + 2 * margin, margin)
    mask_index = torch.randint(bank.num_masks, (slots,), generator=generator)
    mask_affine = _mask_placement(generator, config, bank.mask_aspect[mask_index], slots)
    # A paired mask shows the region of the image it was cut from: compose the two maps.
    mask_image = bank.mask_image[mask_index]
    paired = (mask_image >= 0) & (torch.arange(slots) > 0)
    to_image = bank.mask_to_image[mask_index]
    scale, offset = to_image[:, :2], to_image[:, 2:]
    paired_affine = torch.cat([scale * mask_affine[:, :2], scale * mask_affine[:, 2:] + offset], dim=1)
    image_index = torch.where(paired, mask_image, image_index)
    image_affine = torch.where(paired[:, None], paired_affine, image_affine)
    mask_index[0] = -1
    mask_affine[0] = 0.0

    white_balance_on = _bernoulli(generator, config.white_balance_prob, slots)
    white_balance = _uniform(generator, config.white_balance, slots, 3)
    noise_on = _bernoulli(generator, config.noise_prob)
    # Zero where unused, so stored parameters of noiseless samples compress to nothing.
    noise = _uniform(generator, config.noise_init, 2, 3, height, width) * noise_on
    fog_on = _bernoulli(generator, config.fog_prob)
    fog_density = _uniform(generator, config.fog_density)
    fog_color = _uniform(generator, config.fog_color, 3, *config.fog_color_grid)
    fog_field = _fog_octaves(generator, config.fog_octaves)
    blur_on = _bernoulli(generator, config.blur_prob)
    blur_sigma = torch.stack([_uniform(generator, config.blur_sigma_x), _uniform(generator, config.blur_sigma_y)])
    blur_angle = _uniform(generator, config.blur_angle_deg)
    blur_layers = _bernoulli(generator, config.blur_layer_prob, slots)

    return {
        "layer_translation": layer["translation"],
        "layer_rotation": layer["rotation"],
        "layer_scale": layer["scale"],
        "layer_corners": layer["corners"],
        "layer_grid": layer["grid"],
        "anchor_translation": anchor["translation"],
        "anchor_rotation": anchor["rotation"],
        "anchor_scale": anchor["scale"],
        "anchor_corners": anchor["corners"],
        "anchor_grid": anchor["grid"],
        "flow_translation": flow_translation,
        "depth": config.splat_c * torch.arange(1, slots + 1, dtype=torch.float32),
        "white_balance": white_balance,
        "fog_density": fog_density,
        "fog_color": fog_color,
        "fog_field": fog_field,
        "blur_sigma": blur_sigma,
        "blur_angle": blur_angle,
        "noise": noise,
        "layer_active": active,
        "image_index": image_index,
        "image_affine": image_affine,
        "mask_index": mask_index,
        "mask_affine": mask_affine,
        "white_balance_on": white_balance_on & active,
        "blur_layers": blur_layers & active,
        "noise_on": noise_on,
        "fog_on": fog_on,
        "blur_on": blur_on,
    }


def _image_placement(
    generator: torch.Generator, bank: LayerBank, count: int, canvas_w: int, canvas_h: int, margin: int
) -> torch.Tensor:
    """``count×4`` maps (sx, sy, ox, oy) from source pixels to a random window of a bank image.

    The canvas (output window plus margin) is scaled uniformly to fit the bank image, placed
    at a random offset in what is left over, and mirrored left-right half of the time.
    """
    bank_w, bank_h = bank.image_size
    ratio = min(bank_w / canvas_w, bank_h / canvas_h)
    left = torch.rand(count, generator=generator) * (bank_w - ratio * canvas_w)
    top = torch.rand(count, generator=generator) * (bank_h - ratio * canvas_h)
    mirror = _bernoulli(generator, 0.5, count)
    # Pixel centre x of the canvas (edges at -margin-0.5 .. W+margin-0.5) maps edge-to-edge into the window.
    ox = left + ratio * (margin + 0.5) - 0.5
    oy = top + ratio * (margin + 0.5) - 0.5
    sx = torch.full((count,), ratio)
    mirrored_ox = 2 * left + ratio * canvas_w - 1 - ox
    return torch.stack([torch.where(mirror, -sx, sx), sx, torch.where(mirror, mirrored_ox, ox), oy], dim=1)


def _mask_placement(generator: torch.Generator, config: RenderConfig, aspect: torch.Tensor, count: int) -> torch.Tensor:
    """``count×4`` maps from source pixels to mask pixels: an object box centred in the window."""
    longest = _uniform(generator, config.object_size, count) * max(config.width, config.height)
    box_w = torch.where(aspect >= 1, longest, longest * aspect)
    box_h = torch.where(aspect >= 1, longest / aspect, longest)
    centre_x = _uniform(generator, (0.0, config.width - 1.0), count)
    centre_y = _uniform(generator, (0.0, config.height - 1.0), count)
    mirror = _bernoulli(generator, 0.5, count)
    sx, sy = MASK_SIZE / box_w, MASK_SIZE / box_h
    ox = (box_w / 2 - centre_x) * sx - 0.5
    oy = (box_h / 2 - centre_y) * sy - 0.5
    return torch.stack([torch.where(mirror, -sx, sx), sy, torch.where(mirror, MASK_SIZE - 1 - ox, ox), oy], dim=1)


def _fog_octaves(generator: torch.Generator, octaves: int) -> torch.Tensor:
    """``1×fh×fw`` smooth random field in [0, 1]: octaves of value noise, each half the last."""
    rows, cols = (cells * 2 ** (octaves - 1) + 1 for cells in _FOG_BASE_CELLS)
    total = torch.zeros(1, 1, rows, cols)
    for octave in range(octaves):
        cells = [base * 2**octave + 1 for base in _FOG_BASE_CELLS]
        coarse = torch.rand(1, 1, *cells, generator=generator)
        total += F.interpolate(coarse, size=(rows, cols), mode="bilinear", align_corners=True) / 2**octave
    return total[0] / (2 - 2 ** (1 - octaves))

