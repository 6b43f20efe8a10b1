"""Training checkpoints: atomic writes, ``last.pth`` plus numbered copies, and RNG states.

A checkpoint is a plain dict that ``torch.load(..., weights_only=True)`` reads (tensors,
numbers, strings, lists, dicts only):

    format, version         "dflowgen-checkpoint", 1
    model_name, model       "raft" | "raft-small", the state_dict (no ``module.`` prefix)
    step                    optimiser steps done (the next step to run is ``step``)
    optimizer, scheduler    their state_dicts
    rng                     python, numpy, torch (and cuda) global generator states
    data                    seed and stream position of the data order (a pure function of them)
    train_config, recipe    the resolved [train] section as a dict, and the whole recipe as TOML
    nonfinite_steps         steps skipped so far because the loss or gradient was not finite

so :func:`dflowgen.models.raft.load_raft` loads it as weights (keys ``model`` and ``model_name``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dflowgen.errors import DflowgenError
from dflowgen.files import atomic_copy, atomic_writer

CHECKPOINT_FORMAT = "dflowgen-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pth"


def step_name(step: int) -> str:
    """File name of the numbered checkpoint after ``step`` steps (sorts in step order)."""
    return f"step_{step:07d}.pth"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`dflowgen.files.atomic_writer`)."""
    with atomic_writer(Path(path)) as stream:
        torch.save(obj, stream)


def save_checkpoint(state: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``state`` as ``step_NNNNNNN.pth`` and make ``last.pth`` the same file; returns the numbered path."""
    out_dir = Path(out_dir)
    numbered = out_dir / step_name(int(state["step"]))
    atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, numbered)
    atomic_copy(numbered, out_dir / LAST_NAME)
    return numbered


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a dflowgen training checkpoint; a missing, corrupt or foreign file is a DflowgenError."""
    path = Path(path)
    if not path.is_file():
        raise DflowgenError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        reason = " ".join(str(error).split())[:200]
        raise DflowgenError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DflowgenError(f"{path} is not a dflowgen training checkpoint (no format '{CHECKPOINT_FORMAT}')")
    if state.get("version") != CHECKPOINT_VERSION:
        raise DflowgenError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {CHECKPOINT_VERSION})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global generators' states (python, numpy, torch CPU, every CUDA device) as loadable plain data."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the global generators back to a :func:`capture_rng_state` snapshot."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
