"""Peak memory of making a set against its size: it must not grow with the number of samples.

    python bench/set_memory.py                 # a random set and a DFlow set, each at two sizes

Each set is made by ``dflowgen generate`` in a fresh process into a temporary folder, so each
peak resident memory is that run's own:
* random mode, the reproduce-mini recipe (160×128): 64 and 512 samples;
* DFlow mode, the reproduce-mini recipe at 96×64 against the packaged demo proxies: 16 and 64
  samples (smaller, since every sample is optimised).
A set's samples are written shard by shard, so the larger set should peak within a few MiB of
the smaller one; the growth per added sample is printed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from machine import load, run_module  # bench/machine.py, beside this script

SETS = {
    "random, reproduce-mini 160×128": (["--mode", "random", "--recipe", "reproduce-mini"], (64, 512)),
    "dflow, reproduce-mini at 96×64, demo proxies": (
        ["--target", "reproduce-mini", "--size", "96x64", "--base-ckpt", "demo-base", "--target-ckpt", "demo-target"],
        (16, 64),
    ),
}


def main() -> None:
    print(f"peak RSS of `dflowgen generate` against the set's size; {load()}")
    for name, (arguments, sizes) in SETS.items():
        peaks = []
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                seconds, peak = run_module("dflowgen", ["generate", *arguments, "--num-samples", str(size),
                                                        "--out", str(Path(folder) / "set"), "--quiet"])
            peaks.append(peak)
            print(f"{name}: {size:4d} samples, peak RSS {peak:.0f} MiB ({seconds:.1f} s)")
        growth = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
        print(f"{name}: {growth * 1024:+.0f} KiB per added sample")
    print(load())


if __name__ == "__main__":
    main()
