"""RAFT and RAFT-small, parameter-compatible with the officially released checkpoints.

>>> from dflowgen.models.raft import build_raft, load_raft
>>> model = build_raft("raft-small")               # fresh weights
>>> model = load_raft("raft-sintel.pth")           # doctest: +SKIP
>>> flows = model(image1, image2, iters=32)        # every step's flow (training)  # doctest: +SKIP
>>> flow = predict_flow(model, image1, image2, iters=32)  # inference, any size (models.inference)  # doctest: +SKIP
"""

from dflowgen.models.raft.checkpoint import infer_model_name, load_raft
from dflowgen.models.raft.corr import CORR_KINDS
from dflowgen.models.raft.padding import InputPadder
from dflowgen.models.raft.raft import MODEL_NAMES, RAFT, build_raft

__all__ = ["CORR_KINDS", "MODEL_NAMES", "RAFT", "InputPadder", "build_raft", "infer_model_name", "load_raft"]
