"""Resumable stages of a long experiment (``reproduce``, ``benchmark``): markers, a runner, training to completion.

A stage's marker is ``OUT/stages/<name>.json``, written atomically once the stage's outputs
are complete: ``{"stage", "settings", "result"}``. ``settings`` is everything the outputs depend
on (hashes of the weights they start from, not paths, so a moved folder still counts as done);
``result`` is what later stages and the report read. A stage that finished is skipped, and one
done with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dflowgen.errors import DflowgenError, option
from dflowgen.files import atomic_write_bytes
from dflowgen.fields import flatten_keys
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import TrainConfig
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME, train

STAGES_FOLDER = "stages"


@dataclasses.dataclass(frozen=True)
class ExperimentSummary:
    """What an experiment produced: the table (markdown), every figure, and which stages ran or were skipped."""

    out: Path
    table: str
    results: dict[str, Any]
    stages_run: list[str]
    stages_skipped: list[str]
    seconds: float


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so stored and current settings compare."""
    return json.loads(json.dumps(value))


def digest(value: Any) -> str:
    """A short, stable hash of JSON-able ``value`` (identifies a stage's settings inside another's)."""
    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()[:16]


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first setting that differs, as ``key: old -> new``."""
    old_flat, new_flat = flatten_keys(old), flatten_keys(new)
    for key in sorted(old_flat.keys() | new_flat.keys()):
        if old_flat.get(key) != new_flat.get(key):
            return f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
    return "?"


class StageMarkers:
    """The markers of the reproduction in ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out / STAGES_FOLDER

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def result(self, name: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored result of stage ``name`` if it is done (with these ``settings``), else None.

        A marker made with other settings is an error: the stage's outputs would not match the recipe.
        """
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            marker = json.loads(path.read_text())
            stored = marker["settings"]
            result = marker["result"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DflowgenError(f"stage marker {path} is unreadable ({error}); delete it to redo stage "
                                f"'{name}'") from None
        if stored != plain(settings):
            raise DflowgenError(f"{self.out} holds stage '{name}' done with other settings "
                                f"({first_difference(stored, plain(settings))}); choose another {option('out')}")
        return result

    def finish(self, name: str, settings: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Mark stage ``name`` done with ``result`` (atomically); returns ``result`` as read back later."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = {"stage": name, "settings": plain(settings), "result": plain(result)}
        atomic_write_bytes(self.path(name), (json.dumps(marker, indent=1) + "\n").encode())
        return marker["result"]


class StageRunner:
    """Runs the stages of one experiment in ``out``: numbered progress lines, skipping, timing, results.

    ``total`` is the number of stages announced in the ``[n/total]`` lines; ``echo`` gets one line per stage.
    """

    def __init__(self, out: Path, total: int, echo: Callable[[str], None]) -> None:
        self.out, self.total, self.echo = out, total, echo
        self.markers = StageMarkers(out)
        self.stages_run: list[str] = []
        self.stages_skipped: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}

    def stage(self, name: str, settings: dict[str, Any], what: str,
              work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run stage ``name`` (described by ``what``) unless its marker says it is done; its result either way."""
        number = len(self.stages_run) + len(self.stages_skipped) + 1
        done = self.markers.result(name, settings)
        if done is not None:
            self.stages_skipped.append(name)
            self.echo(f"[{number}/{self.total}] {what}: done earlier, skipped")
        else:
            self.echo(f"[{number}/{self.total}] {what}")
            started = time.perf_counter()
            result = work()
            result["seconds"] = round(time.perf_counter() - started, 1)
            self.stages_run.append(name)
            done = self.markers.finish(name, settings, result)
        self.results[name] = done
        return done

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def finish_training(runner: StageRunner, config: TrainConfig, sources: Sequence[DataSource], run_dir: Path,
                    init: Path | None, *, device: str, quiet: bool, recipe_text: str,
                    frames: Sequence[DataSource] = ()) -> dict[str, Any]:
    """Train (or finish training) the run in ``run_dir``; its folder, checkpoint and last log record.

    An interrupted run continues from its ``last.pth``; a finished one is left as it is.
    """
    last = run_dir / LAST_NAME
    finished = last.is_file() and int(load_checkpoint(last)["step"]) >= config.num_steps
    if not finished:
        train(config, sources, run_dir, frames=frames, init=None if last.is_file() else init, resume=last.is_file(),
              device=device, quiet=quiet, recipe_text=recipe_text)
    records = read_log(run_dir / LOG_NAME)
    return {"folder": runner.relative(run_dir), "checkpoint": runner.relative(last), "steps": config.num_steps,
            "batch_size": config.batch_size, "last_record": records[-1] if records else None}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The step records of a training log (events left out); empty when there is none."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if "event" not in record]
