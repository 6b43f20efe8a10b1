"""The target a candidate is measured on, and the measurement: self-supervised loss and, with labels, AEPE.

The target pairs are decoded once per process and kept as tensors (a search scores every
candidate on the same pairs). A trained network is run on each pair in both temporal
directions and on the self-distillation crop (two batched forward passes per pair,
padded to a multiple of 8 like the official evaluation), and judged by
:func:`dflowgen.losses.selfsup.self_supervised_terms` — the label-free metric — and, when
the target has ground truth, by the end-point error of the forward flow (the mean over
pairs of each pair's mean EPE, :func:`dflowgen.evaluate.aggregate`; dense sets on every
pixel, sparse sets on their valid pixels, as ``dflowgen eval`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dflowgen.data.spec import open_spec
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import PairResult, aggregate
from dflowgen.models.inference import predict_flow
from dflowgen.models.modes import eval_mode
from dflowgen.flow.metrics import flow_metrics
from dflowgen.losses.selfsup import SelfSupervisedLossConfig, distillation_crop, self_supervised_terms


@dataclass(frozen=True)
class TargetPair:
    """One target pair as CPU tensors.

    ``img1``/``img2``: ``1×3×h×w`` float in [0, 255], already resized by the target scale;
    ``flow``: ``1×2×H×W`` at the original size (None without labels); ``valid``: ``1×H×W``
    bool, the pixels AEPE is measured on (None: every pixel).
    """

    name: str
    img1: torch.Tensor
    img2: torch.Tensor
    flow: torch.Tensor | None
    valid: torch.Tensor | None


@dataclass(frozen=True)
class TargetSet:
    """The pairs of a target data spec; ``labelled`` when every pair has ground-truth flow."""

    spec: str
    pairs: tuple[TargetPair, ...]
    sparse: bool

    @property
    def labelled(self) -> bool:
        return all(pair.flow is not None for pair in self.pairs)


@dataclass(frozen=True)
class TargetScore:
    """A network's marks on the target: the self-supervised loss (``total``) and its terms, AEPE when labelled."""

    selfsup: dict[str, float]
    aepe: float | None


def _resize(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return image
    height, width = image.shape[-2:]
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def load_target(spec: str, max_pairs: int = 0, scale: float = 1.0) -> TargetSet:
    """Decode the pairs of data ``spec`` (``max_pairs`` evenly spaced ones; 0 = all), frames resized by ``scale``."""
    dataset, _, sparse = open_spec(spec)
    count = len(dataset)
    if count == 0:
        raise DflowgenError(f"target data spec '{spec}' has no pairs")
    chosen = range(count) if max_pairs in (0, None) or max_pairs >= count else \
        np.linspace(0, count - 1, max_pairs).round().astype(int).tolist()
    pairs = []
    for index in chosen:
        pair = dataset[index]
        img1, img2 = (_resize(torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None], scale)
                      for image in (pair.img1, pair.img2))
        flow = None if pair.flow is None else torch.tensor(pair.flow, dtype=torch.float32).permute(2, 0, 1)[None]
        valid = torch.tensor(pair.valid, dtype=torch.bool)[None] if sparse and pair.valid is not None else None
        pairs.append(TargetPair(pair.name, img1, img2, flow, valid))
    return TargetSet(spec, tuple(pairs), sparse)


def _to_full_size(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``B×2×h×w`` flow resized to ``size`` = (H, W), its vectors scaled to the new pixels."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    scale = flow.new_tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]]).view(1, 2, 1, 1)
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * scale


@torch.inference_mode()
def score_model(model: nn.Module, target: TargetSet, iters: int, loss_config: SelfSupervisedLossConfig,
                device: torch.device) -> TargetScore:
    """Measure ``model`` (RAFT-like, test mode) on every target pair; self-supervised terms are means over pairs.

    The census term counts every pixel (``self_supervised_terms(..., everywhere=True)``): a network that sends
    pixels out of view, so the occlusion mask scores none, would otherwise score a census of 0 and top a search.
    """
    pad_mode = "kitti" if target.sparse else "sintel"
    sums: dict[str, float] = {}
    results = []
    with eval_mode(model):
        for pair in target.pairs:
            img1, img2 = pair.img1.to(device), pair.img2.to(device)
            both = predict_flow(model, torch.cat([img1, img2]), torch.cat([img2, img1]), iters, pad_mode)
            crop1, crop2 = (distillation_crop(image, loss_config.distill_crop) for image in (img1, img2))
            crops = predict_flow(model, torch.cat([crop1, crop2]), torch.cat([crop2, crop1]), iters, pad_mode)
            terms = self_supervised_terms(img1 / 255.0, img2 / 255.0, both[:1], both[1:], crops[:1], crops[1:],
                                          loss_config, everywhere=True)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            if pair.flow is not None:
                flow_gt = pair.flow.to(device)
                flow = _to_full_size(both[:1], tuple(flow_gt.shape[-2:]))
                valid = None if pair.valid is None else pair.valid.to(device)
                pixels = flow_gt[0, 0].numel() if valid is None else int(valid.sum().item())
                if pixels:
                    metrics = flow_metrics(flow, flow_gt, valid)
                    results.append(PairResult(pair.name, metrics.pop("epe"), metrics, pixels))
    selfsup = {name: value / len(target.pairs) for name, value in sums.items()}
    aepe = aggregate(results)["epe"] if target.labelled and results else None
    return TargetScore(selfsup, aepe)
