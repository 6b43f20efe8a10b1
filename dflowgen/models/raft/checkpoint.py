"""Load RAFT weights: the official releases unchanged, and dflowgen's own checkpoints.

Accepted files (read with ``torch.load(weights_only=True)``, so no code in a file is ever run):
* a bare state dict, keys with or without the ``module.`` prefix that ``nn.DataParallel`` adds, in
  torch's zip format or the legacy pickle format (both occur among the released files);
* a dict with ``"model"`` (the state dict) and ``"model_name"``, as dflowgen's trainer writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch

from dflowgen.errors import DflowgenError
from dflowgen.models.checkpoint import check_fits, read_state_dict, resolve_checkpoint
from dflowgen.models.raft.raft import MODEL_NAMES, RAFT, build_raft

@cache
def _expected_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in build_raft(model_name).state_dict().items()}


def _key_mismatch(state_dict: Mapping[str, torch.Tensor], model_name: str) -> tuple[list[str], list[str]]:
    expected = _expected_shapes(model_name)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    return missing, unexpected


def infer_model_name(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"raft"`` or ``"raft-small"``: the architecture whose parameter names are closest to the keys."""
    return min(MODEL_NAMES, key=lambda name: sum(map(len, _key_mismatch(state_dict, name))))


def load_raft(
    path: str | Path,
    model_name: str | None = None,
    map_location: str | torch.device = "cpu",
    **options: object,
) -> RAFT:
    """Build RAFT and load weights from ``path``; the model is returned on ``map_location``, in eval mode.

    Args:
        path: an official release (``raft-sintel.pth``, ``raft-small.pth``, …) or a dflowgen checkpoint:
            a file, or any name ``dflowgen weights list`` shows (``"raft-small"``, ``"demo-base"``, …).
        model_name: ``"raft"`` or ``"raft-small"``; ``None`` takes the checkpoint's recorded name,
            or else infers it from the parameter names.
        map_location: device for the weights and the model.
        options: passed to :func:`build_raft` (``corr``, ``mixed_precision``).

    Raises:
        DflowgenError: the file is missing or not a checkpoint, or its weights do not fit the
            architecture (the message names missing, unexpected or mis-shaped keys).

    Example:
        >>> model = load_raft("raft-small.pth")  # doctest: +SKIP
    """
    if model_name is not None and model_name not in MODEL_NAMES:
        raise DflowgenError(f"unknown model name {model_name!r}: expected one of {', '.join(MODEL_NAMES)}")
    path = resolve_checkpoint(path)
    state_dict, recorded_name = read_state_dict(path, map_location, what="RAFT")
    if model_name is None:
        model_name = recorded_name if recorded_name in MODEL_NAMES else infer_model_name(state_dict)
    check_fits(path, state_dict, _expected_shapes(model_name), model_name)
    model = build_raft(model_name, **options)  # type: ignore[arg-type]
    model.load_state_dict(state_dict)
    return model.to(map_location).eval()
