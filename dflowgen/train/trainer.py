"""Supervised RAFT training: the official recipe, resumable to the bit, on one process or under torchrun.

One step: forward the batch (RAFT's bf16 autocast on CUDA when the recipe asks, never on
CPU), sequence loss, average the loss across processes, and — only when it is finite —
backward, clip the gradient norm, AdamW step. The OneCycle schedule advances every step, skipped or not, so
the learning rate is a function of the step alone. ``max_nonfinite`` skipped steps in a
row stop the run with a :class:`DflowgenError`; the last checkpoint stays untouched.

The main process writes ``log.jsonl`` and checkpoints (``step_NNNNNNN.pth`` and
``last.pth``, see :mod:`dflowgen.train.checkpoint`) into the output folder. Because the
data of every step is a function of (seed, step) (:mod:`dflowgen.train.data`), a run
resumed from a checkpoint ends with the same parameters as one that was never stopped.
"""

from __future__ import annotations

import random
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dflowgen import __version__
from dflowgen.errors import DflowgenError
from dflowgen.losses.sequence import sequence_loss
from dflowgen.models.raft import build_raft, load_raft
from dflowgen.recipes import to_dict
from dflowgen.seeding import sample_generator
from dflowgen.train.checkpoint import (
    LAST_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    step_name,
)
from dflowgen.train.config import BOOKKEEPING_FIELDS, TrainConfig
from dflowgen.train.data import DataSource, StepBatches, TrainingMix
from dflowgen.train.distributed import DistContext, init_distributed, mean_across, shutdown_distributed
from dflowgen.train.log import METRIC_KEYS, IntervalLog, trim_log
from dflowgen.train.schedule import make_optimizer, make_scheduler

LOG_NAME = "log.jsonl"


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: steps done, the last checkpoint (written by the main process), skipped steps,
    the last log record, and whether this process is the main one (the one that reports)."""

    step: int
    checkpoint: Path | None
    nonfinite_steps: int
    last_record: dict[str, Any] | None
    is_main: bool = True


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               config: TrainConfig, device: torch.device, context: DistContext = DistContext()) -> dict[str, float] | None:
    """One optimisation step on ``batch``; returns the process-averaged metrics, or None when skipped.

    ``batch`` holds ``img1``, ``img2`` (B×3×H×W in [0, 255]), ``flow`` (B×2×H×W), ``valid`` (B×H×W).
    A non-finite loss (on any process) or gradient norm leaves the parameters untouched. Mixed
    precision is the model's own setting (bf16 autocast around its convolutions).
    """
    img1, img2, flow_gt, valid = (batch[key].to(device, non_blocking=True) for key in ("img1", "img2", "flow", "valid"))
    flow_preds = model(img1, img2, iters=config.iters)
    loss, metrics = sequence_loss(flow_preds, flow_gt, valid, gamma=config.gamma, max_flow=config.max_flow)
    stats = mean_across(torch.stack([loss.detach(), *metrics.values()]), context)
    if not torch.isfinite(stats[0]):
        return None
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(zip(METRIC_KEYS, stats.tolist()))


def _prepare_out_dir(out_dir: Path, resume: bool, is_main: bool) -> Path | None:
    """Check (and on the main process create) the output folder; the checkpoint to resume from, if any."""
    last = out_dir / LAST_NAME
    if resume:
        if not last.is_file():
            raise DflowgenError(f"nothing to resume: {last} does not exist")
        return last
    if last.exists():
        raise DflowgenError(f"{out_dir} already holds a training run ({last}); pass --resume to continue it "
                            "or choose another --out")
    if is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out_dir):
                pass
        except OSError as error:
            raise DflowgenError(f"cannot write to output folder {out_dir}: {error.strerror or error}") from None
    return None


def _check_resumable(state: dict[str, Any], config: TrainConfig, sources: Sequence[DataSource], path: Path) -> None:
    """A resumed run must have the same settings and data as the run that wrote ``path``."""
    stored, current = state["train_config"], to_dict(config)
    changed = [f"{key}: {stored.get(key)!r} -> {value!r}" for key, value in current.items()
               if key not in BOOKKEEPING_FIELDS and stored.get(key) != value]
    if changed:
        raise DflowgenError(f"cannot resume {path} with different settings ({'; '.join(changed)})")
    stored_data = [(d["size"], d["weight"], d["sparse"]) for d in state["data"]["sources"]]
    current_data = [(len(s.dataset), s.weight, s.sparse) for s in sources]
    if stored_data != current_data:
        raise DflowgenError(f"cannot resume {path} with different data: it was trained on (size, weight, sparse) "
                            f"{stored_data}, now {current_data}")


def _user_message(error: DflowgenError) -> str:
    """The user's message of an error re-raised from a DataLoader worker (which wraps it in a traceback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].removeprefix(f"{DflowgenError.__module__}.{DflowgenError.__name__}: ") if lines else ""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_model(config: TrainConfig, init: str | Path | None, device: torch.device) -> nn.Module:
    """RAFT with ``init``'s weights (else freshly initialised), on ``device``, in training mode.

    bf16 autocast only on CUDA: on CPU it is slower and changes results for nothing.
    """
    bf16 = config.mixed_precision and device.type == "cuda"
    if init is not None:
        model = load_raft(init, model_name=config.model, mixed_precision=bf16)
    else:
        model = build_raft(config.model, mixed_precision=bf16)
    model.to(device).train()
    if config.freeze_bn:
        model.freeze_bn()
    return model


