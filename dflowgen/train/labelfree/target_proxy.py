"""A DFlow target proxy made without labels: the base network fine-tuned on the target's unlabelled frames.

DFlow's target proxy is the base network fine-tuned on labelled target data [DFlow App. A.2].
When the target domain is only video, :func:`make_proxy` fine-tunes it with a label-free mode
instead (``train.mode``: ``pseudo-label``, ``self-supervised`` or ``distill``) and writes the
network alone, as ``dflowgen weights export`` does, so ``dflowgen generate --target-ckpt``
and :func:`dflowgen.optimize.proxies.load_proxy` take it.

The training run lives in a work folder beside the output (``<out stem>-run/``): running the
same call again resumes an interrupted run, and only exports a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dflowgen.errors import DflowgenError
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import LABEL_FREE_MODES, TrainConfig
from dflowgen.train.data import DataSource
from dflowgen.train.inputs import check_resumable
from dflowgen.train.trainer import train
from dflowgen.models.registry import export_network


@dataclass(frozen=True)
class ProxyResult:
    """The exported proxy, the training run it came from, its steps, and the run's last log record."""

    path: Path
    run_dir: Path
    model_name: str
    step: int
    last_record: dict[str, Any] | None


def default_run_dir(out: str | Path) -> Path:
    """The work folder of the proxy written to ``out``: ``<out's folder>/<out's stem>-run``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-run")


def make_proxy(config: TrainConfig, frames: Sequence[DataSource], init: str | Path, out: str | Path, *,
               sources: Sequence[DataSource] = (), teacher: str | Path | None = None, run_dir: str | Path | None = None,
               device: str | None = None, quiet: bool = False, recipe_text: str = "") -> ProxyResult:
    """Fine-tune ``init`` on ``frames`` with ``config.mode`` (label-free) and export the network to ``out``.

    Args:
        config: the ``[train]`` section; ``config.mode`` must be a label-free mode.
        frames: the target's unlabelled pairs.
        init: the base network (a file or a weights-store name), also the default teacher.
        out: the proxy file, ``{"model": state_dict, "model_name": ...}``.
        sources: labelled data mixed in by ``pseudo-label``.
        teacher: the teacher of ``pseudo-label``/``distill`` (default: ``init``).
        run_dir: the training run's folder (default: :func:`default_run_dir`); resumed when it holds one.
        device, quiet, recipe_text: as for :func:`dflowgen.train.trainer.train`.

    Example:
        >>> config = TrainConfig(mode="pseudo-label", num_steps=200)
        >>> make_proxy(config, frames, "raft-small", "target.pth")  # doctest: +SKIP
    """
    if config.mode not in LABEL_FREE_MODES:
        raise DflowgenError(f"a label-free proxy is trained with train.mode {', '.join(LABEL_FREE_MODES)}; "
                            f"got {config.mode!r} (for a proxy from labelled data use `dflowgen train` and "
                            "`dflowgen weights export`)")
    out = Path(out)
    # The proxy is written after training: check its path now, not after minutes of work.
    if not out.parent.is_dir():
        raise DflowgenError(f"cannot write the proxy {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise DflowgenError(f"cannot write the proxy {out}: it is a folder (give a file name, "
                            f"e.g. {out / 'proxy.pth'})")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise DflowgenError(f"cannot write the proxy {out}: folder {out.parent} is not writable")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(out)
    last = run_dir / LAST_NAME
    step, record = config.num_steps, None
    if last.is_file() and int(load_checkpoint(last)["step"]) >= config.num_steps:
        check_resumable(load_checkpoint(last), config, sources, frames, last, finished_ok=True)
    else:
        result = train(config, sources, run_dir, frames=frames, init=init, teacher=teacher, resume=last.is_file(),
                       device=device, quiet=quiet, recipe_text=recipe_text)
        step, record = result.step, result.last_record
    export_network(last, out)
    return ProxyResult(out, run_dir, config.model, step, record)
