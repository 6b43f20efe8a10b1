"""Training losses for flow networks: supervised (sequence) and self-supervised (census, smoothness, distillation)."""

from dflowgen.losses.selfsup import SelfSupervisedLossConfig, self_supervised_terms
from dflowgen.losses.sequence import sequence_loss

__all__ = ["SelfSupervisedLossConfig", "self_supervised_terms", "sequence_loss"]
