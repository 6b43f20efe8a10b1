"""RAFT / RAFT-small inference speed: median of timed runs after a warm-up, on 1×3×384×512 images.

Each configuration runs in a fresh process so that its peak resident memory is its own.

    python bench/inference.py                      # CPU, 2 threads
    python bench/inference.py --official ~/src/RAFT/core   # the official RAFT in turn, same process
    python bench/inference.py --device cuda --mixed-precision
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch

from dflowgen.models.raft import CORR_KINDS, MODEL_NAMES, build_raft
from machine import load, peak_rss_mib, synchronize  # bench/machine.py, beside this script
from official import check_core, official_raft  # bench/official.py, beside this script


def measure(model_name: str, iters: int, options: dict) -> dict[str, float]:
    """Seconds per forward pass (median and fastest) and peak memory of one model / iteration count.

    With ``options["official"]``, also ``official_seconds`` and ``official_fastest``: the official
    RAFT, run in turn with ours (the peak memory is then of both).
    """
    torch.set_num_threads(options["threads"])
    device = torch.device(options["device"])
    torch.manual_seed(0)
    models = {"": build_raft(model_name, corr=options["corr"], mixed_precision=options["mixed_precision"])}
    if options.get("official"):
        models["official_"] = official_raft(options["official"], model_name)
    models = {prefix: model.to(device).eval() for prefix, model in models.items()}
    height, width = options["size"]
    image1 = torch.rand(1, 3, height, width, device=device) * 255
    image2 = torch.roll(image1, shifts=(3, -5), dims=(2, 3))
    times: dict[str, list[float]] = {prefix: [] for prefix in models}
    with torch.inference_mode():
        for run in range(options["repeats"] + 1):
            for prefix, model in models.items():
                synchronize(device)
                start = time.perf_counter()
                # The official RAFT's inference call is test_mode; ours returns one type and takes final_only.
                if prefix.startswith("official"):
                    model(image1, image2, iters=iters, test_mode=True)
                else:
                    model(image1, image2, iters=iters, final_only=True)
                synchronize(device)
                if run:  # the first run warms up allocator and kernels
                    times[prefix].append(time.perf_counter() - start)
    result = {"peak_rss_mib": peak_rss_mib()}
    for prefix, values in times.items():
        result.update({f"{prefix}seconds": statistics.median(values), f"{prefix}fastest": min(values)})
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def official_summary(result: dict[str, float]) -> str:
    """``; official … s (fastest …), ours/official …`` when the official RAFT was timed, else empty."""
    if "official_seconds" not in result:
        return ""
    return (f"; official {result['official_seconds']:.3f} s (fastest {result['official_fastest']:.3f} s), "
            f"ours/official {result['seconds'] / result['official_seconds']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--corr", choices=CORR_KINDS, default="all-pairs")
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 autocast (for CUDA)")
    parser.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--iters", type=int, nargs="+", default=[12, 32])
    parser.add_argument("--official", metavar="CORE", help="core/ folder of a princeton-vl/RAFT checkout: time it too")
    options = vars(parser.parse_args())
    check_core(options["official"])
    height, width = options["size"]
    print(f"device {options['device']}, {options['threads']} threads, {height}×{width}, corr {options['corr']}, "
          f"mixed precision {options['mixed_precision']}, median of {options['repeats']} after a warm-up; "
          + load())
    context = multiprocessing.get_context("spawn")
    for model_name in options["models"]:
        for iters in options["iters"]:
            with context.Pool(1) as pool:
                result = pool.apply(measure, (model_name, iters, options))
            extra = f", peak CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""
            summary = (
                f"median {result['seconds']:.3f} s (fastest {result['fastest']:.3f} s), "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB{extra}" + official_summary(result)
            )
            print(f"{model_name:<10} {iters:>2} iters: {summary}", flush=True)
    print(load())


if __name__ == "__main__":
    main()
