"""The official RAFT (princeton-vl/RAFT), timed beside ours in the same process for a same-machine comparison.

The official code is not part of dflowgen: pass the ``core/`` folder of a checkout with
``--official``. It is built randomly initialised, like ours in the benchmarks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def check_core(core: str | None) -> None:
    """Exit with a one-line error unless ``core`` (when given) holds the official ``raft.py``.

    Called in the main process: a worker that exits would leave its pool waiting.
    """
    if core is not None and not (Path(core) / "raft.py").is_file():
        raise SystemExit(f"bench: error: {core} has no raft.py; pass the core/ folder of a princeton-vl/RAFT checkout")


def official_raft(core: str, model_name: str) -> torch.nn.Module:
    """The official ``RAFT`` of ``core/raft.py`` for ``raft`` or ``raft-small`` (float32, all-pairs correlation)."""
    sys.path.insert(0, str(core))  # the official modules import each other by bare name
    from raft import RAFT  # noqa: PLC0415

    args = argparse.Namespace(small=model_name == "raft-small", mixed_precision=False, alternate_corr=False, dropout=0.0)
    return RAFT(args)
