"""Matplotlib figures for reports and plots: made off-screen (Agg) and saved atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dflowgen.files import atomic_write_bytes


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` of ``width``×``height`` inches on the Agg canvas (no display needed)."""
    # matplotlib loads here, not at import: it would add a second to every CLI start.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: Path) -> None:
    """Save ``figure`` as a PNG at ``path``, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
