"""Peak memory of RAFT training steps, and the coefficients of :mod:`dflowgen.train.memory` fitted to them.

Each configuration runs two training steps (forward, loss, backward, AdamW) in a fresh process;
its activation memory is the peak resident size minus the size before the first step. Per model,
three supervised runs (two sizes, two GRU iteration counts) give the bytes per pixel kept once
(``a``), per pixel per iteration (``c``) and the step's fixed overhead, once the correlation
pyramid's analytic share and the optimiser's are taken off; a fourth, larger run checks the
estimate; a self-supervised run gives that mode's multiplier. The figures are the constants of
dflowgen/train/memory.py.

    python bench/train_memory.py            # CPU, 1 thread, about 6 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource

import torch

from dflowgen.models.raft import MODEL_NAMES, build_raft
from dflowgen.train.config import TrainConfig
from dflowgen.train.memory import correlation_bytes, estimate_peak_bytes, mode_passes, weight_bytes
from dflowgen.train.schedule import make_optimizer
from dflowgen.train.labelfree.self_supervised import SelfSupervisedObjective
from dflowgen.train.supervised import SupervisedObjective, apply_update


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def measure(config: TrainConfig) -> dict[str, int]:
    """Resident bytes before the first step and at the peak of two steps of ``config`` on the CPU."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_raft(config.model).train()
    optimizer = make_optimizer(model, config)
    objective = (SupervisedObjective(config, device) if config.mode == "supervised"
                 else SelfSupervisedObjective(config, device))
    height, width = config.crop_size
    image1 = torch.rand(config.batch_size, 3, height, width) * 255
    batch = {"img1": image1, "img2": torch.roll(image1, shifts=(3, -5), dims=(2, 3)),
             "flow": torch.full((config.batch_size, 2, height, width), 3.0),
             "valid": torch.ones(config.batch_size, height, width)}
    before = _rss_bytes()
    for step in range(2):
        loss, metrics = objective.loss(model, batch, step)
        apply_update(model, optimizer, loss, metrics, config.clip, keys=objective.metric_keys)
    return {"before": before, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _in_child(config: TrainConfig) -> dict[str, int]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (config,))


def _activation_bytes(run: dict[str, int], config: TrainConfig) -> int:
    """Measured step memory less the analytic correlation and optimiser shares."""
    return (run["peak"] - run["before"] - correlation_bytes(config.batch_size, config.crop_size)
            - 3 * weight_bytes(config.model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    args = parser.parse_args()
    gib = 2**30
    for model in args.models:
        configs = [TrainConfig(model=model, batch_size=2, crop_size=size, iters=iters)
                   for size, iters in (((96, 128), 2), ((192, 256), 2), ((192, 256), 6))]
        runs = [_in_child(config) for config in configs]
        measured = [_activation_bytes(run, config) for run, config in zip(runs, configs)]
        pixels = [config.batch_size * config.crop_size[0] * config.crop_size[1] for config in configs]
        per_iteration = (measured[2] - measured[1]) / (4 * pixels[1])
        per_pixel_total = (measured[1] - measured[0]) / (pixels[1] - pixels[0])  # a + 2c
        per_pixel = per_pixel_total - 2 * per_iteration
        overhead = measured[0] - pixels[0] * per_pixel_total
        print(f"{model}: a = {per_pixel:.0f} bytes/pixel, c = {per_iteration:.0f} bytes/pixel/iteration, "
              f"step overhead {overhead / 2**20:.0f} MiB; process before the first step {runs[0]['before'] / gib:.2f} GiB")
        check = TrainConfig(model=model, batch_size=4, crop_size=(256, 320), iters=4)
        run = _in_child(check)
        print(f"  check batch 4 at 256x320, 4 iterations: measured {(run['peak'] - run['before']) / gib:.3f} GiB "
              f"above the process, estimated {estimate_peak_bytes(check, include_process=False) / gib:.3f} GiB")
        selfsup = TrainConfig(model=model, mode="self-supervised", batch_size=2, crop_size=(192, 256), iters=2)
        run = _in_child(selfsup)
        ratio = (_activation_bytes(run, selfsup) - overhead) / (measured[1] - overhead)
        print(f"  self-supervised / supervised step memory at 192x256: {ratio:.2f} (memory.py uses "
              f"{mode_passes('self-supervised')})")


if __name__ == "__main__":
    main()
