"""RAFT training, supervised or from unlabelled frames: resumable to the bit, on one process or under torchrun.

One step: the mode's objective (:mod:`dflowgen.train.objective`) computes the loss of the
batch (RAFT's bf16 autocast on CUDA when the recipe asks, never on CPU); the loss is
averaged across processes and — only when it is finite — backpropagated, the gradient norm
clipped, and an AdamW step taken. The OneCycle schedule advances every step, skipped or
not, so the learning rate is a function of the step alone. ``max_nonfinite`` skipped steps
in a row stop the run with a :class:`DflowgenError`; the last checkpoint stays untouched.

Modes (``train.mode``): ``supervised`` (the official recipe, sequence loss on ``--data``),
``self-supervised`` (:mod:`dflowgen.train.labelfree.self_supervised`), ``pseudo-label``
(:mod:`dflowgen.train.labelfree.pseudo_label`) and ``distill`` (:mod:`dflowgen.train.labelfree.distill`), the last
three learning from unlabelled ``frames``. The label-free modes run on one process.

Around the steps, hooks (:mod:`dflowgen.train.hooks`) keep the log, the progress bar, the
validation records and the checkpoints; callers add their own with ``hooks``.
The main process writes ``log.jsonl`` and checkpoints (``step_NNNNNNN.pth`` and
``last.pth``, see :mod:`dflowgen.train.checkpoint`) into the output folder. Because the
data and every random draw of a step are functions of (seed, step) (:mod:`dflowgen.train.data`),
and a checkpoint holds whatever else a mode depends on (the network that made the pseudo
labels, the teacher), a run resumed from a checkpoint ends with the same parameters as one
that was never stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dflowgen import __version__
from dflowgen.errors import DflowgenError, option
from dflowgen.fields import to_dict
from dflowgen.files import removed_on_error
from dflowgen.models.registry import build_model, load_model
from dflowgen.seeding import sample_generator
from dflowgen.train.checkpoint import (
    LAST_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from dflowgen.train.config import TrainConfig
from dflowgen.train.inputs import check_inputs, check_resumable, prepare_out_dir
from dflowgen.train.data import DataSource, StepBatches, TrainingMix
from dflowgen.train.labelfree.distill import DistillObjective
from dflowgen.train.distributed import DistContext, init_distributed, shutdown_distributed
from dflowgen.train.log import LOG_NAME, IntervalLog, reset_log, trim_log
from dflowgen.train.memory import check_fits
from dflowgen.train.hooks import CheckpointHook, LogHook, ProgressHook, TrainHook, ValidationHook
from dflowgen.train.objective import Objective, Trainee, frozen_network, network_state
from dflowgen.train.labelfree.pseudo_label import PseudoLabelObjective
from dflowgen.train.supervised import SupervisedObjective, apply_update
from dflowgen.train.labelfree.self_supervised import SelfSupervisedObjective
from dflowgen.weights import resolve_weights


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: steps done, the last checkpoint (written by the main process), skipped steps,
    the last log record, and whether this process is the main one (the one that reports)."""

    step: int
    checkpoint: Path | None
    nonfinite_steps: int
    last_record: dict[str, Any] | None
    is_main: bool = True


def _user_message(error: DflowgenError) -> str:
    """The user's message of an error re-raised from a DataLoader worker (which wraps it in a traceback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].removeprefix(f"{DflowgenError.__module__}.{DflowgenError.__name__}: ") if lines else ""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _bf16(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast only on CUDA: on CPU it is slower and changes results for nothing."""
    return config.mixed_precision and device.type == "cuda"


def _build_model(config: TrainConfig, init: str | Path | None, device: torch.device) -> nn.Module:
    """The recipe's network with ``init``'s weights (a file or a weights-store name; else freshly initialised),
    on ``device``, in training mode."""
    if init is not None:
        model = load_model(init, model_name=config.model, mixed_precision=_bf16(config, device))
    else:
        model = build_model(config.model, mixed_precision=_bf16(config, device))
    model.to(device).train()
    if config.freeze_bn:
        model.freeze_bn()
    return model


def _setup_mode(config: TrainConfig, student: nn.Module, sources: Sequence[DataSource],
                frames: Sequence[DataSource], init: str | Path | None, teacher: str | Path | None,
                state: dict[str, Any] | None, device: torch.device, progress: bool) -> tuple[Objective, TrainingMix]:
    """The mode's objective (owning any teacher or partner network) and its training data.

    The teacher is ``teacher``, else ``init``; a resumed run takes it from the checkpoint ``state``.
    """
    mode, bf16 = config.mode, _bf16(config, device)
    if mode == "supervised":
        return SupervisedObjective(config, device), TrainingMix(sources, config.crop_size, config.augment, config.seed)
    if mode == "self-supervised":
        return SelfSupervisedObjective(config, device), _frames_mix(config, frames)

    def load_teacher() -> nn.Module:
        return frozen_network(resolve_weights(teacher if teacher is not None else init), device, bf16)

    if mode == "pseudo-label":
        labeller = state["teacher"] if state is not None else network_state(load_teacher())
        objective = PseudoLabelObjective(config, student, frames, labeller, device, progress)
        return objective, TrainingMix([*objective.sources, *sources], config.crop_size, config.augment, config.seed)
    return DistillObjective.create(config, student, load_teacher, state, device, bf16), _frames_mix(config, frames)


