"""What the training loop does around its steps, as hooks: the log, progress, validation and checkpoints.

The loop (:func:`dflowgen.train.trainer.train`) takes a step, then calls every hook's
``after_step`` in order; a hook that writes does so on the main process only (the loop gives
the others none). Callers add their own hooks with ``train(..., hooks=[...])``; they run
after the built-in ones, so they see the step's log record and checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dflowgen.train.checkpoint import save_checkpoint, step_name
from dflowgen.train.log import IntervalLog


class TrainHook:
    """Called after every step; the base does nothing."""

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        """``step`` steps are done; ``update`` holds the step's metrics (None: skipped as non-finite); ``lr`` is the
        rate of the next step."""

    def close(self) -> None:
        """The loop has ended (finished, stopped or failed)."""


class LogHook(TrainHook):
    """Averages the metrics over ``log_every`` steps into ``log`` and shows the last record on ``progress``."""

    def __init__(self, log: IntervalLog, log_every: int, num_steps: int, progress: ProgressHook) -> None:
        self.log, self.log_every, self.num_steps, self.progress = log, log_every, num_steps, progress
        self.record: dict[str, Any] | None = None

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        self.log.add(update)
        if step % self.log_every == 0 or step == self.num_steps:
            self.record = self.log.flush(step, lr) or self.record
            if self.record is not None and self.record["loss"] is not None:
                shown = {"loss": f"{self.record['loss']:.3f}"}
                if self.record.get("epe") is not None:
                    shown["epe"] = f"{self.record['epe']:.3f}"
                self.progress.show(shown)


class ProgressHook(TrainHook):
    """A progress bar of the steps (on a terminal, and only when ``enabled``)."""

    def __init__(self, num_steps: int, start_step: int, desc: str, enabled: bool) -> None:
        self.bar = tqdm(total=num_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True,
                        disable=not enabled or not sys.stderr.isatty())

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        self.bar.update(1)

    def show(self, fields: dict[str, str]) -> None:
        self.bar.set_postfix(fields)

    def close(self) -> None:
        self.bar.close()


class ValidationHook(TrainHook):
    """Measures ``model`` with ``validation`` every ``every`` steps and after the last; records go to ``log``."""

    def __init__(self, validation: Callable[[nn.Module, torch.device], list[dict[str, Any]]], model: nn.Module,
                 device: torch.device, every: int, num_steps: int, log: IntervalLog) -> None:
        self.validation, self.model, self.device = validation, model, device
        self.every, self.num_steps, self.log = every, num_steps, log

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        if step % self.every == 0 or step == self.num_steps:
            for measured in self.validation(self.model, self.device):
                self.log.note(step, "val", **measured)


class CheckpointHook(TrainHook):
    """Writes ``state(step)`` into ``out_dir`` every ``every`` steps and after the last (when ``writes``);
    ``last`` is the newest checkpoint of the run on every process."""

    def __init__(self, state: Callable[[int], dict[str, Any]], out_dir: Path, every: int, num_steps: int,
                 writes: bool, last: Path | None) -> None:
        self.state, self.out_dir, self.every, self.num_steps, self.writes = state, out_dir, every, num_steps, writes
        self.last = last

    def after_step(self, step: int, update: dict[str, float] | None, lr: float) -> None:
        if step % self.every == 0 or step == self.num_steps:
            if self.writes:
                save_checkpoint(self.state(step), self.out_dir)
            self.last = self.out_dir / step_name(step)
