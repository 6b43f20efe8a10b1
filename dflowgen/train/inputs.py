"""Before a training run starts: the inputs a mode needs, the output folder, and whether a checkpoint may be resumed.

Every check here runs before any network is built or any step taken, so a bad input is a
one-line error and nothing is left behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dflowgen.errors import DflowgenError, option
from dflowgen.fields import flatten_keys, to_dict
from dflowgen.models.registry import FLOWNET_NAMES
from dflowgen.train.checkpoint import LAST_NAME
from dflowgen.train.config import RESUMABLE_FIELDS, TrainConfig
from dflowgen.train.data import DataSource


def check_inputs(config: TrainConfig, sources: Sequence[DataSource], frames: Sequence[DataSource],
                 init: str | Path | None, teacher: str | Path | None, resume: bool) -> None:
    """The data and weights a mode needs, as one-line errors that say what to give instead."""
    mode = config.mode
    if mode != "supervised" and config.model in FLOWNET_NAMES:
        raise DflowgenError(f"{option('mode', mode)} trains RAFT only; train {config.model} with {option('mode', 'supervised')}")
    if mode == "supervised":
        if frames:
            raise DflowgenError(f"{option('frames')} is for the label-free modes ({option('mode')} self-supervised, pseudo-label or "
                                f"distill); supervised training reads labelled {option('sources', flag='--data')}")
        if teacher is not None:
            raise DflowgenError(f"{option('teacher')} is used by {option('mode')} pseudo-label and distill only")
        return
    if not frames:
        raise DflowgenError(f"{option('mode', mode)} learns from unlabelled frames: give {option('frames', 'SPEC')} (e.g. frames:my_video/)")
    for source in frames:
        if len(source.dataset) == 0:
            raise DflowgenError(f"{option('frames', source.name or '?')} has no frame pairs")
    if sources and mode != "pseudo-label":
        raise DflowgenError(f"{option('mode', mode)} learns from {option('frames')} alone; labelled {option('sources', flag='--data')} "
                            f"is mixed in by {option('mode', 'pseudo-label')} only")
    if mode == "self-supervised" and teacher is not None:
        raise DflowgenError(f"{option('teacher')} is used by {option('mode')} pseudo-label and distill only")
    if mode != "self-supervised" and not resume and init is None and teacher is None:
        raise DflowgenError(f"{option('mode', mode)} needs a teacher: give {option('teacher', 'CKPT')}, or {option('init', 'CKPT')} "
                            "(the teacher is then the network training starts from)")


def prepare_out_dir(out_dir: Path, resume: bool, is_main: bool) -> Path | None:
    """Check (and on the main process create) the output folder; the checkpoint to resume from, if any."""
    last = out_dir / LAST_NAME
    if resume:
        if not last.is_file():
            raise DflowgenError(f"nothing to resume: {last} does not exist")
        return last
    if last.exists():
        raise DflowgenError(f"{out_dir} already holds a training run ({last}); pass {option('resume', True)} to continue it "
                            f"or choose another {option('out_dir', flag='--out')}")
    if is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out_dir):
                pass
        except OSError as error:
            raise DflowgenError(f"cannot write to output folder {out_dir}: {error.strerror or error}") from None
    return None


def describe_data(sources: Sequence[DataSource]) -> list[tuple[int, int, bool]]:
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
        if stored_data != describe_data(described):
            named = option("sources", flag="--data") if kind == "sources" else option("frames")
            raise DflowgenError(f"cannot resume {path} with different {named}: it was trained on (size, weight, "
                                f"sparse) {stored_data}, now {describe_data(described)}")
    done = int(state["step"])
    if done > config.num_steps:
        raise DflowgenError(f"{path} has done {done} steps, more than the {config.num_steps} asked for")
    if not finished_ok and done == config.num_steps:
        raise DflowgenError(f"{path} already finished all {config.num_steps} steps; {option('num_steps', 'N', flag='--steps')} "
                            f"(more than {done}) extends it")
