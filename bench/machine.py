"""What every benchmark prints beside its figures: the machine's load and this process's peak memory."""

from __future__ import annotations

import os
import resource


def load() -> str:
    """The 1-, 5- and 15-minute load averages: figures taken at a load above the core count are not comparable."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