def _frames_mix(config: TrainConfig, frames: Sequence[DataSource]) -> TrainingMix:
    """The unlabelled frames as training data (geometric augmentation only)."""
    return TrainingMix(frames, config.crop_size, config.augment, config.seed, unlabelled=True)


def train(
    config: TrainConfig,
    sources: Sequence[DataSource],
    out_dir: str | Path,
    *,
    frames: Sequence[DataSource] = (),
    init: str | Path | None = None,
    teacher: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    quiet: bool = False,
    recipe_text: str = "",
    validation: Callable[[nn.Module, torch.device], list[dict[str, Any]]] | None = None,
    hooks: Sequence[TrainHook] = (),
) -> TrainResult:
    """Train RAFT as ``config`` says (``config.mode``), writing checkpoints and the log into ``out_dir``.

    Args:
        config: the ``[train]`` section of a recipe.
        sources: labelled data (see :class:`DataSource`; the CLI builds them from ``--data`` with
            ``open_spec``): the training set of ``supervised``, mixed with the pseudo-labelled frames
            in ``pseudo-label``; the other modes take none.
        out_dir: folder for ``log.jsonl`` and checkpoints; must not hold a run unless ``resume``.
        frames: unlabelled data for the label-free modes (``--frames``; any labels are ignored).
        init: weights to start from (a file or a weights-store name: an official release or a dflowgen
            checkpoint); ignored on resume.
        teacher: the teacher of ``pseudo-label`` and ``distill`` (default: ``init``); ignored on resume,
            where the checkpoint holds it.
        resume: continue from ``out_dir/last.pth`` (same config and data required).
        device: "cpu", "cuda", "cuda:N"; None picks CUDA when available.
        quiet: no progress bar.
        recipe_text: the resolved recipe as TOML, stored in every checkpoint.
        validation: measures the network every ``val_every`` steps and after the last (e.g.
            :class:`dflowgen.evaluate.Validation`); its records go to the log as ``event: "val"``;
            main process only.
        hooks: more :class:`~dflowgen.train.hooks.TrainHook` s, called after every step (main process only),
            after the log, validation and checkpoint of the step.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; ``config.batch_size`` is the
    global batch and only rank 0 writes files. Only supervised training runs on several processes.

    Example:
        >>> train(TrainConfig(mode="self-supervised", num_steps=100), [], "runs/ss",
        ...       frames=[DataSource(open_spec("frames:video/").dataset)], init="raft-small.pth")  # doctest: +SKIP
    """
    check_inputs(config, sources, frames, init, teacher, resume)
    owns_group = not dist.is_initialized()
    context, torch_device = init_distributed(device)
    try:
        if context.distributed and config.mode != "supervised":
            raise DflowgenError(f"{option('mode', config.mode)} runs on one process; start it without torchrun")
        out_dir = Path(out_dir)
        # A run refused after its folder was made (a bad --init or --teacher, say) leaves no folder behind;
        # an interrupted or crashed run keeps its log.
        cleanup = removed_on_error(out_dir, (DflowgenError,), keep=lambda: (out_dir / LAST_NAME).exists())
        with cleanup if context.is_main else contextlib.nullcontext():
            return _train(config, list(sources), list(frames), out_dir, init, teacher, resume, context,
                          torch_device, quiet, recipe_text, validation, list(hooks))
    finally:
        if owns_group:
            shutdown_distributed()


