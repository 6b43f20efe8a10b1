"""``make demo`` timed as a user runs it, from an installed environment (goal: at most 2 minutes on 2 idle cores).

    python bench/demo.py                      # the demo's generate and inspect, into a temporary folder
    python bench/demo.py --num-samples 16     # what the Makefile passes (DEMO_SAMPLES)

Runs the two commands of ``make demo`` — ``dflowgen generate --target demo --num-samples N --out
DIR --preview`` and ``dflowgen inspect DIR`` — each in a fresh process, as the Makefile does, and
prints each one's wall seconds and peak resident memory, and their sum against the goal. The
threads are the environment's (``make bench`` sets ``OMP_NUM_THREADS=2``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from machine import load, run_module  # bench/machine.py, beside this script

GOAL_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=16, help="samples of the demo set (the Makefile's DEMO_SAMPLES)")
    args = parser.parse_args()
    print(f"make demo: {args.num_samples} samples; {load()}")
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "demo-out")
        commands = {
            "generate": ["generate", "--target", "demo", "--num-samples", str(args.num_samples), "--out", out,
                         "--preview"],
            "inspect": ["inspect", out],
        }
        total = 0.0
        for name, arguments in commands.items():
            seconds, peak = run_module("dflowgen", arguments)
            total += seconds
            print(f"{name:9s} {seconds:6.1f} s wall, peak RSS {peak:.0f} MiB")
    verdict = "met" if total <= GOAL_SECONDS else "not met"
    print(f"make demo {total:.1f} s in all ({total / args.num_samples:.1f} s per sample); goal <= {GOAL_SECONDS:.0f} s: "
          f"{verdict}; {load()}")


if __name__ == "__main__":
    main()
