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
from dflowgen.models.raft.raft import MODEL_NAMES, RAFT, build_raft

_SHOWN_KEYS = 3


@cache
def _expected_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in build_raft(model_name).state_dict().items()}


def _read(path: Path, map_location: str | torch.device) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict (prefix stripped) and the recorded model name, if any."""
    if not path.is_file():
        raise DflowgenError(f"checkpoint {path} not found")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a corrupt file can fail anywhere inside the unpickler
        message = str(error).strip()
        if message.startswith("Weights only load failed"):
            reason = "it holds Python objects other than tensors and plain containers (not loaded, for safety)"
        else:
            reason = message.splitlines()[0] if message else type(error).__name__
        raise DflowgenError(f"cannot read {path} as a RAFT checkpoint: {reason}") from None
    model_name = None
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        model_name = content.get("model_name")
        content = content["model"]
    if not isinstance(content, Mapping) or not content or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()
    ):
        raise DflowgenError(
            f"{path} is not a RAFT checkpoint: expected a state dict, "
            "or a dict with 'model' (a state dict) and 'model_name'"
        )
    state_dict = {key.removeprefix("module."): value for key, value in content.items()}
    return state_dict, model_name if isinstance(model_name, str) else None


def _key_mismatch(state_dict: Mapping[str, torch.Tensor], model_name: str) -> tuple[list[str], list[str]]:
    expected = _expected_shapes(model_name)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    return missing, unexpected


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (", …" if len(keys) > _SHOWN_KEYS else "")


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
        path: an official release (``raft-sintel.pth``, ``raft-small.pth``, …) or a dflowgen checkpoint.
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
    path = Path(path)
    if model_name is not None and model_name not in MODEL_NAMES:
        raise DflowgenError(f"unknown model name {model_name!r}: expected one of {', '.join(MODEL_NAMES)}")
    state_dict, recorded_name = _read(path, map_location)
    if model_name is None:
        model_name = recorded_name if recorded_name in MODEL_NAMES else infer_model_name(state_dict)
    missing, unexpected = _key_mismatch(state_dict, model_name)
    if missing or unexpected:
        raise DflowgenError(
            f"{path} does not fit {model_name}: {len(missing)} missing keys ({_some(missing)}), "
            f"{len(unexpected)} unexpected keys ({_some(unexpected)})"
        )
    expected = _expected_shapes(model_name)
    misshapen = [key for key, value in state_dict.items() if tuple(value.shape) != expected[key]]
    if misshapen:
        details = ", ".join(
            f"{key} {tuple(state_dict[key].shape)} vs {expected[key]}" for key in misshapen[:_SHOWN_KEYS]
        )
        raise DflowgenError(f"{path} does not fit {model_name}: {len(misshapen)} keys with wrong shapes ({details})")
    model = build_raft(model_name, **options)  # type: ignore[arg-type]
    model.load_state_dict(state_dict)
    return model.to(map_location).eval()
