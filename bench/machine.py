"""What every benchmark prints beside its figures (the machine's load and this process's peak memory), and the
allocator setting every benchmark runs with: the one the ``dflowgen`` command sets (:mod:`dflowgen.allocator`)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dflowgen.allocator import keep_freed_memory

keep_freed_memory()


def load() -> str:
    """The 1-, 5- and 15-minute load averages: figures taken at a load above the core count are not comparable."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs a module as ``python -m`` would and, at exit, writes the process's VmHWM (KiB) to argv[1]. Not
# ru_maxrss: a child's ru_maxrss starts from its parent's resident size at fork (Linux carries it over exec).
_MODULE_WITH_PEAK = """
import atexit, re, runpy, sys
report = sys.argv.pop(1)
def write_peak():
    with open('/proc/self/status') as status:
        peak = re.search(r'VmHWM:\\s+(\\d+)', status.read()).group(1)
    with open(report, 'w') as out:
        out.write(peak)
atexit.register(write_peak)
sys.argv.pop(0)
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def run_module(module: str, arguments: list[str]) -> tuple[float, float]:
    """Run ``python -m module arguments`` to completion; its wall seconds and its own peak resident memory, MiB.

    Exits with the command's last output lines when it fails, so no figure is printed for a run that
    did not finish. Linux only (the peak is read from ``/proc/self/status``).
    """
    with tempfile.TemporaryDirectory() as folder:
        report, log = Path(folder) / "peak", Path(folder) / "output"
        command = [sys.executable, "-c", _MODULE_WITH_PEAK, str(report), module, *arguments]
        started = time.perf_counter()
        with log.open("w") as output:
            returncode = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        if returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
            raise SystemExit(f"{tail}bench: error: {' '.join(['python', '-m', module, *arguments])} exited with {returncode}")
        return seconds, int(report.read_text()) / 1024


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work, so that a wall-clock time covers it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flop_rate(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a ``size``×``size`` float32 matrix product on ``device`` with this process's threads.

    The rate a convolution lowered to matrix products can at best reach: the benchmarks divide a step's
    arithmetic by it to show the least time that arithmetic needs on this machine.
    """
    left, right = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds = []
    for attempt in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(left, right)
        synchronize(device)
        if attempt:  # the first product is a warm-up
            seconds.append(time.perf_counter() - started)
    return 2 * size**3 / min(seconds)


def counted_flops(step: Callable[[], object]) -> dict[str, float]:
    """Floating-point operations of one call of ``step`` by operator, as torch's ``FlopCounterMode`` counts them.

    It counts convolutions (forward and each gradient their backward computes) and matrix products, not
    element-wise work: the arithmetic that :func:`matmul_flop_rate` bounds.
    """
    with FlopCounterMode(display=False) as counter:
        step()
    return {str(operator): float(count) for operator, count in counter.get_flop_counts()["Global"].items()}
