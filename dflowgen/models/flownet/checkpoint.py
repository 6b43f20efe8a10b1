"""The widely used PyTorch FlowNet ports' state-dict layout, mapped onto :class:`FlowNet`'s parts.

ClementPinard/FlowNetPytorch saves ``{"arch": "flownets", "div_flow": 20, "state_dict": {...}}`` with
flat keys (``conv1.0.weight``, ``deconv5.0.weight``, ``predict_flow6.weight``,
``upsampled_flow6_to_5.weight``). Here the same modules live under ``encoder.`` and ``decoder.``
with the same names below, so a port state dict loads after :func:`from_port_layout`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

_DECODER_PREFIXES = ("deconv", "predict_flow", "upsampled_flow")


def is_port_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys are the ports' flat names (no ``encoder.`` / ``decoder.`` parts)."""
    return "conv1.0.weight" in state_dict


def from_port_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Port keys → :class:`FlowNet` keys (``conv3_1.0.weight`` → ``encoder.conv3_1.0.weight``, …)."""
    return {(f"decoder.{key}" if key.startswith(_DECODER_PREFIXES) else f"encoder.{key}"): value
            for key, value in state_dict.items()}
