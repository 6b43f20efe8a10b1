"""Pseudo labels for unlabelled frames: a network's flow, kept where it is forward-backward consistent.

[CLIP-Flow] A teacher predicts the flow of every unlabelled pair on the whole frames, in both
directions; where the two disagree (occlusions, errors) the label is dropped. The labelled
frames are then ordinary training data (:class:`PseudoLabelled`), augmented like any
labelled set, and the labels can be refreshed from an improved network.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from dflowgen.data.sample import FlowPair
from dflowgen.models.inference import model_device, predict_flow
from dflowgen.flow.metrics import flow_length
from dflowgen.losses.selfsup import FB_ALPHA1, FB_ALPHA2, flow_warp, occlusion_mask
from dflowgen.losses.sequence import sequence_loss
from dflowgen.seeding import sample_generator
from dflowgen.train.config import TrainConfig
from dflowgen.train.labelfree.contrastive import contrastive_flow_loss, tap_features
from dflowgen.train.data import DataSource
from dflowgen.train.log import METRIC_KEYS
from dflowgen.models.modes import eval_mode
from dflowgen.train.objective import Objective, network_from_state, network_state


def consistency_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha1: float = FB_ALPHA1,
                     alpha2: float = FB_ALPHA2) -> torch.Tensor:
    """``B×1×H×W`` float 0/1: 1 where ``flow_fw`` (``B×2×H×W``) is forward-backward consistent.

    A pixel ``p`` is kept when ``|F_fw(p) + F_bw(p + F_fw(p))|² <= alpha1·(|F_fw|² + |F_bw(p + F_fw)|²) + alpha2``
    [Sundaram et al. 2010; UnFlow] and ``p + F_fw(p)`` lies inside frame 2. No gradient.
    """
    with torch.no_grad():
        occluded = occlusion_mask(flow_fw, flow_bw, "forward-backward", alpha1, alpha2)
        _, inside = flow_warp(flow_bw, flow_fw)
        return (1.0 - occluded) * inside


class PairLabels:
    """One pseudo label per pair: flow ``H×W×2`` float32 and ``H×W`` bool valid (numpy)."""

    def __init__(self, flows: Sequence[np.ndarray], valids: Sequence[np.ndarray]) -> None:
        self.flows, self.valids = list(flows), list(valids)

    @property
    def pixels(self) -> int:
        return sum(valid.size for valid in self.valids)

    def kept_fraction(self) -> float:
        """The fraction of all pixels that kept a label."""
        kept = sum(int(valid.sum()) for valid in self.valids)
        return kept / self.pixels if self.pixels else 0.0


@torch.inference_mode()
def label_pairs(model: nn.Module, dataset: Dataset, iters: int, alpha1: float = FB_ALPHA1, alpha2: float = FB_ALPHA2,
                device: torch.device | str | None = None, progress: bool = False) -> PairLabels:
    """``model``'s consistent flow for every pair of ``dataset`` (FlowPair items; their own flow is ignored).

    Each pair is run at full size (padded to /8) in both directions as one batch of two, with
    ``iters`` GRU iterations in eval mode; every module gets its training flag back afterwards.
    """
    device = torch.device(device) if device is not None else model_device(model)
    flows, valids = [], []
    with eval_mode(model):
        for index in tqdm(range(len(dataset)), desc="label", unit="pair", dynamic_ncols=True, leave=False,
                          disable=not progress or not sys.stderr.isatty()):
            pair = dataset[index]
            img1, img2 = (torch.tensor(image, dtype=torch.float32, device=device).permute(2, 0, 1)[None]
                          for image in (pair.img1, pair.img2))
            both = predict_flow(model, torch.cat([img1, img2]), torch.cat([img2, img1]), iters)
            valid = consistency_mask(both[:1], both[1:], alpha1, alpha2)[0, 0] > 0.5
            valid &= torch.isfinite(both[0]).all(dim=0)
            flows.append(both[0].permute(1, 2, 0).cpu().numpy().astype(np.float32))
            valids.append(valid.cpu().numpy())
    return PairLabels(flows, valids)


class PseudoLabelled(Dataset):
    """``dataset``'s pairs with ``labels`` as their flow and valid mask (a FlowPair Dataset).

    :meth:`relabel` swaps the labels in place; DataLoader workers made before hold the old ones.
    """

    def __init__(self, dataset: Dataset, labels: PairLabels | None = None) -> None:
        self.dataset = dataset
        self.labels = labels

    def relabel(self, labels: PairLabels) -> None:
        if len(labels.flows) != len(self.dataset):
            raise ValueError(f"{len(labels.flows)} labels for {len(self.dataset)} pairs")
        self.labels = labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> FlowPair:
        if self.labels is None:
            raise RuntimeError("PseudoLabelled has no labels yet: call relabel() first")
        pair = self.dataset[index]
        return FlowPair(pair.img1, pair.img2, self.labels.flows[index], self.labels.valids[index], pair.name)


class PseudoLabelObjective(Objective):
    """``--mode pseudo-label``: the sequence loss on pseudo-labelled frames (and any labelled data mixed in),
    plus the contrastive flow loss; the labels are refreshed every ``pseudo.refresh_every`` steps.

    ``labeller`` is the network that labels the frames first (the teacher), as :func:`network_state`
    data; a resumed run passes the checkpoint's, so its labels equal the interrupted run's.
    """

    metric_keys = ("loss", "sequence", "contrastive", *METRIC_KEYS[1:])

    def __init__(self, config: TrainConfig, student: nn.Module, frames: Sequence[DataSource],
                 labeller: dict[str, Any], device: torch.device, progress: bool = False) -> None:
        self.config, self.student, self.device, self.progress = config, student, device, progress
        self.labeller = labeller
        self.frames = [PseudoLabelled(source.dataset) for source in frames]
        self.sources = [DataSource(labelled, source.weight, sparse=False, name=source.name)
                        for labelled, source in zip(self.frames, frames)]

    def _label(self) -> float:
        """Label every frame pair with :attr:`labeller`; the fraction of pixels kept."""
        pseudo = self.config.pseudo
        bf16 = self.config.mixed_precision and self.device.type == "cuda"
        network = network_from_state(self.labeller, self.device, bf16)
        kept = total = 0
        for labelled in self.frames:
            labels = label_pairs(network, labelled.dataset, pseudo.label_iters, pseudo.fb_alpha1, pseudo.fb_alpha2,
                                 self.device, self.progress)
            labelled.relabel(labels)
            kept += labels.kept_fraction() * labels.pixels
            total += labels.pixels
        return kept / total

    def prepare(self, resumed: bool) -> dict[str, Any] | None:
        kept = self._label()
        return None if resumed else {"event": "label", "kept": kept}

    def segment_end(self, step: int, num_steps: int) -> int:
        every = self.config.pseudo.refresh_every
        return num_steps if every == 0 else min(num_steps, (step // every + 1) * every)

    def after_step(self, step: int) -> dict[str, Any] | None:
        every = self.config.pseudo.refresh_every
        if every == 0 or step % every or step >= self.config.num_steps:
            return None
        self.labeller = network_state(self.student)
        return {"event": "relabel", "kept": self._label()}

    def state(self) -> dict[str, Any]:
        return {"teacher": self.labeller}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, pseudo = self.config, self.config.pseudo
        image1, image2, flow, valid = (batch[key].to(self.device, non_blocking=True)
                                       for key in ("img1", "img2", "flow", "valid"))
        with tap_features(model) as tap:
            predictions = model(image1, image2, iters=config.iters)
        sequence, metrics = sequence_loss(predictions, flow, valid, gamma=config.gamma, max_flow=config.max_flow)
        contrastive = sequence.new_zeros(())
        if pseudo.contrastive_weight > 0:
            features1, features2 = tap.pair()
            usable = (valid >= 0.5) & (flow_length(flow) < config.max_flow)
            contrastive = contrastive_flow_loss(features1, features2, flow, usable.to(flow.dtype), pseudo.temperature,
                                                pseudo.num_anchors, sample_generator(config.seed, step, "anchors"))
        total = sequence + pseudo.contrastive_weight * contrastive
        return total, {"sequence": sequence.detach(), "contrastive": contrastive.detach(), **metrics}
