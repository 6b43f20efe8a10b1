"""Fuzzing the .flo, KITTI PNG, shard and manifest readers: damaged files give clean errors only.

Each target reads a few hundred mutated files in a subprocess (``fuzz_driver.py``) under a
memory limit and a timeout, so an allocation bomb or an endless loop fails the test instead
of the machine. ``DFLOWGEN_FUZZ_COUNT`` raises the count for a longer run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("fuzz_driver.py")
COUNT = int(os.environ.get("DFLOWGEN_FUZZ_COUNT", "100"))
MEMORY_MB = 512  # over what the driver holds once its imports are done
TIMEOUT_S = 40 + COUNT // 2


@pytest.mark.parametrize("target", ["flo", "kitti", "shard", "manifest"])
def test_mutated_files_give_only_one_line_errors(tmp_path, target):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run([sys.executable, str(DRIVER), target, str(COUNT), "16", str(tmp_path), str(MEMORY_MB)],
                                capture_output=True, text=True, timeout=TIMEOUT_S, env=environment)
    except subprocess.TimeoutExpired:
        left = sorted(path.name for path in tmp_path.glob("current*"))
        pytest.fail(f"the {target} readers ran past {TIMEOUT_S} s; the input being read is kept as {left} "
                    f"in {tmp_path}")
    assert result.returncode == 0, f"unclean errors:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
