"""Validation while training: the network measured on labelled data with the ``dflowgen eval`` protocol."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.train.data import DataSource

VAL_KEYS = ("epe", "epe_pixels", "1px", "3px", "5px", "fl_all")


def check_validation_data(sources: Sequence[DataSource]) -> None:
    """Every ``--val`` source has pairs, and its first pair has ground-truth flow (checked before training starts)."""
    for source in sources:
        if len(source.dataset) == 0:
            raise DflowgenError(f"--val {source.name or '?'} has no pairs")
        if source.dataset[0].flow is None:
            raise DflowgenError(f"--val {source.name or '?'} has no ground-truth flow: validation needs labelled data")


def validate(model: nn.Module, sources: Sequence[DataSource], iters: int,
             device: torch.device) -> list[dict[str, object]]:
    """One record per source: its ``name`` as ``data`` and the aggregate metrics :data:`VAL_KEYS`.

    Dense sets are measured on every pixel (centred padding), sparse ones on their valid
    points (bottom padding), as ``dflowgen eval`` does; ``model`` gets its training mode back.
    """
    records = []
    for source in sources:
        result = evaluate(model, source.dataset, iters, all_pixels=not source.sparse,
                          pad_mode="kitti" if source.sparse else "sintel", device=device)
        records.append({"data": source.name, **{key: result.aggregate[key] for key in VAL_KEYS}})
    return records
