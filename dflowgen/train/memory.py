"""Will a training run fit in memory? An estimate of its peak, checked before anything is written.

The estimate (bytes, per process) of a step of ``b`` samples at an ``H×W`` crop with ``iters``
GRU iterations is::

    peak = PROCESS_BYTES + 4·weight_bytes + STEP_BYTES          (weights, gradients, AdamW's two moments)
           + passes(mode) · b · ( H·W · (a + c·iters)            (activations kept for the backward pass)
                                 + 4 · 1.33 · 3 · (H·W/64)² )   (all-pairs correlation pyramid, 4 bytes a float,
                                                                 4 levels, kept, its gradient and the raw product)

``a`` (bytes per pixel kept once: encoders, loss), ``c`` (bytes per pixel per GRU iteration:
update block, correlation lookups, upsampling) and the step's fixed ``STEP_BYTES`` are per model,
fitted to three measured supervised runs on the CPU (batch 2 at 96×128 and 192×256 with 2
iterations, 192×256 with 6; ``bench/train_memory.py``, torch 2.13, one thread); the correlation
term is analytic. A fourth run checks the fit: batch 4 at 256×320 with 4 iterations measured
2.06 GiB (raft) and 0.95 GiB (raft-small) above the process, estimated 2.08 and 0.88 GiB.
``passes`` scales the step for the label-free modes: self-supervised measured 5.2× (raft) and
7.6× (raft-small) the supervised step at 192×256 (three batches of frames through the network
and a census loss on every iterate), taken as 8; pseudo-label is 1 (its labels are made without
gradients); distill is 2 (both directions), not measured. The same formula is used on CUDA,
where it errs high (no Python process in device memory; bf16 halves the activations when
``mixed_precision`` is on).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from dflowgen.bundled import shipped_dirs
from dflowgen.errors import DflowgenError, option
from dflowgen.fields import from_dict
from dflowgen.train.config import TrainConfig

# Resident size of a process that has imported torch and built the model, before the first step.
PROCESS_BYTES = 340 * 2**20
STEP_BYTES = 40 * 2**20
PARAMETERS = {"raft": 5_257_536, "raft-small": 990_162}
# model -> (a: bytes per pixel, c: bytes per pixel per GRU iteration), from bench/train_memory.py.
ACTIVATION_BYTES = {"raft": (3797.0, 643.0), "raft-small": (1540.0, 220.0)}
_PASSES = {"supervised": 1, "pseudo-label": 1, "distill": 2, "self-supervised": 8}
BUDGET_VARIABLE = "DFLOWGEN_MEMORY_BUDGET"
_GIB = 2**30


def mode_passes(mode: str) -> int:
    """Batches of frames per sample that a training mode runs the trained network on (with gradients)."""
    return _PASSES[mode]


def weight_bytes(model: str) -> int:
    """Bytes of one float32 copy of a model's parameters."""
    return 4 * PARAMETERS[model]


def correlation_bytes(batch: int, crop_size: tuple[int, int]) -> int:
    """Bytes of the all-pairs correlation pyramids of ``batch`` samples: kept, their gradient and the raw product."""
    cells = (crop_size[0] // 8) * (crop_size[1] // 8)
    return int(batch * 4 * (1 + 1 / 4 + 1 / 16 + 1 / 64) * 3 * cells**2)


def estimate_peak_bytes(config: TrainConfig, world_size: int = 1, include_process: bool = True) -> int:
    """Estimated peak memory of one training process of ``config`` (see the module docstring).

    ``world_size`` processes share the global batch; ``include_process`` False leaves out the
    process and its weights (what ``bench/train_memory.py`` compares with).
    """
    batch = max(1, config.batch_size // world_size)
    height, width = config.crop_size
    per_pixel, per_iteration = ACTIVATION_BYTES[config.model]
    activations = batch * height * width * (per_pixel + per_iteration * config.iters)
    step = mode_passes(config.mode) * (activations + correlation_bytes(batch, config.crop_size))
    fixed = PROCESS_BYTES + weight_bytes(config.model) if include_process else 0
    return int(fixed + 3 * weight_bytes(config.model) + STEP_BYTES + step)


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5T"`` or a plain byte count, as bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if match is None:
        raise DflowgenError(f"{BUDGET_VARIABLE}={text!r} is not a size (use e.g. 8G, 512M or a byte count)")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes(device_type: str, device_index: int | None = None) -> int | None:
    """Memory a new run may use: ``$DFLOWGEN_MEMORY_BUDGET`` if set; else free CUDA memory on a CUDA device;
    else the smaller of the kernel's MemAvailable and the cgroup's headroom. None when unknown."""
    budget = os.environ.get(BUDGET_VARIABLE)
    if budget:
        return parse_bytes(budget)
    if device_type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device_index)[0]
    known = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    return min(known) if known else None


def describe(config: TrainConfig) -> str:
    """``raft-small, batch 10 at 368×496, 12 iterations, supervised``."""
    height, width = config.crop_size
    return f"{config.model}, batch {config.batch_size} at {height}×{width}, {config.iters} iterations, {config.mode}"


def recipes_that_fit(mode: str, available: int, world_size: int = 1) -> list[str]:
    """Bundled ``train-*`` recipes of training ``mode`` whose estimate fits in ``available`` bytes."""
    # The bundled files are read here, section [train] only: training sits below the recipes package.
    paths = {path.stem: path for folder in reversed(shipped_dirs("recipes")) if folder.is_dir()
             for path in folder.glob("train-*.toml")}
    fitting = []
    for name in sorted(paths):
        config = from_dict(TrainConfig, tomllib.loads(paths[name].read_text(encoding="utf-8")).get("train", {}),
                           prefix="train")
        if (config.mode == mode and config.model in ACTIVATION_BYTES
                and estimate_peak_bytes(config, world_size) <= available):
            fitting.append(name)
    return fitting


def check_fits(config: TrainConfig, device_type: str, device_index: int | None = None, world_size: int = 1,
               local_processes: int = 1) -> None:
    """Refuse a run whose estimated peak exceeds the memory available to it (``local_processes`` share a
    machine's RAM on the CPU), naming the estimate, the memory and the bundled recipes that fit.

    Raises:
        DflowgenError: the run would not fit.
    """
    available = available_bytes(device_type, device_index)
    # Only RAFT and RAFT-small are calibrated (bench/train_memory.py); other networks are not checked.
    if available is None or config.model not in ACTIVATION_BYTES:
        return
    if device_type != "cuda":
        available //= max(1, local_processes)
    needed = estimate_peak_bytes(config, world_size)
    if needed <= available:
        return
    fitting = recipes_that_fit(config.mode, available, world_size)
    suggestion = f"recipes that fit: {', '.join(fitting)}" if fitting else "no bundled train-* recipe of this mode fits"
    raise DflowgenError(
        f"this training run needs about {needed / _GIB:.1f} GiB at its peak ({describe(config)}) but "
        f"{available / _GIB:.1f} GiB are available on {device_type}; {suggestion}; or lower {option('batch_size')} or "
        f"train.crop_size (set {BUDGET_VARIABLE} to override the available memory)")
