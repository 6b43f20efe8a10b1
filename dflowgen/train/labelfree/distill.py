"""Reliable knowledge distillation under strong augmentation, optionally back and forth [MDFlow].

Each step the teacher predicts both directions of the (weakly augmented) training crop; its
forward-backward consistent pixels are its reliable knowledge. The student sees a strongly
augmented view of the pair (:mod:`dflowgen.train.labelfree.strong_augment`: zoom, rotation, flips,
relative motion, colour jitter, erased boxes) and is supervised in both directions by the
teacher's flow carried exactly into that view, on reliable pixels only (RAFT's sequence
loss), plus a small census + smoothness term on its own last iterate (MDFlow's extra
unsupervised term). With ``distill.swap_every`` the two networks swap roles every so many
steps, so knowledge goes back and forth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dflowgen.losses.sequence import sequence_loss
from dflowgen.seeding import sample_generator
from dflowgen.train.config import TrainConfig
from dflowgen.models.modes import eval_mode
from dflowgen.train.objective import Objective
from dflowgen.train.labelfree.pseudo_label import consistency_mask
from dflowgen.train.labelfree.self_supervised import photometric_terms
from dflowgen.train.labelfree.strong_augment import strong_augment


class DistillObjective(Objective):
    """``--mode distill``: ``networks[0]`` is the student from ``--init``, ``networks[1]`` the teacher.

    With ``distill.swap_every`` = 0 the teacher is fixed (frozen); otherwise both train, each in
    its phase, and the other one teaches.
    """

    metric_keys = ("loss", "distill", "census", "smooth2", "confident", "epe")

    def __init__(self, config: TrainConfig, networks: Sequence[nn.Module], device: torch.device) -> None:
        if len(networks) != 2:
            raise ValueError(f"distillation needs a student and a teacher, got {len(networks)} networks")
        self.config, self.networks, self.device = config, list(networks), device

    def trainee(self, step: int) -> int:
        every = self.config.distill.swap_every
        return 0 if every == 0 else (step // every) % 2

    @torch.no_grad()
    def _teach(self, teacher: nn.Module, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The teacher's forward and backward flows (``B×2×H×W``) and their 0/1 confidences (``B×1×H×W``)."""
        distill = self.config.distill
        with eval_mode(teacher):
            both = teacher(torch.cat([image1, image2]), torch.cat([image2, image1]), iters=distill.teacher_iters,
                           final_only=True)[-1]
        flow_fw, flow_bw = both.float().chunk(2)
        confidence_fw = consistency_mask(flow_fw, flow_bw, distill.fb_alpha1, distill.fb_alpha2)
        confidence_bw = consistency_mask(flow_bw, flow_fw, distill.fb_alpha1, distill.fb_alpha2)
        return flow_fw, flow_bw, confidence_fw, confidence_bw

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, distill = self.config, self.config.distill
        teacher = self.networks[1 - self.trainee(step)]
        image1, image2 = (batch[key].to(self.device, non_blocking=True) for key in ("img1", "img2"))
        views = strong_augment(image1, image2, *self._teach(teacher, image1, image2), distill.augment,
                               sample_generator(config.seed, step, "strong-augment"))
        predictions = model(torch.cat([views.inputs1, views.inputs2]), torch.cat([views.inputs2, views.inputs1]),
                            iters=config.iters)
        valid = torch.cat([views.valid_fw, views.valid_bw])
        supervised, metrics = sequence_loss(predictions, torch.cat([views.flow_fw, views.flow_bw]), valid,
                                            gamma=config.gamma, max_flow=config.max_flow)
        zero = supervised.new_zeros(())
        terms = {"census": zero, "smooth2": zero, "total": zero}
        if distill.selfsup_weight > 0:
            student_fw, student_bw = predictions[-1].float().chunk(2)
            terms = photometric_terms(views.clean1 / 255.0, views.clean2 / 255.0, student_fw, student_bw,
                                      config.selfsup.loss)
        total = supervised + distill.selfsup_weight * terms["total"]
        return total, {"distill": supervised.detach(), "census": terms["census"].detach(),
                       "smooth2": terms["smooth2"].detach(), "confident": 100.0 * valid.mean(),
                       "epe": metrics["epe"]}
