"""Training-step speed of RAFT and RAFT-small, the trainer's overhead, augmentation cost, and inference speed.

Median (and fastest) of timed runs after a warm-up; each configuration runs in a fresh process so
its peak resident memory is its own. The load average is printed before and after: on a shared
machine, other processes' load slows 2-thread runs far more than their share of the CPU (each
parallel region waits for the thread that was descheduled), so compare figures taken at low load.

* ``train_step``: :func:`dflowgen.train.trainer.train_step` (forward, sequence loss, backward,
  gradient clipping, AdamW) on a batch of 2 at 256×320 with 12 iterations;
* ``bare step``: the same model forward/backward and AdamW step without the trainer around it,
  so the difference is what the training loop adds; its counted arithmetic (convolutions and matrix
  products, ``machine.counted_flops``), and the least time that needs at this machine's matrix-product rate;
* ``augment``: :class:`~dflowgen.train.data.TrainingMix` making one batch from Sintel-sized
  (436×1024) pairs — done by DataLoader workers in parallel with the step;
* inference 1×3×384×512 with 12 and 32 iterations (``bench/inference.py``);
* with ``--official CORE``, the official RAFT's bare step and inference, timed in turn with ours
  in the same process (:mod:`official`), so the comparison holds on a machine of any speed.

    python bench/train_step.py                 # CPU, 2 threads
    python bench/train_step.py --official ~/src/RAFT/core
    python bench/train_step.py --device cuda
    python bench/train_step.py --device cuda --mixed-precision     # ours under bf16 autocast
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np
import torch

from dflowgen.data.sample import FlowPair
from dflowgen.losses import sequence_loss
from dflowgen.models.raft import MODEL_NAMES, build_raft
from dflowgen.train.config import TrainConfig
from dflowgen.train.data import DataSource, TrainingMix
from dflowgen.train.schedule import make_optimizer
from dflowgen.train.supervised import train_step
from official import check_core, official_raft  # bench/official.py, beside this script
from machine import counted_flops, load, matmul_flop_rate, peak_rss_mib, synchronize  # bench/machine.py, beside this script


def _timed(functions: dict[str, object], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` calls after one warm-up call each.

    Also ``<name>_fastest``, the fastest call. The functions take turns, so a neighbour's load
    on a shared machine weighs on all alike.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    for run in range(repeats + 1):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            if run:
                times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(values) for name, values in times.items()}
    result.update({f"{name}_fastest": min(values) for name, values in times.items()})
    return result


def measure_step(model_name: str, options: dict) -> dict[str, float]:
    """Seconds per training step through the trainer and bare, and the peak memory."""
    torch.set_num_threads(options["threads"])
    device = torch.device(options["device"])
    height, width = options["size"]
    config = TrainConfig(model=model_name, batch_size=options["batch"], crop_size=(height, width), iters=options["iters"],
                         mixed_precision=options["mixed_precision"])
    torch.manual_seed(0)
    # As the trainer builds it: bf16 autocast only on CUDA.
    model = build_raft(model_name, mixed_precision=config.mixed_precision and device.type == "cuda").to(device).train()
    optimizer = make_optimizer(model, config)
    image1 = torch.rand(config.batch_size, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    batch = {"img1": image1, "img2": torch.roll(image1, shifts=(3, -5), dims=(2, 3)),
             "flow": torch.full((config.batch_size, 2, height, width), 3.0), "valid": torch.ones(config.batch_size, height, width)}
    on_device = {key: value.to(device) for key, value in batch.items()}

    def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        loss, _ = sequence_loss(model(on_device["img1"], on_device["img2"], iters=config.iters), on_device["flow"],
                                on_device["valid"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    functions = {"train_step": lambda: train_step(model, optimizer, batch, config, device),
                 "bare_step": lambda: bare_step(model, optimizer)}
    if options["official"]:
        official = official_raft(options["official"], model_name).to(device).train()
        official_optimizer = make_optimizer(official, config)
        functions["official_step"] = lambda: bare_step(official, official_optimizer)
    result = _timed(functions, options["repeats"], device)
    result["peak_rss_mib"] = peak_rss_mib()
    # After the timing: counting runs one more step of each.
    result["gflop"] = sum(counted_flops(lambda: bare_step(model, optimizer)).values()) / 1e9
    if options["official"]:
        result["official_gflop"] = sum(counted_flops(lambda: bare_step(official, official_optimizer)).values()) / 1e9
    result["matmul_gflops"] = matmul_flop_rate(device) / 1e9
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure_augment(options: dict) -> float:
    """Seconds to make one augmented batch from 436×1024 pairs, on one thread (as a DataLoader worker)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pairs = [FlowPair(rng.integers(0, 256, (436, 1024, 3), dtype=np.uint8), rng.integers(0, 256, (436, 1024, 3), dtype=np.uint8),
                      rng.normal(0, 5, (436, 1024, 2)).astype(np.float32), None, f"pair{i}") for i in range(4)]
    config = TrainConfig(crop_size=tuple(options["size"]))
    mix = TrainingMix([DataSource(pairs)], config.crop_size, config.augment, seed=0)
    counter = iter(range(10**6))

    def make_batch() -> None:
        for _ in range(options["batch"]):
            position = next(counter)
            mix[(position, position % len(mix))]

    return _timed({"augment": make_batch}, options["repeats"], torch.device("cpu"))["augment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--no-inference", dest="inference", action="store_false", help="skip bench/inference.py's figures")
    parser.add_argument("--official", metavar="CORE", help="core/ folder of a princeton-vl/RAFT checkout: time it too")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="bf16 autocast for our training steps (CUDA only; the official RAFT and inference stay float32)")
    options = vars(parser.parse_args())
    check_core(options["official"])
    height, width = options["size"]
    bf16 = options["mixed_precision"] and torch.device(options["device"]).type == "cuda"
    print(f"device {options['device']}, {options['threads']} threads, batch {options['batch']} at {height}×{width}, "
          f"{options['iters']} iters, AdamW{', bf16 autocast' if bf16 else ''}; "
          f"median of {options['repeats']} after a warm-up; {load()}")
    context = multiprocessing.get_context("spawn")
    for model_name in options["models"]:
        with context.Pool(1) as pool:
            result = pool.apply(measure_step, (model_name, options))
        overhead = result["train_step"] - result["bare_step"]
        extra = f", peak CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""
        print(f"{model_name:<10} train_step {result['train_step']:.3f} s (fastest {result['train_step_fastest']:.3f} s; "
              f"bare {result['bare_step']:.3f} s, trainer overhead {overhead * 1000:+.0f} ms), "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB{extra}", flush=True)
        floor = result["gflop"] / result["matmul_gflops"]
        print(f"{'':<10} arithmetic {result['gflop']:.1f} GFLOP per step"
              + (f" (official {result['official_gflop']:.1f})" if "official_gflop" in result else "")
              + f"; at this machine's 2048² matmul rate of {result['matmul_gflops']:.0f} GFLOP/s it needs {floor:.3f} s"
              f" = {100 * floor / result['bare_step']:.0f}% of our bare step", flush=True)
        if "official_step" in result:
            print(f"{'':<10} official bare step {result['official_step']:.3f} s (fastest {result['official_step_fastest']:.3f} s): "
                  f"ours/official {result['bare_step'] / result['official_step']:.2f}", flush=True)
    with context.Pool(1) as pool:
        seconds = pool.apply(measure_augment, (options,))
    print(f"augment    {options['batch']} pairs 436×1024 → {height}×{width}: {seconds:.3f} s on 1 thread", flush=True)
    if options["inference"]:
        from inference import measure, official_summary  # bench/inference.py, beside this script

        inference_options = {"threads": options["threads"], "device": options["device"], "corr": "all-pairs",
                              "mixed_precision": False, "size": (384, 512), "repeats": options["repeats"],
                             "official": options["official"]}
        for model_name in options["models"]:
            for iters in (12, 32):
                with context.Pool(1) as pool:
                    result = pool.apply(measure, (model_name, iters, inference_options))
                print(f"{model_name:<10} inference 1×384×512, {iters:>2} iters: {result['seconds']:.3f} s "
                      f"(fastest {result['fastest']:.3f} s), peak RSS {result['peak_rss_mib']:.0f} MiB"
                      + official_summary(result), flush=True)
    print(load())


if __name__ == "__main__":
    main()
