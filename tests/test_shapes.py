"""Shape checks at the public entry points of the tensor code: a ValueError naming the argument."""

from __future__ import annotations

import pytest
import torch

from dflowgen.losses import SelfSupervisedLossConfig, self_supervised_terms, sequence_loss
from dflowgen.losses.selfsup import flow_warp
from dflowgen.models.raft import build_raft
from dflowgen.shapes import check_shape


def test_check_shape_binds_letters_across_arguments():
    sizes = check_shape("img1", torch.zeros(2, 3, 8, 16), "B×3×H×W")
    assert sizes == {"B": 2, "H": 8, "W": 16}
    assert check_shape("any", torch.zeros(2, 5, 8, 16), "B×*×H×W", sizes) == sizes
    with pytest.raises(ValueError, match=r"img2 must be B×3×H×W with B=2, H=8, W=16, got shape \(2, 3, 8, 8\)"):
        check_shape("img2", torch.zeros(2, 3, 8, 8), "B×3×H×W", sizes)
    with pytest.raises(ValueError, match=r"flow must be B×2×H×W, got shape \(2, 8, 8\)"):
        check_shape("flow", torch.zeros(2, 8, 8), "B×2×H×W")


def test_losses_name_the_argument_with_the_wrong_shape():
    flow = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="valid must be B×H×W"):
        sequence_loss([flow], flow, valid=torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"flow_preds\[1\] must be B×2×H×W"):
        sequence_loss([flow, torch.zeros(2, 2, 4, 4)], flow)
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="flow_bw must be B×2×H×W"):
        self_supervised_terms(images, images, flow, torch.zeros(1, 2, 8, 8), flow, flow, SelfSupervisedLossConfig())
    with pytest.raises(ValueError, match="image must be B×C×H×W"):
        flow_warp(torch.rand(2, 3, 4, 4), flow)


def test_raft_names_the_image_with_the_wrong_shape():
    model = build_raft("raft-small")
    with pytest.raises(ValueError, match="image2 must be B×3×H×W with B=1, H=64, W=64"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 32), iters=1)
