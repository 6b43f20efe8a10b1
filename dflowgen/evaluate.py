"""Evaluate a flow network on a labelled dataset with the official RAFT protocol.

Each pair is replicate-padded to a multiple of 8 (:class:`InputPadder`, centred; KITTI
mode pads the bottom), run once (``final_only``) with ``iters`` GRU iterations, cropped
back and compared with the ground truth (:func:`dflowgen.flow.metrics.flow_metrics`).

Aggregates (``EvalResult.aggregate``):

* ``epe`` — the mean over pairs of each pair's mean EPE (the official KITTI protocol; the
  number the reference EPEs in ``shared/reference`` are compared with, pair by pair);
* ``epe_pixels`` — the mean EPE over all measured pixels of all pairs (the official Sintel
  protocol; equal to ``epe`` when every pair has the same number of measured pixels);
* ``1px``, ``3px``, ``5px``, ``fl_all`` — percentages over all measured pixels pooled (KITTI's
  Fl-all is defined this way).

Which pixels are measured: the pair's ``valid`` mask, unless ``all_pixels`` is set, which
measures every pixel (the official protocol for dense sets: RAFT's Sintel and Chairs
validation ignore Sintel's ``invalid`` masks).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from dflowgen.errors import DflowgenError, option
from dflowgen.flow.metrics import flow_metrics
from dflowgen.models.inference import model_device, predict_flow
from dflowgen.models.modes import eval_mode
from dflowgen.train.data import DataSource

RATE_KEYS = ("1px", "3px", "5px", "fl_all")


@dataclass(frozen=True)
class PairResult:
    """Metrics of one pair: EPE (px), rates (percent), and how many pixels were measured."""

    name: str
    epe: float
    rates: dict[str, float]
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "epe": self.epe, **self.rates, "pixels": self.pixels}


@dataclass(frozen=True)
class EvalResult:
    """Per-pair results of one dataset and their aggregate (see the module docstring)."""

    pairs: list[PairResult]
    iters: int
    all_pixels: bool
    aggregate: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregate", aggregate(self.pairs))

    def to_dict(self) -> dict[str, Any]:
        return {"iters": self.iters, "all_pixels": self.all_pixels, "aggregate": self.aggregate,
                "pairs": [pair.to_dict() for pair in self.pairs]}


def aggregate(pairs: Sequence[PairResult]) -> dict[str, float]:
    """Mean-over-pairs EPE, pixel-pooled EPE and rates, and the counts they come from."""
    if not pairs:
        raise ValueError("no pairs to aggregate")
    pixels = torch.tensor([pair.pixels for pair in pairs], dtype=torch.float64)
    epe = torch.tensor([pair.epe for pair in pairs], dtype=torch.float64)
    weights = pixels / pixels.sum()
    result = {"epe": epe.mean().item(), "epe_pixels": (epe * weights).sum().item()}
    for key in RATE_KEYS:
        rates = torch.tensor([pair.rates[key] for pair in pairs], dtype=torch.float64)
        result[key] = (rates * weights).sum().item()
    result.update(pairs=len(pairs), pixels=int(pixels.sum().item()))
    return result


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    iters: int = 32,
    *,
    all_pixels: bool = False,
    pad_mode: str = "sintel",
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> EvalResult:
    """Run ``model`` on every pair of ``dataset`` (FlowPair items with flow) and measure it.

    Args:
        model: a RAFT-like module: ``model(img1, img2, iters=, final_only=True) -> [flow]``.
        dataset: FlowPair items; all must have ground-truth flow.
        iters: GRU iterations (official: 32 for Sintel, 24 for KITTI and Chairs).
        all_pixels: measure every pixel, ignoring the pairs' ``valid`` masks (dense sets).
        pad_mode: ``"sintel"`` (centred) or ``"kitti"`` (bottom) padding.
        device: where to run; None = where the model's parameters are.
        progress: show a tqdm bar (only on a terminal).

    The model is put in eval mode for the run; every module gets its former mode back afterwards.

    Example:
        >>> result = evaluate(load_raft("raft-sintel.pth"), Sintel(root, "clean"), iters=32)  # doctest: +SKIP
        >>> result.aggregate["epe"]  # doctest: +SKIP
    """
    device = torch.device(device) if device is not None else model_device(model)
    results = []
    with eval_mode(model):
        for index in tqdm(range(len(dataset)), desc=desc, unit="pair", dynamic_ncols=True,
                          disable=not progress or not sys.stderr.isatty()):
            pair = dataset[index]
            if pair.flow is None:
                raise DflowgenError(f"pair {pair.name!r} has no ground-truth flow: cannot evaluate on unlabelled data "
                                    "(estimate its flow with `dflowgen infer`)")
            # torch.tensor copies: readers may hand out read-only arrays.
            img1, img2 = (torch.tensor(image, dtype=torch.float32, device=device).permute(2, 0, 1)[None]
                          for image in (pair.img1, pair.img2))
            flow_gt = torch.tensor(pair.flow, dtype=torch.float32, device=device).permute(2, 0, 1)[None]
            valid = None
            if pair.valid is not None and not all_pixels:
                valid = torch.tensor(pair.valid, dtype=torch.bool, device=device)[None]
            flow = predict_flow(model, img1, img2, iters, pad_mode)
            pixels = flow_gt[0, 0].numel() if valid is None else int(valid.sum().item())
            if pixels == 0:
                raise DflowgenError(f"pair {pair.name!r} has no valid ground-truth pixels")
            metrics = flow_metrics(flow, flow_gt, valid)
            results.append(PairResult(pair.name, metrics.pop("epe"), metrics, pixels))
    if not results:
        raise DflowgenError("the dataset to evaluate on has no pairs")
    return EvalResult(results, iters, all_pixels)


VAL_KEYS = ("epe", "epe_pixels", "1px", "3px", "5px", "fl_all")


class Validation:
    """Validation while training: labelled sources measured with the ``dflowgen eval`` protocol.

    The trainer calls it every ``val_every`` steps (``train(..., validation=...)``); it lives here,
    above the trainer, so training imports no evaluation code. Dense sets are measured on every
    pixel (centred padding), sparse ones on their valid points (bottom padding), as ``dflowgen
    eval`` does; the model gets its training mode back.
    """

    def __init__(self, sources: Sequence[DataSource], iters: int) -> None:
        """Check, before training starts, that every source has pairs with ground-truth flow."""
        for source in sources:
            if len(source.dataset) == 0:
                raise DflowgenError(f"{option('validation', source.name or '?', flag='--val')} has no pairs")
            if source.dataset[0].flow is None:
                raise DflowgenError(f"{option('validation', source.name or '?', flag='--val')} has no ground-truth flow: validation needs "
                                    "labelled data")
        self.sources, self.iters = list(sources), iters

    def __call__(self, model: nn.Module, device: torch.device) -> list[dict[str, Any]]:
        """One record per source: its ``name`` as ``data`` and the aggregate metrics :data:`VAL_KEYS`."""
        records = []
        for source in self.sources:
            result = evaluate(model, source.dataset, self.iters, all_pixels=not source.sparse,
                              pad_mode="kitti" if source.sparse else "sintel", device=device)
            records.append({"data": source.name, **{key: result.aggregate[key] for key in VAL_KEYS}})
        return records
