"""RAFT training, supervised or from unlabelled frames: resumable to the bit, on one process or under torchrun.

One step: the mode's objective (:mod:`dflowgen.train.objective`) computes the loss of the
batch (RAFT's bf16 autocast on CUDA when the recipe asks, never on CPU); the loss is
averaged across processes and — only when it is finite — backpropagated, the gradient norm
clipped, and an AdamW step taken. The OneCycle schedule advances every step, skipped or
not, so the learning rate is a function of the step alone. ``max_nonfinite`` skipped steps
in a row stop the run with a :class:`DflowgenError`; the last checkpoint stays untouched.

Modes (``train.mode``): ``supervised`` (the official recipe, sequence loss on ``--data``),
``self-supervised`` (:mod:`dflowgen.train.selfsup`), ``pseudo-label``
(:mod:`dflowgen.train.pseudo`) and ``distill`` (:mod:`dflowgen.train.distill`), the last
three learning from unlabelled ``frames``. The label-free modes run on one process.

The main process writes ``log.jsonl`` and checkpoints (``step_NNNNNNN.pth`` and
``last.pth``, see :mod:`dflowgen.train.checkpoint`) into the output folder. Because the
data and every random draw of a step are functions of (seed, step) (:mod:`dflowgen.train.data`),
and a checkpoint holds whatever else a mode depends on (the network that made the pseudo
labels, the teacher), a run resumed from a checkpoint ends with the same parameters as one
that was never stopped.
"""

from __future__ import annotations

import os
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
from dflowgen.recipes import flatten_keys, to_dict
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
from dflowgen.train.distill import DistillObjective
from dflowgen.train.distributed import DistContext, init_distributed, mean_across, shutdown_distributed
from dflowgen.train.log import LOG_NAME, METRIC_KEYS, IntervalLog, reset_log, trim_log
from dflowgen.train.memory import check_fits
from dflowgen.train.objective import Objective, frozen_network, network_from_state, network_state
from dflowgen.train.pseudo import PseudoLabelObjective
from dflowgen.train.schedule import make_optimizer, make_scheduler
from dflowgen.train.selfsup import SelfSupervisedObjective
from dflowgen.train.validate import check_validation_data, validate
from dflowgen.weights import resolve_weights

# Settings a resumed run may change: bookkeeping, and the length of the run.
RESUMABLE_FIELDS = BOOKKEEPING_FIELDS | {"num_steps"}


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: steps done, the last checkpoint (written by the main process), skipped steps,
    the last log record, and whether this process is the main one (the one that reports)."""

    step: int
    checkpoint: Path | None
    nonfinite_steps: int
    last_record: dict[str, Any] | None
    is_main: bool = True


@dataclass
class Trainee:
    """A network being trained, its optimiser and schedule, and what the loop calls (itself, or DDP around it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    network: nn.Module

    @classmethod
    def of(cls, model: nn.Module, config: TrainConfig) -> Trainee:
        optimizer = make_optimizer(model, config)
        return cls(model, optimizer, make_scheduler(optimizer, config), model)


def supervised_loss(model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig,
                    device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RAFT's sequence loss of ``model`` on a labelled batch, and its metrics (``epe``, ``1px``, ``3px``, ``5px``)."""
    img1, img2, flow_gt, valid = (batch[key].to(device, non_blocking=True) for key in ("img1", "img2", "flow", "valid"))
    flow_preds = model(img1, img2, iters=config.iters)
    return sequence_loss(flow_preds, flow_gt, valid, gamma=config.gamma, max_flow=config.max_flow)


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                 metrics: dict[str, torch.Tensor], clip: float, context: DistContext = DistContext(),
                 keys: Sequence[str] = METRIC_KEYS) -> dict[str, float] | None:
    """Backpropagate ``loss`` and step ``optimizer`` unless the loss (on any process) or the gradient norm is
    not finite; returns the process-averaged ``keys`` (``loss`` first, then ``metrics``), or None when skipped."""
    stats = mean_across(torch.stack([loss.detach().float(), *(metrics[key].float() for key in keys[1:])]), context)
    if not torch.isfinite(stats[0]):
        return None
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(zip(keys, stats.tolist()))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               config: TrainConfig, device: torch.device, context: DistContext = DistContext()) -> dict[str, float] | None:
    """One supervised optimisation step on ``batch``; returns the process-averaged metrics, or None when skipped.

    ``batch`` holds ``img1``, ``img2`` (B×3×H×W in [0, 255]), ``flow`` (B×2×H×W), ``valid`` (B×H×W).
    A non-finite loss (on any process) or gradient norm leaves the parameters untouched. Mixed
    precision is the model's own setting (bf16 autocast around its convolutions).
    """
    loss, metrics = supervised_loss(model, batch, config, device)
    return apply_update(model, optimizer, loss, metrics, config.clip, context)


class SupervisedObjective(Objective):
    """``--mode supervised``: RAFT's sequence loss against the ground truth of ``--data``."""

    metric_keys = METRIC_KEYS

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return supervised_loss(model, batch, self.config, self.device)


