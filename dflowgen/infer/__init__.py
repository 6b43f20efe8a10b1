"""Optical flow on a user's own frames: pairs, folders of frames and videos (``dflowgen infer``).

>>> from dflowgen.infer import estimate_flow
>>> from dflowgen.models.registry import load_model
>>> flows = estimate_flow(load_model("demo-base"), frames, iters=12)   # doctest: +SKIP
"""

from dflowgen.infer.estimate import estimate_flow, estimate_pairs
from dflowgen.infer.outputs import DEFAULT_FORMATS, OUTPUT_FORMATS, parse_formats, visualisation
from dflowgen.infer.run import InferResult, run_inference
from dflowgen.infer.sources import FrameSequence, open_inputs

__all__ = ["DEFAULT_FORMATS", "OUTPUT_FORMATS", "FrameSequence", "InferResult", "estimate_flow", "estimate_pairs",
           "open_inputs", "parse_formats", "run_inference", "visualisation"]
