"""Shared fixtures: the read-only sample data beside the project, when it is there, and the benchmark scripts."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
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


@pytest.fixture(scope="module")
def bench_script():
    """Loads ``bench/NAME.py`` as a module: ``bench_script("gpu_check")``.

    bench/ is not a package and its scripts import each other by bare name, so bench/ is on ``sys.path``
    while the test module runs; each script is in ``sys.modules`` too, as dataclasses need.
    """
    loaded = []

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        loaded.append(spec.name)
        spec.loader.exec_module(module)
        return module

    sys.path.insert(0, str(BENCH))
    yield load
    sys.path.remove(str(BENCH))
    for name in loaded:
        del sys.modules[name]
