"""The released weights reproduce the official implementation's end-point errors on sintel-mini.

Reference figures come from the official code (``reference/official_raft_epe.json``): images padded
to a multiple of 8 (replicate, centred), test mode, EPE averaged over all pixels, float32 on CPU.
A faithful implementation matches them within 0.01 px on the pairs whose flow is numerically
stable (see CASES). Two pairs per model keep this test short.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dflowgen.flow.io import read_flo
from dflowgen.flow.metrics import end_point_error
from dflowgen.models.raft import InputPadder, load_raft

# The default run checks the same anchor end to end through `dflowgen eval` (tests/test_eval_official.py);
# this model-level copy runs in `make test-slow`.
pytestmark = pytest.mark.slow

# Only pairs whose flow is stable under float32 rounding. On ambush_4 (both models) and temple_3
# (RAFT-small) some pixels are chaotic over 32 iterations: any change of summation order moves
# their EPE by up to ~0.3 px. The official sequence of operations itself, run with this torch on
# this CPU, misses the reference by 0.26 px on RAFT-small's ambush_4 frame 6.
CASES = [
    ("raft-sintel.pth", "alley_2", "clean", 2),
    ("raft-sintel.pth", "cave_2", "final", 2),
    ("raft-small.pth", "bandage_1", "final", 35),
    ("raft-small.pth", "cave_2", "final", 2),
]


def _image(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()


def _official_run(shared_data: Path, weights: str) -> dict:
    runs = json.loads((shared_data.parent / "reference" / "official_raft_epe.json").read_text())["runs"]
    return next(run for run in runs if run["weights"] == weights)


@pytest.mark.parametrize(("weights", "scene", "pass_name", "frame"), CASES)
def test_released_weights_match_official_epe(
    shared_data: Path, weights: str, scene: str, pass_name: str, frame: int
) -> None:
    run = _official_run(shared_data, weights)
    key = (scene, pass_name, frame)
    expected = next(pair["epe"] for pair in run["pairs"] if (pair["scene"], pair["pass"], pair["frame"]) == key)
    root = shared_data / "sintel-mini" / "training"
    image1 = _image(root / pass_name / scene / f"frame_{frame:04d}.png")
    image2 = _image(root / pass_name / scene / f"frame_{frame + 1:04d}.png")
    flow_gt = torch.from_numpy(read_flo(root / "flow" / scene / f"frame_{frame:04d}.flo")).permute(2, 0, 1)[None]

    model = load_raft(shared_data / "weights" / weights, model_name=run["model"])
    padder = InputPadder(image1.shape)
    with torch.no_grad():
        flow_up = model(*padder.pad(image1, image2), iters=run["iters"], final_only=True)[-1]
    epe = end_point_error(padder.unpad(flow_up), flow_gt).mean().item()
    assert epe == pytest.approx(expected, abs=0.01)
