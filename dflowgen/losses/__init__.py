"""Training losses for flow networks."""

from dflowgen.losses.sequence import sequence_loss

__all__ = ["sequence_loss"]
