"""The frozen proxy networks: a base network the samples should be hard for, a target network they should suit.

Any network of :data:`dflowgen.models.registry.MODEL_NAMES` serves (RAFT, RAFT-small, FlowNetS, FlowNetC):
the optimiser only needs a differentiable loss of a frozen network.

A proxy is only ever differentiated with respect to its *inputs*: it is in eval mode with
frozen BatchNorm statistics and every parameter has ``requires_grad=False``, so gradients
reach the rendered images and flow while the network stays bit-identical and its ``.grad``
stays ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from dflowgen.errors import DflowgenError, option, on_command_line
from dflowgen.models.modes import freeze
from dflowgen.models.registry import check_model_name, load_model
from dflowgen.optimize.config import OptimizeConfig


class Proxies(NamedTuple):
    """The two frozen proxies of [DFlow §3.1]."""

    base: nn.Module
    target: nn.Module


def load_proxy(
    weights: str | Path, model_name: str, device: torch.device | str, mixed_precision: bool = False
) -> nn.Module:
    """A frozen proxy network on ``device``.

    Args:
        weights: a checkpoint file, or a name in the weights store (see ``dflowgen.weights``).
        model_name: ``"raft"``, ``"raft-small"``, ``"flownets"`` or ``"flownetc"``.
        device: where the proxy runs.
        mixed_precision: bfloat16 autocast for the convolutions (correlation, coordinates and
            upsampling stay float32). Only honoured on CUDA: on CPU it is slower and less exact.

    Raises:
        DflowgenError: unknown model name, a missing checkpoint (the message says how to get
            it), or weights that do not fit ``model_name``.
    """
    check_model_name(model_name, "proxy model")
    device = torch.device(device)
    bf16 = mixed_precision and device.type == "cuda"
    model = load_model(weights, model_name, map_location=device, mixed_precision=bf16)
    return freeze(model)


def check_target_named(config: OptimizeConfig) -> None:
    """Raise a ``DflowgenError`` when ``config`` names no target proxy (so nothing can be optimised)."""
    if not config.target_weights:
        raise DflowgenError(
            "the recipe names no target proxy: set optimize.target_weights (a file or a weights-store name)"
            + (f" or pass {option('target_weights', flag='--target-ckpt')}" if on_command_line() else "")
        )


def load_proxies(config: OptimizeConfig, device: torch.device | str) -> Proxies:
    """The base and target proxies named by an ``[optimize]`` recipe section.

    Raises:
        DflowgenError: no target checkpoint is set, or either checkpoint cannot be loaded.
    """
    check_target_named(config)
    base = load_proxy(config.base_weights, config.base_model, device, config.mixed_precision)
    target = load_proxy(config.target_weights, config.target_model, device, config.mixed_precision)
    return Proxies(base=base, target=target)
