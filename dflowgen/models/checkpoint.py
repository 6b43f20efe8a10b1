"""Reading a flow network's weights: from a file or a weights-store name, without running code in the file.

Accepted contents (``torch.load(weights_only=True)``):
* a bare state dict, keys with or without the ``module.`` prefix that ``nn.DataParallel`` adds;
* ``{"model": state_dict, "model_name": ...}``, as dflowgen's trainer writes;
* ``{"state_dict": state_dict, "arch": ...}``, as the widely used PyTorch FlowNet ports write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from dflowgen.errors import DflowgenError
from dflowgen.weights import resolve_weights


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """``name_or_path`` itself when it is a file, else the weights-store entry of that name.

    Raises:
        DflowgenError: neither a file nor a name ``dflowgen weights list`` shows (the message says
            how to get an official release that is not in the store).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    return resolve_weights(name_or_path)


def read_state_dict(path: Path, map_location: str | torch.device,
                    what: str = "flow-network") -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict of the checkpoint file ``path`` (``module.`` prefix stripped) and its recorded model name.

    ``what`` names the expected kind of checkpoint in error messages.
    """
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
        raise DflowgenError(f"cannot read {path} as a {what} checkpoint: {reason}") from None
    model_name = None
    for state_key, name_key in (("model", "model_name"), ("state_dict", "arch")):
        if isinstance(content, Mapping) and isinstance(content.get(state_key), Mapping):
            model_name = content.get(name_key)
            content = content[state_key]
            break
    if not isinstance(content, Mapping) or not content or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()
    ):
        raise DflowgenError(
            f"{path} is not a {what} checkpoint: expected a state dict, "
            "or a dict with 'model' (a state dict) and 'model_name'"
        )
    state_dict = {key.removeprefix("module."): value for key, value in content.items()}
    return state_dict, model_name if isinstance(model_name, str) else None


def check_fits(path: Path, state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
               model_name: str, shown: int = 3) -> None:
    """Raise a one-line ``DflowgenError`` unless ``state_dict`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:shown]) + (", …" if len(keys) > shown else "")

    if missing or unexpected:
        raise DflowgenError(
            f"{path} does not fit {model_name}: {len(missing)} missing keys ({some(missing)}), "
            f"{len(unexpected)} unexpected keys ({some(unexpected)})"
        )
    misshapen = [key for key, value in state_dict.items() if tuple(value.shape) != expected[key]]
    if misshapen:
        details = ", ".join(f"{key} {tuple(state_dict[key].shape)} vs {expected[key]}" for key in misshapen[:shown])
        raise DflowgenError(f"{path} does not fit {model_name}: {len(misshapen)} keys with wrong shapes ({details})")
