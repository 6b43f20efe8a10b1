"""Training curves of a run folder as a PNG: the loss, the learning rate and the validation EPE against the step."""

from __future__ import annotations

import json
from pathlib import Path

from dflowgen.errors import DflowgenError
from dflowgen.figures import new_figure, save_png
from dflowgen.train.log import LOG_NAME, read_log

CURVES_NAME = "curves.png"


def read_run_log(run_dir: Path) -> list[dict[str, object]]:
    """The records of ``run_dir/log.jsonl``.

    Raises:
        DflowgenError: the folder holds no log, or the log is not JSON lines.
    """
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise DflowgenError(f"{run_dir} holds no training log ({path} does not exist)")
    try:
        records = read_log(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DflowgenError(f"{path} is not a training log (one JSON object per line): {error}") from None
    if not all(isinstance(record, dict) and isinstance(record.get("step"), int) for record in records):
        raise DflowgenError(f"{path} is not a training log: every line must be an object with an integer 'step'")
    return records


def plot_curves(run_dir: Path, path: Path | None = None) -> Path:
    """Draw the run's curves to ``path`` (default ``run_dir/curves.png``) and return it.

    Three panels against the step: the interval-mean training loss; the training EPE (supervised
    modes) with every ``--val`` source's EPE; the learning rate.

    Raises:
        DflowgenError: no log, or a log without a single interval record yet.
    """
    records = read_run_log(run_dir)
    intervals = [record for record in records if "event" not in record]
    if not intervals:
        raise DflowgenError(f"{Path(run_dir) / LOG_NAME} has no logged steps yet")
    validations: dict[str, list[dict[str, object]]] = {}
    for record in records:
        if record.get("event") == "val":
            validations.setdefault(str(record["data"]), []).append(record)

    figure = new_figure(13, 3.8)
    loss_axes, epe_axes, lr_axes = figure.subplots(1, 3)
    steps = [record["step"] for record in intervals]
    loss_axes.plot(steps, [record.get("loss") for record in intervals], color="black")
    loss_axes.set_title("training loss (interval mean)")
    if any(record.get("epe") is not None for record in intervals):
        epe_axes.plot(steps, [record.get("epe") for record in intervals], color="grey", label="training")
    for name, points in validations.items():
        epe_axes.plot([p["step"] for p in points], [p.get("epe") for p in points], marker="o", label=f"val {name}")
    epe_axes.set_title("EPE (px)")
    if epe_axes.get_legend_handles_labels()[0]:
        epe_axes.legend(fontsize=7)
    lr_axes.plot(steps, [record.get("lr") for record in intervals], color="tab:blue")
    lr_axes.set_title("learning rate")
    for axes in (loss_axes, epe_axes, lr_axes):
        axes.set_xlabel("step")
    figure.tight_layout()
    out = Path(path) if path is not None else Path(run_dir) / CURVES_NAME
    try:
        save_png(figure, out)
    except OSError as error:
        raise DflowgenError(f"cannot write {out}: {error.strerror or error}") from None
    return out