def train(
    config: TrainConfig,
    sources: Sequence[DataSource],
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    quiet: bool = False,
    recipe_text: str = "",
) -> TrainResult:
    """Train RAFT on ``sources`` as ``config`` says, writing checkpoints and the log into ``out_dir``.

    Args:
        config: the ``[train]`` section of a recipe.
        sources: the data mix (see :class:`DataSource`; the CLI builds them with ``open_spec``).
        out_dir: folder for ``log.jsonl`` and checkpoints; must not hold a run unless ``resume``.
        init: weights to start from (an official release or a dflowgen checkpoint); ignored on resume.
        resume: continue from ``out_dir/last.pth`` (same config and data required).
        device: "cpu", "cuda", "cuda:N"; None picks CUDA when available.
        quiet: no progress bar.
        recipe_text: the resolved recipe as TOML, stored in every checkpoint.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; ``config.batch_size`` is the
    global batch and only rank 0 writes files.
    """
    owns_group = not dist.is_initialized()
    context, torch_device = init_distributed(device)
    try:
        return _train(config, list(sources), Path(out_dir), init, resume, context, torch_device, quiet, recipe_text)
    finally:
        if owns_group:
            shutdown_distributed()


def _train(config: TrainConfig, sources: list[DataSource], out_dir: Path, init: str | Path | None, resume: bool,
           context: DistContext, device: torch.device, quiet: bool, recipe_text: str) -> TrainResult:
    resume_from = _prepare_out_dir(out_dir, resume, context.is_main)
    mix = TrainingMix(sources, config.crop_size, config.augment, config.seed)

    _seed_everything(config.seed)
    model = _build_model(config, init if resume_from is None else None, device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)

    start_step, nonfinite_total, init_record = 0, 0, str(init) if init is not None else ""
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        _check_resumable(state, config, sources, resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        start_step, nonfinite_total, init_record = int(state["step"]), int(state["nonfinite_steps"]), state["init"]
        if start_step >= config.num_steps:
            raise DflowgenError(f"{resume_from} already finished all {config.num_steps} steps")
        if context.is_main:
            trim_log(out_dir / LOG_NAME, start_step)
    elif context.is_main:
        (out_dir / LOG_NAME).unlink(missing_ok=True)
    log = IntervalLog(out_dir / LOG_NAME if context.is_main else None, nonfinite_total)

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "model_name": config.model,
            "model": model.state_dict(),
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
            "data": {"seed": config.seed, "stream_position": step * config.batch_size, "num_items": len(mix),
                     "sources": [source.describe() for source in sources]},
            "train_config": to_dict(config),
            "recipe": recipe_text,
            "nonfinite_steps": log.total_nonfinite,
            "init": init_record,
            "dflowgen_version": __version__,
        }

    network = model
    if context.distributed:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = StepBatches(len(mix), config.seed, config.batch_size, start_step, config.num_steps,
                          context.rank, context.world_size)
    loader = DataLoader(mix, batch_sampler=batches, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda",
                        generator=sample_generator(config.seed, start_step, "loader"))

    step, consecutive_nonfinite, record = start_step, 0, None
    last_checkpoint = resume_from
    progress = tqdm(total=config.num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                    disable=quiet or not context.is_main or not sys.stderr.isatty())
    try:
        for batch in loader:
            metrics = train_step(network, optimizer, batch, config, device, context)
            with warnings.catch_warnings():
                # A skipped first update makes torch warn that the schedule stepped before the optimiser;
                # that is intended: the learning rate is a function of the step.
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                scheduler.step()
            step += 1
            log.add(metrics)
            progress.update(1)
            consecutive_nonfinite = consecutive_nonfinite + 1 if metrics is None else 0
            if consecutive_nonfinite >= config.max_nonfinite:
                log.flush(step, scheduler.get_last_lr()[0])
                raise DflowgenError(
                    f"training stopped at step {step}: {consecutive_nonfinite} non-finite losses or gradients in a "
                    f"row (corrupt data or a learning rate too high?); last good checkpoint: {last_checkpoint or 'none'}")
            if step % config.log_every == 0 or step == config.num_steps:
                record = log.flush(step, scheduler.get_last_lr()[0]) or record
                if record is not None and record["loss"] is not None:
                    progress.set_postfix(loss=f"{record['loss']:.3f}", epe=f"{record['epe']:.3f}")
            if step % config.checkpoint_every == 0 or step == config.num_steps:
                if context.is_main:
                    save_checkpoint(checkpoint_state(step), out_dir)
                last_checkpoint = out_dir / step_name(step)
    except DflowgenError as error:
        raise DflowgenError(_user_message(error)) from None
    finally:
        progress.close()
    return TrainResult(step=step, checkpoint=last_checkpoint, nonfinite_steps=log.total_nonfinite, last_record=record,
                       is_main=context.is_main)
