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

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dflowgen.losses.sequence import sequence_loss
from dflowgen.seeding import sample_generator
from dflowgen.train.config import TrainConfig
from dflowgen.models.modes import eval_mode
from dflowgen.train.objective import Objective, Trainee, network_from_state, network_state
from dflowgen.train.labelfree.pseudo_label import consistency_mask
from dflowgen.train.labelfree.self_supervised import photometric_terms
from dflowgen.train.labelfree.strong_augment import strong_augment


class DistillObjective(Objective):
    """``--mode distill``: the run's network is the student; the objective owns its teacher.

    With ``distill.swap_every`` = 0 the teacher is fixed (frozen, and saved in checkpoints so a
    resumed run needs no ``teacher``); otherwise it is a partner that trains too, each network in
    its phase while the other one teaches.
    """

    metric_keys = ("loss", "distill", "census", "smooth2", "confident", "epe")

    def __init__(self, config: TrainConfig, student: nn.Module, teacher: nn.Module | Trainee,
                 device: torch.device) -> None:
        self.config, self.device = config, device
        if isinstance(teacher, Trainee):
            self.partners = (teacher,)
            self.networks = [student, teacher.model]
        else:
            self.networks = [student, teacher]
            # Frozen: its checkpoint data never changes, so it is copied once, not at every checkpoint.
            self.teacher_state = network_state(teacher)

    @classmethod
    def create(cls, config: TrainConfig, student: nn.Module, load_teacher: Callable[[], nn.Module],
               state: dict[str, Any] | None, device: torch.device, mixed_precision: bool) -> DistillObjective:
        """The objective of a fresh run (teacher from ``load_teacher()``) or of a resumed one (from its
        checkpoint ``state``)."""
        if config.distill.swap_every == 0:
            if state is None:
                return cls(config, student, load_teacher(), device)
            return cls(config, student, network_from_state(state["teacher"], device, mixed_precision).eval(), device)
        if state is None:
            return cls(config, student, Trainee.of(_trainable(load_teacher(), config), config), device)
        partner = Trainee.of(_trainable(network_from_state(state["partner"], device, mixed_precision), config), config)
        partner.restore(state["partner"], config, int(state["step"]))
        return cls(config, student, partner, device)

    def state(self) -> dict[str, Any]:
        if self.partners:
            return {"partner": self.partners[0].state()}
        return {"teacher": self.teacher_state}

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


def _trainable(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model`` ready to train as the run's own network is (gradients on, training mode, BN frozen if asked)."""
    model.requires_grad_(True).train()
    if config.freeze_bn:
        model.freeze_bn()
    return model
