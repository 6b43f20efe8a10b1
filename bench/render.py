"""Renderer throughput against a RAFT-small update on the same batch (a benchmark, not a test).

    python bench/render.py                      # 512×384, 10 foreground layers, batch 8, 2 threads, CPU
    python bench/render.py --device cuda --threads 8

Prints samples/s for a forward pass and for forward+backward (every learnable parameter
wants gradients, the loss reads img1, img2 and flow), peak memory, the time of one RAFT-small
forward+backward with 4 GRU iterations on the rendered batch (what one DFlow update costs per
proxy), and the ratio renderer / RAFT-small. Times are wall-clock medians; CPU times (user +
system of this process) are printed too because they suffer less from other programs
sharing the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dflowgen.assets import load_layer_bank
from dflowgen.models.raft import build_raft
from dflowgen.render import RenderConfig, render, sample_params
from machine import load, peak_rss_mib, synchronize  # bench/machine.py, beside this script


def timed(step: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``step`` over ``repeats`` runs after one warm-up."""
    step()
    walls, cpus = [], []
    for _ in range(repeats):
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", type=int, default=10, help="foreground layers per sample (plus the background)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=4, help="RAFT-small GRU iterations")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = RenderConfig(width=args.width, height=args.height, num_layers=(args.layers, args.layers))
    bank = load_layer_bank(size=config.canvas_size).to(device)
    params = sample_params(config, bank, seed=0, indices=range(args.batch)).to(device)
    print(f"batch {args.batch}, {args.width}×{args.height}, {args.layers}+1 layers, {args.threads} threads, {device}; "
          f"{load()}")

    with torch.no_grad():
        forward = timed(lambda: render(params, bank, config), args.repeats, device)
    learnable = params.detach().requires_grad_()

    def render_update() -> object:
        out = render(learnable, bank, config)
        loss = out.img1.mean() + out.img2.mean() + (out.flow * out.valid).abs().mean()
        loss.backward()
        return out

    backward = timed(render_update, args.repeats, device)
    for name, (wall, cpu) in (("forward", forward), ("forward+backward", backward)):
        print(f"render {name:17s} {args.batch / wall:7.2f} samples/s   {wall:6.3f} s wall  {cpu:6.3f} s CPU per batch")

    out = render(params, bank, config)
    model = build_raft("raft-small").to(device).train()

    def raft_update() -> None:
        image1 = (out.img1 * 255).requires_grad_()
        image2 = (out.img2 * 255).requires_grad_()
        predictions = model(image1, image2, iters=args.iters)
        loss = sum((prediction - out.flow).abs().mean() for prediction in predictions)
        loss.backward()

    proxy = timed(raft_update, args.repeats, device)
    print(f"raft-small forward+backward ({args.iters} iters)  {proxy[0]:6.3f} s wall  {proxy[1]:6.3f} s CPU per batch")
    wall_ratio, cpu_ratio = backward[0] / proxy[0], backward[1] / proxy[1]
    print(f"ratio render/raft-small (forward+backward): {wall_ratio:.3f} wall, {cpu_ratio:.3f} CPU  (goal <= 0.10)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB (whole process, RAFT included); {load()}")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
