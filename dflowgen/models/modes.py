"""A network's modes: eval mode for a block with every module's own flag restored, and freezing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block ``model`` is in eval mode; after it every module gets its own training flag back.

    Restoring per module (not ``model.train()``) keeps frozen BatchNorm layers of a training model frozen.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with frozen BatchNorm and no parameter wanting gradients; returns it."""
    model.eval()
    freeze_bn = getattr(model, "freeze_bn", None)
    if callable(freeze_bn):
        freeze_bn()
    return model.requires_grad_(False)
