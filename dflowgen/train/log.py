"""The training log: one JSON object per line, averaged over each logging interval.

Each record has ``step`` (steps done), the mode's metrics (supervised: ``loss``, ``epe``,
``1px``, ``3px``, ``5px``; the label-free modes name theirs in their objectives) as means
over the interval's finite steps (null when it had none; percentages for the rates),
``lr`` (after the step), ``time`` (seconds per step over the interval), ``elapsed``
(seconds since this process started training), ``nonfinite`` (steps skipped in the
interval) and ``nonfinite_total``. Events between steps (a pseudo-label refresh, a
validation) are records with ``step`` and an ``event`` name instead. Every record also has
``wall_time`` (seconds since the epoch).

The same figures go to a TensorBoard event file beside the log (:data:`EVENTS_NAME`,
:mod:`dflowgen.train.tfevents`): interval means as ``train/<key>``, validations as
``val/<data>/<metric>``. The JSONL log is the source of truth: when a resumed run trims it,
the event file is rewritten from it, so both always hold the same steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dflowgen.files import atomic_write_bytes
from dflowgen.train.tfevents import file_header, scalar_record

LOG_NAME = "log.jsonl"
METRIC_KEYS = ("loss", "epe", "1px", "3px", "5px")
EVENTS_NAME = "events.out.tfevents.dflowgen"
# Fields of a record that are not curves.
_NOT_SCALARS = frozenset({"step", "event", "data", "wall_time", "pairs", "pixels"})


def events_path(log_path: Path) -> Path:
    """The TensorBoard event file that mirrors the log at ``log_path``."""
    return log_path.with_name(EVENTS_NAME)


def record_scalars(record: dict[str, object]) -> dict[str, float]:
    """The TensorBoard scalars of a log record: ``train/<key>`` of an interval, ``val/<data>/<key>`` of a
    validation, none for other events."""
    event = record.get("event")
    if event is None:
        prefix = "train/"
    elif event == "val":
        prefix = f"val/{record['data']}/"
    else:
        return {}
    return {prefix + key: float(value) for key, value in record.items()
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def _event_bytes(record: dict[str, object]) -> bytes:
    scalars = record_scalars(record)
    return scalar_record(float(record.get("wall_time", 0.0)), int(record["step"]), scalars) if scalars else b""


def read_log(path: Path) -> list[dict[str, object]]:
    """The records of a JSONL log, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def reset_log(path: Path) -> None:
    """Remove the log at ``path`` and its event file (a run that starts afresh)."""
    path.unlink(missing_ok=True)
    events_path(path).unlink(missing_ok=True)


def trim_log(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written by a run that died before its next checkpoint), atomically,
    and rewrite the event file from what is kept."""
    if not path.is_file():
        return
    kept = [record for record in read_log(path) if record["step"] <= last_step]
    atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in kept).encode())
    start = kept[0].get("wall_time", 0.0) if kept else time.time()
    atomic_write_bytes(events_path(path), file_header(float(start)) + b"".join(map(_event_bytes, kept)))


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
        if self.path is None:
            return
        record["wall_time"] = time.time()
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        events = events_path(self.path)
        header = b"" if events.exists() else file_header(record["wall_time"])
        with events.open("ab") as handle:
            handle.write(header + _event_bytes(record))
