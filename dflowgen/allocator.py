"""Keep freed CPU memory inside the process, so that large tensors reuse pages instead of faulting in new ones.

glibc serves every allocation above its mmap threshold (32 MiB at most) with a fresh ``mmap`` and hands it
back to the kernel on ``free``. A RAFT step allocates and frees the same large activations at every
iteration, so each step faults every page of them in again, and the kernel zeroes each page first. On
the 2-core VM of 2026-12-08, a RAFT-small forward+backward at 512×384, batch 8, took 17-23 s with 1.6-2.5
million page faults, and 10.4 s with none once freed memory was kept (counted with ``getrusage``; the README's
speed section has the figures). Allocators such as jemalloc and tcmalloc avoid this too; this needs nothing
installed.

The cost: memory freed by the process is not returned to the system until it exits, so the resident size
stays at its high-water mark, and the heap's holes raise that mark (on the step above, 5.2 → 6.4 GiB; at
reproduce-mini DFlow, 2.2 → 2.4 GiB).
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it accepts.
_KEEP_UP_TO_BYTES = 2**31 - 1

OPT_OUT_VARIABLE = "DFLOWGEN_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep up to 2 GiB of its freed top; True if it took effect.

    Does nothing (False) where the C library has no ``mallopt`` (it is glibc's), or when the
    environment variable ``DFLOWGEN_KEEP_FREED_MEMORY`` is ``0``. Affects allocations made after the
    call, in this process and in processes it forks.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success and 0 on error.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO_BYTES))
