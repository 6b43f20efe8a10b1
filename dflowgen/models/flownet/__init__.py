"""FlowNetS and FlowNetC, key-compatible with the widely used PyTorch ports' checkpoints.

>>> from dflowgen.models.flownet import build_flownet
>>> model = build_flownet("flownetc")                              # fresh weights
>>> flow = model(image1, image2, final_only=True)[-1]             # doctest: +SKIP
"""

from dflowgen.models.flownet.checkpoint import from_port_layout, is_port_layout
from dflowgen.models.flownet.correlation import Correlation, correlation
from dflowgen.models.flownet.flownet import DIV_FLOW, FLOWNET_NAMES, FlowNet, build_flownet

__all__ = ["DIV_FLOW", "FLOWNET_NAMES", "Correlation", "FlowNet", "build_flownet", "correlation",
           "from_port_layout", "is_port_layout"]
