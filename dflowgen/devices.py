"""Which torch device a command runs on: one resolution and one set of messages for every command."""

from __future__ import annotations

import torch

from dflowgen.errors import DflowgenError, option


def resolve_device(requested: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """``requested`` as a torch device; None picks CUDA when available, else the CPU.

    A CUDA device without an index becomes ``cuda:local_rank`` under torchrun (``local_rank``
    given), else the current CUDA device.

    Raises:
        DflowgenError: ``requested`` is not a device name, or names CUDA on a machine without it.
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise DflowgenError(f"{option('device', requested)} is not a torch device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DflowgenError(f"{option('device', requested)}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    elif device.type != "cpu":
        raise DflowgenError(f"{option('device', requested)}: only cpu and cuda devices are supported")
    return device
