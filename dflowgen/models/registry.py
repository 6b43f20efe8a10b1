"""One place that maps a model name to a network, its weights and its training loss.

Train, eval, infer and the DFlow proxies all go through here, so every command knows the same
networks: ``raft`` and ``raft-small`` (:mod:`dflowgen.models.raft`), ``flownets`` and ``flownetc``
(:mod:`dflowgen.models.flownet`). Every network takes RAFT's call signature:
``model(image1, image2, iters=…, final_only=…) -> list of flows`` with B×3×H×W images in [0, 255];
inference goes through :func:`dflowgen.models.inference.predict_flow`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_write_bytes
from dflowgen.losses.multiscale import multiscale_epe
from dflowgen.losses.sequence import sequence_loss
from dflowgen.models.checkpoint import check_fits, read_state_dict, resolve_checkpoint
from dflowgen.models.flownet import FLOWNET_NAMES, FlowNet, build_flownet, from_port_layout, is_port_layout
from dflowgen.models.raft import MODEL_NAMES as RAFT_NAMES
from dflowgen.models.raft import InputPadder, build_raft, infer_model_name, load_raft
from dflowgen.weights import StoredWeights, add_weights

ModelName = Literal["raft", "raft-small", "flownets", "flownetc"]
MODEL_NAMES: tuple[ModelName, ...] = (*RAFT_NAMES, *FLOWNET_NAMES)
_BATCH_NORM_SUFFIX = "_bn"
"""The ports record their BatchNorm variants as ``flownets_bn`` / ``flownetc_bn``."""


def check_model_name(model_name: str, what: str = "model") -> None:
    """Raise a one-line ``DflowgenError`` unless ``model_name`` is one of :data:`MODEL_NAMES` (``what`` names it)."""
    if model_name not in MODEL_NAMES:
        raise DflowgenError(f"unknown {what} {model_name!r}: expected one of {', '.join(MODEL_NAMES)}")


def build_model(model_name: str, *, mixed_precision: bool = False) -> nn.Module:
    """A freshly initialised network by name (``mixed_precision`` is RAFT's bf16 autocast; FlowNets ignore it)."""
    check_model_name(model_name)
    if model_name in FLOWNET_NAMES:
        return build_flownet(model_name)  # type: ignore[arg-type]
    return build_raft(model_name, mixed_precision=mixed_precision)  # type: ignore[arg-type]


@cache
def _flownet_shapes(model_name: str, batch_norm: bool) -> dict[str, tuple[int, ...]]:
    model = build_flownet(model_name, batch_norm=batch_norm)  # type: ignore[arg-type]
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _family_name(state_dict: Mapping[str, torch.Tensor], recorded: str | None) -> str:
    """The architecture a checkpoint holds: its recorded name when known, else read from its keys."""
    if recorded is not None and recorded.removesuffix(_BATCH_NORM_SUFFIX) in MODEL_NAMES:
        return recorded.removesuffix(_BATCH_NORM_SUFFIX)
    if "encoder.conv_redir.0.weight" in state_dict or "conv_redir.0.weight" in state_dict:
        return "flownetc"
    if "encoder.conv1.0.weight" in state_dict or is_port_layout(state_dict):
        return "flownets"
    return infer_model_name(state_dict)


def _load_flownet(path: Path, state_dict: dict[str, torch.Tensor], model_name: str,
                  map_location: str | torch.device) -> FlowNet:
    if is_port_layout(state_dict):
        state_dict = from_port_layout(state_dict)
    batch_norm = "encoder.conv1.1.weight" in state_dict
    check_fits(path, state_dict, _flownet_shapes(model_name, batch_norm), model_name)
    model = build_flownet(model_name, batch_norm=batch_norm)  # type: ignore[arg-type]
    model.load_state_dict(state_dict)
    return model.to(map_location).eval()


def load_model(weights: str | Path, model_name: str | None = None, map_location: str | torch.device = "cpu",
               *, mixed_precision: bool = False) -> nn.Module:
    """A network with the weights of ``weights`` (a file or any name ``dflowgen weights list`` shows), in eval mode.

    Args:
        weights: a dflowgen checkpoint, an official RAFT release, or a FlowNet port checkpoint
            (``{"state_dict", "arch"}``, flat keys ``conv1.0.weight``, …).
        model_name: one of :data:`MODEL_NAMES`; ``None`` takes the recorded name, else reads the keys.
        map_location: device for the weights and the model.
        mixed_precision: RAFT's bf16 autocast (see :func:`dflowgen.models.raft.build_raft`).

    Raises:
        DflowgenError: unknown name, missing or unreadable file, or weights that do not fit.
    """
    if model_name is not None:
        check_model_name(model_name)
    path = resolve_checkpoint(weights)
    state_dict, recorded = read_state_dict(path, map_location)
    family = model_name or _family_name(state_dict, recorded)
    if family in FLOWNET_NAMES:
        return _load_flownet(path, state_dict, family, map_location)
    return load_raft(path, family, map_location=map_location, mixed_precision=mixed_precision)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or DataParallel) wrapper; else ``model``."""
    return getattr(model, "module", model)


def is_flownet(model: nn.Module) -> bool:
    """True for FlowNetS and FlowNetC (multi-scale predictions, multi-scale EPE loss)."""
    return isinstance(unwrap(model), FlowNet)


def training_loss(
    model: nn.Module,
    image1: torch.Tensor,
    image2: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor | None,
    *,
    iters: int,
    gamma: float = 0.8,
    max_flow: float = 400.0,
    reduction: Literal["mean", "none"] = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The network's own supervised loss on one batch: RAFT's sequence loss, or FlowNet's multi-scale EPE.

    Args:
        model: any network of :data:`MODEL_NAMES` (possibly wrapped by DDP), in its training-mode call.
        image1, image2: B×3×H×W in [0, 255]; sizes that are not multiples of 8 are replicate-padded
            for RAFT and its predictions cropped back, so only the given pixels are scored.
        flow: B×2×H×W ground truth; valid: B×H×W (or B×1×H×W) mask, or None.
        iters, gamma: RAFT's GRU iterations and sequence weight decay (unused by FlowNets).
        max_flow, reduction: see :func:`dflowgen.losses.sequence.sequence_loss`.

    Returns:
        ``(loss, metrics)`` with ``epe``, ``1px``, ``3px``, ``5px``.
    """
    if valid is not None and valid.ndim == 4:
        valid = valid[:, 0]
    if is_flownet(model):
        predictions = model(image1, image2)
        return multiscale_epe(predictions, flow, valid, unwrap(model).div_flow, max_flow=max_flow, reduction=reduction)
    padder = InputPadder(image1.shape)
    padded1, padded2 = padder.pad(image1, image2)
    predictions = [padder.unpad(prediction) for prediction in model(padded1, padded2, iters=iters)]
    return sequence_loss(predictions, flow, valid, gamma=gamma, max_flow=max_flow, reduction=reduction)


def export_network(checkpoint: str | Path, out: str | Path) -> Path:
    """Write only the network of ``checkpoint`` (a training checkpoint or any file :func:`load_model` reads) to ``out``.

    The result is ``{"model": state_dict, "model_name": ...}``, a quarter of a training
    checkpoint's size (no optimiser, scheduler or RNG state): the form to share or ship.
    """
    model = load_model(checkpoint)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_name": model.model_name}, buffer)
    out = Path(out)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as error:
        raise DflowgenError(f"cannot write {out}: {error.strerror or error}") from None
    return out


def register_weights(name: str, source: str | Path, model_name: str | None = None) -> StoredWeights:
    """Add a checkpoint to the weights store after loading it as every user will.

    The file must load weights-only (no pickled code runs) into ``model_name`` (default: the
    architecture it records, or the one its keys show); a pickle, a damaged file or weights of
    another architecture are refused before anything is copied.
    """
    model = load_model(Path(source), model_name)
    return add_weights(name, source, model=model.model_name)