def check_inputs(config: TrainConfig, sources: Sequence[DataSource], frames: Sequence[DataSource],
                 init: str | Path | None, teacher: str | Path | None, resume: bool) -> None:
    """The data and weights a mode needs, as one-line errors that say what to give instead."""
    mode = config.mode
    if mode == "supervised":
        if frames:
            raise DflowgenError("--frames is for the label-free modes (--mode self-supervised, pseudo-label or "
                                "distill); supervised training reads labelled --data")
        if teacher is not None:
            raise DflowgenError("--teacher is used by --mode pseudo-label and distill only")
        return
    if not frames:
        raise DflowgenError(f"--mode {mode} learns from unlabelled frames: give --frames SPEC (e.g. frames:my_video/)")
    for source in frames:
        if len(source.dataset) == 0:
            raise DflowgenError(f"--frames {source.name or '?'} has no frame pairs")
    if sources and mode != "pseudo-label":
        raise DflowgenError(f"--mode {mode} learns from --frames alone; labelled --data is mixed in by "
                            "--mode pseudo-label only")
    if mode == "self-supervised" and teacher is not None:
        raise DflowgenError("--teacher is used by --mode pseudo-label and distill only")
    if mode != "self-supervised" and not resume and init is None and teacher is None:
        raise DflowgenError(f"--mode {mode} needs a teacher: give --teacher CKPT, or --init CKPT "
                            "(the teacher is then the network training starts from)")


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


def _describe_data(sources: Sequence[DataSource]) -> list[tuple[int, int, bool]]:
    return [(len(source.dataset), source.weight, source.sparse) for source in sources]


def check_resumable(state: dict[str, Any], config: TrainConfig, sources: Sequence[DataSource],
                    frames: Sequence[DataSource], path: Path, finished_ok: bool = False) -> None:
    """A resumed run must have the same settings and data as the run that wrote ``path`` (and steps left to do,
    unless ``finished_ok``).

    ``num_steps`` may grow (a finished run is extended; :mod:`dflowgen.train.schedule` says how the
    learning rate continues), never below the steps done. Settings a checkpoint does not record
    (written before they existed) count as their defaults.
    """
    defaults = flatten_keys(to_dict(TrainConfig()))
    stored, current = flatten_keys(state["train_config"]), flatten_keys(to_dict(config))
    changed = [f"{key}: {stored.get(key, defaults.get(key))!r} -> {value!r}" for key, value in current.items()
               if key not in RESUMABLE_FIELDS and stored.get(key, defaults.get(key)) != value]
    if changed:
        raise DflowgenError(f"cannot resume {path} with different settings ({'; '.join(changed)})")
    for kind, described in (("sources", sources), ("frames", frames)):
        stored_data = [(d["size"], d["weight"], d["sparse"]) for d in state["data"].get(kind, [])]
        if stored_data != _describe_data(described):
            option = "--data" if kind == "sources" else "--frames"
            raise DflowgenError(f"cannot resume {path} with different {option}: it was trained on (size, weight, "
                                f"sparse) {stored_data}, now {_describe_data(described)}")
    done = int(state["step"])
    if done > config.num_steps:
        raise DflowgenError(f"{path} has done {done} steps, more than the {config.num_steps} asked for")
    if not finished_ok and done == config.num_steps:
        raise DflowgenError(f"{path} already finished all {config.num_steps} steps; --steps N (more than "
                            f"{done}) extends it")


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
    """RAFT with ``init``'s weights (a file or a weights-store name; else freshly initialised), on ``device``,
    in training mode."""
    if init is not None:
        model = load_raft(resolve_weights(init), model_name=config.model, mixed_precision=_bf16(config, device))
    else:
        model = build_raft(config.model, mixed_precision=_bf16(config, device))
    model.to(device).train()
    if config.freeze_bn:
        model.freeze_bn()
    return model


def _trainable(model: nn.Module, config: TrainConfig) -> nn.Module:
    model.requires_grad_(True).train()
    if config.freeze_bn:
        model.freeze_bn()
    return model


class _FixedTeacherDistill(DistillObjective):
    """Distillation from a frozen teacher, which checkpoints hold (a resumed run needs no ``--teacher``)."""

    def __init__(self, config: TrainConfig, student: nn.Module, teacher: nn.Module, device: torch.device) -> None:
        super().__init__(config, [student, teacher], device)
        self.teacher_state = network_state(teacher)

    def state(self) -> dict[str, Any]:
        return {"teacher": self.teacher_state}