def _train(config: TrainConfig, sources: list[DataSource], frames: list[DataSource], out_dir: Path,
           init: str | Path | None, teacher: str | Path | None, resume: bool, context: DistContext,
           device: torch.device, quiet: bool, recipe_text: str,
           validation: Callable[[nn.Module, torch.device], list[dict[str, Any]]] | None,
           hooks: list[TrainHook]) -> TrainResult:
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    check_fits(config, device.type, device.index, context.world_size, local_processes)
    resume_from = prepare_out_dir(out_dir, resume, context.is_main)
    state = None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        check_resumable(state, config, sources, frames, resume_from)

    _seed_everything(config.seed)
    model = _build_model(config, init if state is None else None, device)
    show_progress = not quiet and context.is_main
    objective, mix = _setup_mode(config, model, sources, frames, init, teacher, state, device, show_progress)
    trainees = [Trainee.of(model, config), *objective.partners]

    start_step, nonfinite_total, init_record = 0, 0, str(init) if init is not None else ""
    if state is not None:
        model.load_state_dict(state["model"])
        start_step, nonfinite_total, init_record = int(state["step"]), int(state["nonfinite_steps"]), state["init"]
        trainees[0].restore(state, config, start_step)
        if context.is_main:
            trim_log(out_dir / LOG_NAME, start_step)
    elif context.is_main:
        reset_log(out_dir / LOG_NAME)
    log = IntervalLog(out_dir / LOG_NAME if context.is_main else None, nonfinite_total, objective.metric_keys)
    if state is not None and state["train_config"].get("num_steps") != config.num_steps:
        log.note(start_step, "extend", from_steps=state["train_config"]["num_steps"], to_steps=config.num_steps)
    event = objective.prepare(resumed=state is not None)
    if event is not None:
        log.note(start_step, **event)
    if state is not None:
        restore_rng_state(state["rng"])

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "model_name": config.model,
            "model": model.state_dict(),
            "step": step,
            "optimizer": trainees[0].optimizer.state_dict(),
            "scheduler": trainees[0].scheduler.state_dict(),
            "rng": capture_rng_state(),
            "data": {"seed": config.seed, "stream_position": step * config.batch_size, "num_items": len(mix),
                     "sources": [source.describe() for source in sources],
                     "frames": [source.describe() for source in frames]},
            "train_config": to_dict(config),
            "mode": config.mode,
            "recipe": recipe_text,
            "nonfinite_steps": log.total_nonfinite,
            "init": init_record,
            "dflowgen_version": __version__,
            **objective.state(),
        }

    if context.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        trainees[0].network = DistributedDataParallel(model, device_ids=device_ids)

    progress = ProgressHook(config.num_steps, start_step, f"train ({config.mode})", show_progress)
    logger = LogHook(log, config.log_every, config.num_steps, progress)
    checkpoints = CheckpointHook(checkpoint_state, out_dir, config.checkpoint_every, config.num_steps,
                                 writes=context.is_main, last=resume_from)
    every_step: list[TrainHook] = [logger, progress, _ObjectiveEvents(objective, log)]
    if validation is not None and context.is_main:
        every_step.append(ValidationHook(validation, model, device, config.val_every, config.num_steps, log))
    every_step += [checkpoints, *(hooks if context.is_main else ())]
    step = _run_steps(config, trainees, objective, mix, start_step, every_step, context, device, log, checkpoints)
    return TrainResult(step=step, checkpoint=checkpoints.last, nonfinite_steps=log.total_nonfinite,
                       last_record=logger.record, is_main=context.is_main)


class _ObjectiveEvents(TrainHook):
    """The objective's work after a step (a pseudo-label refresh, say), with its event in the log."""

    def __init__(self, objective: Objective, log: IntervalLog) -> None:
        self.objective, self.log = objective, log

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        event = self.objective.after_step(step)
        if event is not None:
            self.log.note(step, **event)


def _run_steps(config: TrainConfig, trainees: list[Trainee], objective: Objective, mix: TrainingMix, step: int,
               hooks: list[TrainHook], context: DistContext, device: torch.device, log: IntervalLog,
               checkpoints: CheckpointHook) -> int:
    """Steps from ``step`` to ``config.num_steps``, each followed by ``hooks``; the step reached.

    ``max_nonfinite`` skipped steps in a row stop the run (the log records the stop; no checkpoint is written).
    """
    consecutive_nonfinite = 0
    try:
        while step < config.num_steps:
            # A new loader whenever the data change (refreshed pseudo labels): workers hold copies of the mix.
            batches = StepBatches(len(mix), config.seed, config.batch_size, step,
                                  objective.segment_end(step, config.num_steps), context.rank, context.world_size)
            loader = DataLoader(mix, batch_sampler=batches, num_workers=config.num_workers,
                                pin_memory=device.type == "cuda",
                                generator=sample_generator(config.seed, step, "loader"))
            for batch in loader:
                trainee = trainees[objective.trainee(step)]
                loss, metrics = objective.loss(trainee.network, batch, step)
                update = apply_update(trainee.model, trainee.optimizer, loss, metrics, config.clip, context,
                                      objective.metric_keys)
                del loss, metrics
                with warnings.catch_warnings():
                    # A skipped first update makes torch warn that the schedule stepped before the optimiser;
                    # that is intended: the learning rate is a function of the step.
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    for each in trainees:
                        each.scheduler.step()
                step += 1
                lr = trainees[0].scheduler.get_last_lr()[0]
                consecutive_nonfinite = consecutive_nonfinite + 1 if update is None else 0
                if consecutive_nonfinite >= config.max_nonfinite:
                    log.add(update)
                    log.flush(step, lr)
                    raise DflowgenError(
                        f"training stopped at step {step}: {consecutive_nonfinite} non-finite losses or gradients in "
                        f"a row (corrupt data or a learning rate too high?); last good checkpoint: "
                        f"{checkpoints.last or 'none'}")
                for hook in hooks:
                    hook.after_step(step, update, lr)
    except DflowgenError as error:
        raise DflowgenError(_user_message(error)) from None
    finally:
        for hook in hooks:
            hook.close()
    return step
