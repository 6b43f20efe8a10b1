"""Shared fixtures: the read-only sample data beside the project, when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("DFLOWGEN_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA} (set DFLOWGEN_SHARED_DATA to run these tests)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests run on 2 cores; keep torch from oversubscribing them."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