def _setup_mode(config: TrainConfig, trainees: list[Trainee], sources: Sequence[DataSource],
                frames: Sequence[DataSource], init: str | Path | None, teacher: str | Path | None,
                state: dict[str, Any] | None, device: torch.device, progress: bool) -> tuple[Objective, TrainingMix]:
    """The mode's objective and training data; a partner network joins ``trainees`` for back-and-forth distillation.

    The teacher is ``teacher``, else ``init``; a resumed run takes it from the checkpoint ``state``.
    """
    mode, student, bf16 = config.mode, trainees[0].model, _bf16(config, device)
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
    if config.distill.swap_every == 0:
        fixed = network_from_state(state["teacher"], device, bf16).eval() if state is not None else load_teacher()
        return _FixedTeacherDistill(config, student, fixed, device), _frames_mix(config, frames)
    if state is not None:
        partner = Trainee.of(_trainable(network_from_state(state["partner"], device, bf16), config), config)
        partner.optimizer.load_state_dict(state["partner"]["optimizer"])
        partner.scheduler = make_scheduler(partner.optimizer, config, int(state["step"]))
    else:
        partner = Trainee.of(_trainable(load_teacher(), config), config)
    trainees.append(partner)
    return DistillObjective(config, [student, partner.model], device), _frames_mix(config, frames)


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
    val: Sequence[DataSource] = (),
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
        val: labelled data to measure the network on every ``val_every`` steps and after the last
            (``event: "val"`` records in the log, one per source, named by its ``name``); main process only.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; ``config.batch_size`` is the
    global batch and only rank 0 writes files. Only supervised training runs on several processes.

    Example:
        >>> train(TrainConfig(mode="self-supervised", num_steps=100), [], "runs/ss",
        ...       frames=[DataSource(open_spec("frames:video/").dataset)], init="raft-small.pth")  # doctest: +SKIP
    """
    check_inputs(config, sources, frames, init, teacher, resume)
    check_validation_data(val)
    owns_group = not dist.is_initialized()
    context, torch_device = init_distributed(device)
    try:
        if context.distributed and config.mode != "supervised":
            raise DflowgenError(f"--mode {config.mode} runs on one process; start it without torchrun")
        return _train(config, list(sources), list(frames), Path(out_dir), init, teacher, resume, context,
                      torch_device, quiet, recipe_text, list(val))
    finally:
        if owns_group:
            shutdown_distributed()


def _train(config: TrainConfig, sources: list[DataSource], frames: list[DataSource], out_dir: Path,
           init: str | Path | None, teacher: str | Path | None, resume: bool, context: DistContext,
           device: torch.device, quiet: bool, recipe_text: str, val: list[DataSource]) -> TrainResult:
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    check_fits(config, device.type, device.index, context.world_size, local_processes)
    resume_from = _prepare_out_dir(out_dir, resume, context.is_main)
    state = None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        check_resumable(state, config, sources, frames, resume_from)

    _seed_everything(config.seed)
    model = _build_model(config, init if state is None else None, device)
    trainees = [Trainee.of(model, config)]
    show_progress = not quiet and context.is_main
    objective, mix = _setup_mode(config, trainees, sources, frames, init, teacher, state, device, show_progress)

    start_step, nonfinite_total, init_record = 0, 0, str(init) if init is not None else ""
    if state is not None:
        model.load_state_dict(state["model"])
        start_step, nonfinite_total, init_record = int(state["step"]), int(state["nonfinite_steps"]), state["init"]
        trainees[0].optimizer.load_state_dict(state["optimizer"])
        # The rate is a function of (step, num_steps): rebuilt, it also follows an extended num_steps.
        trainees[0].scheduler = make_scheduler(trainees[0].optimizer, config, start_step)
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
        extra: dict[str, Any] = dict(objective.state())
        if len(trainees) > 1:
            partner = trainees[1]
            extra["partner"] = {**network_state(partner.model), "optimizer": partner.optimizer.state_dict(),
                                "scheduler": partner.scheduler.state_dict()}
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
            **extra,
        }

    if context.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        trainees[0].network = DistributedDataParallel(model, device_ids=device_ids)

    step, consecutive_nonfinite, record = start_step, 0, None
    last_checkpoint = resume_from
    progress = tqdm(total=config.num_steps, initial=start_step, desc=f"train ({config.mode})", unit="step",
                    dynamic_ncols=True, disable=not show_progress or not sys.stderr.isatty())
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
                log.add(update)
                progress.update(1)
                consecutive_nonfinite = consecutive_nonfinite + 1 if update is None else 0
                lr = trainees[0].scheduler.get_last_lr()[0]
                if consecutive_nonfinite >= config.max_nonfinite:
                    log.flush(step, lr)
                    raise DflowgenError(
                        f"training stopped at step {step}: {consecutive_nonfinite} non-finite losses or gradients in "
                        f"a row (corrupt data or a learning rate too high?); last good checkpoint: "
                        f"{last_checkpoint or 'none'}")
                if step % config.log_every == 0 or step == config.num_steps:
                    record = log.flush(step, lr) or record
                    if record is not None and record["loss"] is not None:
                        shown = {"loss": f"{record['loss']:.3f}"}
                        if record.get("epe") is not None:
                            shown["epe"] = f"{record['epe']:.3f}"
                        progress.set_postfix(shown)
                event = objective.after_step(step)
                if event is not None:
                    log.note(step, **event)
                if val and context.is_main and (step % config.val_every == 0 or step == config.num_steps):
                    for measured in validate(model, val, config.val_iters, device):
                        log.note(step, "val", **measured)
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
