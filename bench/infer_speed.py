"""``dflowgen infer`` speed: pairs per second at Sintel size (1024×436) for RAFT, RAFT-small and FlowNetS.

Times :func:`dflowgen.infer.estimate_pairs` (padding, forward pass, crop, copy to numpy), the whole
per-pair cost of ``dflowgen infer`` except decoding and writing files, with randomly initialised
networks (speed does not depend on the weights): the median of ``--repeats`` timed pairs after a
warm-up pair. Prints the load average before and after, since the machine may be shared.

    python bench/infer_speed.py                          # CPU, 2 threads, 12 GRU iterations
    python bench/infer_speed.py --iters 32 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dflowgen.infer import estimate_pairs
from dflowgen.models.registry import MODEL_NAMES, build_model
from machine import load, peak_rss_mib, synchronize  # bench/machine.py, beside this script


def seconds_per_pair(model_name: str, size: tuple[int, int], iters: int, repeats: int, device: str) -> list[float]:
    """Wall seconds of each timed pair (a warm-up pair first, not counted)."""
    torch.manual_seed(0)
    model = build_model(model_name).to(device).eval()
    height, width = size
    frame1 = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame2 = np.roll(frame1, shift=(3, -5), axis=(0, 1))
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        next(estimate_pairs(model, [(frame1, frame2)], iters=iters))
        synchronize(torch.device(device))
        if run:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=12, help="RAFT's GRU iterations (FlowNets have none)")
    parser.add_argument("--size", type=int, nargs=2, default=(436, 1024), metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=["raft", "raft-small", "flownets"])
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    height, width = options.size
    print(f"device {options.device}, {options.threads} threads, {width}×{height}, {options.iters} iterations "
          f"(RAFT), median of {options.repeats} pairs after a warm-up; " + load())
    for model_name in options.models:
        times = seconds_per_pair(model_name, options.size, options.iters, options.repeats, options.device)
        median = statistics.median(times)
        print(f"{model_name:<10} {1 / median:6.3f} pairs/s (median {median:.2f} s per pair, "
              f"fastest {min(times):.2f} s)", flush=True)
    print(f"{load()}; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
