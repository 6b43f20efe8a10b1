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
    """Tests run on 2 cores; keep torch from oversubscribing them (``OMP_NUM_THREADS`` lowers it further)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS") or 2)))
    yield


@pytest.fixture(autouse=True)
def _private_weights_store(tmp_path_factory, monkeypatch):
    """Every test sees an empty weights store, never the user's (whose contents would change outcomes)."""
    monkeypatch.setenv("DFLOWGEN_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights-store")))


@pytest.fixture(autouse=True)
def _fixed_memory_budget(monkeypatch):
    """Training's memory check sees a fixed budget, not what other processes on the machine leave free now."""
    monkeypatch.setenv("DFLOWGEN_MEMORY_BUDGET", "64G")
