"""The training log: one JSON object per line, averaged over each logging interval.

Each record has ``step`` (steps done), the mode's metrics (supervised: ``loss``, ``epe``,
``1px``, ``3px``, ``5px``; the label-free modes name theirs in their objectives) as means
over the interval's finite steps (null when it had none; percentages for the rates),
``lr`` (after the step), ``time`` (seconds per step over the interval), ``elapsed``
(seconds since this process started training), ``nonfinite`` (steps skipped in the
interval) and ``nonfinite_total``. Events between steps (a pseudo-label refresh) are
records with ``step`` and an ``event`` name instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dflowgen.files import atomic_write_bytes

METRIC_KEYS = ("loss", "epe", "1px", "3px", "5px")


def trim_log(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written by a run that died before its next checkpoint), atomically."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


class IntervalLog:
    """Accumulates per-step metrics and appends their interval means to a JSONL file.

    ``path`` None keeps the averages without writing (processes other than the main one);
    ``keys`` are the metrics every finite step reports.
    """

    def __init__(self, path: Path | None, total_nonfinite: int = 0, keys: tuple[str, ...] = METRIC_KEYS) -> None:
        self.path = path
        self.keys = keys
        self.total_nonfinite = total_nonfinite
        self.start = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.finite_steps = 0
        self.nonfinite = 0
        self.steps = 0
        self.interval_start = time.perf_counter()

    def add(self, metrics: dict[str, float] | None) -> None:
        """Record one step: its metrics, or None when it was skipped as non-finite."""
        self.steps += 1
        if metrics is None:
            self.nonfinite += 1
            self.total_nonfinite += 1
            return
        self.finite_steps += 1
        for key in self.keys:
            self.sums[key] += metrics[key]

    def flush(self, step: int, lr: float) -> dict[str, float | None] | None:
        """Write (and return) the record of the steps since the last flush; None when there were none."""
        if self.steps == 0:
            return None
        now = time.perf_counter()
        record: dict[str, float | None] = {"step": step}
        for key in self.keys:
            record[key] = self.sums[key] / self.finite_steps if self.finite_steps else None
        record.update(lr=lr, time=(now - self.interval_start) / self.steps, elapsed=now - self.start,
                      nonfinite=self.nonfinite, nonfinite_total=self.total_nonfinite)
        self._write(record)
        self._reset()
        return record

    def note(self, step: int, event: str, **fields: object) -> None:
        """Write an event record ``{"step", "event", **fields}`` now (outside the interval averages)."""
        self._write({"step": step, "event": event, **fields})

    def _write(self, record: dict[str, object]) -> None:
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
