"""Self-supervised training [SMURF §3]: learn flow from unlabelled frames alone.

One step runs the network once on a batch of four kinds of input, (frame 1, frame 2),
(frame 2, frame 1), and the self-distillation crop of both orders, and minimises
:func:`dflowgen.losses.selfsup.self_supervised_terms` — census with occlusion masking,
edge-aware smoothness, and self-distillation from the full-frame flow (detached) to the
crop's — on every GRU iterate. The network sees colour-jittered frames; the losses compare
the frames as they are. Works from scratch and as fine-tuning (S-AF's "+SS" step).
"""

from __future__ import annotations

import torch
from torch import nn

from dflowgen.losses.selfsup import (
    SelfSupervisedLossConfig,
    census_loss,
    distillation_crop,
    flow_warp,
    occlusion_mask,
    self_supervised_terms,
    smoothness_loss,
)
from dflowgen.seeding import sample_generator
from dflowgen.train.config import TrainConfig
from dflowgen.train.labelfree.jitter import jitter_pair
from dflowgen.train.objective import Objective

SELFSUP_TERMS = ("census", "smooth1", "smooth2", "distill")


def sequence_weights(count: int, gamma: float) -> list[float]:
    """Weights ``γ^(N−1−i)`` of iterates i = 0 … N−1, normalised to sum 1 (γ = 0: the last iterate only)."""
    raw = [gamma ** (count - 1 - i) for i in range(count)]
    total = sum(raw)
    return [weight / total for weight in raw]


def photometric_terms(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                      config: SelfSupervisedLossConfig) -> dict[str, torch.Tensor]:
    """Census (occlusion-masked) and smoothness terms of both temporal directions, and their weighted sum.

    The same terms as :func:`~dflowgen.losses.selfsup.self_supervised_terms` without self-distillation:
    ``image1``, ``image2`` are ``B×3×H×W`` in [0, 1], ``flow_fw``/``flow_bw`` ``B×2×H×W``. Returns
    ``census``, ``smooth1``, ``smooth2`` and ``total``.
    """
    frames, others = torch.cat([image1, image2]), torch.cat([image2, image1])
    flows, reverse = torch.cat([flow_fw, flow_bw]), torch.cat([flow_bw, flow_fw])
    warped, inside = flow_warp(others, flows)
    visible = 1.0 - occlusion_mask(flows, reverse, config.occlusion, config.fb_alpha1, config.fb_alpha2)
    terms = {"census": census_loss(frames, warped, visible * inside, config.census_patch)}
    for order in (1, 2):
        terms[f"smooth{order}"] = smoothness_loss(frames, flows, order, config.edge_constant, config.edge_weighting)
    terms["total"] = (config.weight_census * terms["census"] + config.weight_smooth1 * terms["smooth1"]
                      + config.weight_smooth2 * terms["smooth2"])
    return terms


def selfsup_sequence_loss(predictions: list[torch.Tensor], image1: torch.Tensor, image2: torch.Tensor,
                          gamma: float, config: SelfSupervisedLossConfig) -> dict[str, torch.Tensor]:
    """SMURF's loss over RAFT's iterates, weighted by :func:`sequence_weights`.

    Args:
        predictions: the network's iterates, each ``4B×2×H×W``: forward, backward, forward on the
            crop, backward on the crop (the order :class:`SelfSupervisedObjective` batches them in).
        image1, image2: ``B×3×H×W`` frames in [0, 1] (without jitter).
        gamma: iterate weighting.
        config: loss weights and constants.

    Returns:
        ``total`` (with gradient) and the weighted terms.
    """
    summed: dict[str, torch.Tensor] = {}
    for weight, prediction in zip(sequence_weights(len(predictions), gamma), predictions):
        if weight == 0.0:
            continue
        flow_fw, flow_bw, crop_fw, crop_bw = prediction.float().chunk(4)
        terms = self_supervised_terms(image1, image2, flow_fw, flow_bw, crop_fw, crop_bw, config)
        for name, value in terms.items():
            summed[name] = summed[name] + weight * value if name in summed else weight * value
    return summed


class SelfSupervisedObjective(Objective):
    """``--mode self-supervised``: SMURF's unsupervised loss on unlabelled training crops."""

    metric_keys = ("loss", *SELFSUP_TERMS)

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        selfsup = self.config.selfsup
        image1, image2 = (batch[key].to(self.device, non_blocking=True) for key in ("img1", "img2"))
        inputs1, inputs2 = image1, image2
        if selfsup.photometric:
            inputs1, inputs2 = jitter_pair(image1, image2, selfsup.jitter,
                                           sample_generator(self.config.seed, step, "jitter"))
        crop1, crop2 = (distillation_crop(image, selfsup.loss.distill_crop) for image in (inputs1, inputs2))
        predictions = model(torch.cat([inputs1, inputs2, crop1, crop2]), torch.cat([inputs2, inputs1, crop2, crop1]),
                            iters=self.config.iters)
        terms = selfsup_sequence_loss(predictions, image1 / 255.0, image2 / 255.0, selfsup.sequence_gamma,
                                      selfsup.loss)
        return terms["total"], {name: terms[name].detach() for name in SELFSUP_TERMS}
