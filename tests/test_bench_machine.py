"""bench/machine.py's ``run_module``: a child's own peak memory and its failures (issue #17's memory figures)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def machine(bench_script):
    return bench_script("machine")


@pytest.fixture
def holder(tmp_path, monkeypatch):
    """A module ``hold`` that touches as many MiB as its argument and exits."""
    (tmp_path / "hold.py").write_text(
        "import sys\nblock = bytearray(int(sys.argv[1]) << 20)\nblock[::4096] = b'x' * len(block[::4096])\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "hold"


def test_peak_memory_is_the_childs_own(machine, holder):
    # This test process holds torch (hundreds of MiB): a peak inherited from it would swamp both figures.
    _, small = machine.run_module(holder, ["8"])
    _, large = machine.run_module(holder, ["200"])
    assert small < 100
    assert 150 < large - small < 250


def test_a_failing_child_stops_the_benchmark_with_its_output(machine, tmp_path, monkeypatch):
    (tmp_path / "fail.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(SystemExit, match="boom[\\s\\S]*python -m fail exited with 3"):
        machine.run_module("fail", [])
