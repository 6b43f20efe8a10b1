"""Where the files that ship beside the package are: the source tree's folder, then the installed copy."""

from __future__ import annotations

import sys
from pathlib import Path


def shipped_dirs(name: str) -> list[Path]:
    """Candidate folders of the shipped folder ``name`` (``recipes``, ``layers_assets``), in search order."""
    return [Path(__file__).resolve().parents[1] / name, Path(sys.prefix) / "share" / "dflowgen" / name]
