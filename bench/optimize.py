"""Cost of DFlow optimisation per sample (a benchmark, not a test).

    python bench/optimize.py                                   # 320×256, two RAFT-small proxies, 2 threads, CPU
    python bench/optimize.py --device cuda --size 512x384 --model raft --batch 8 --bf16
    python bench/optimize.py --device cuda --size 512x384 --model raft --find-batch
    python bench/optimize.py --recipe reproduce-mini                   # a recipe's size, proxies, copies, batch

With ``--recipe``, the render and optimiser settings and the batch are the recipe's (``--size``,
``--model``, ``--batch``, ``--copies``, ``--iters`` and ``--recipe-updates`` are then ignored).

Runs ``optimize_batch`` for a few updates on ``--batch`` samples with ``--copies`` augmented
copies each, times every update, and extrapolates to the recipe's number of updates:
seconds per optimised sample and samples per hour. The proxies are randomly initialised
(their weights do not change the cost) unless ``--base``/``--target`` name checkpoints.
It also times one forward+backward of the renderer and of the copies on the same batch,
and prints their share of an update (goal for the renderer: at most 10%). Last, it counts the
floating-point operations of one update (``torch.utils.flop_counter``: convolutions, their backward and
the matrix products) and divides them by this machine's rate for a 2048² matrix product: the least
time that arithmetic needs here, however fast everything else gets.
``--find-batch`` (CUDA) doubles the batch until it no longer fits (or exceeds ``--max-batch``) and
reports each size.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.cli.options import parse_size
from dflowgen.models.raft import build_raft
from dflowgen.optimize.copies import augment_copies, draw_copy_transforms
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.optimize.loop import evaluate, optimize_batch
from dflowgen.models.modes import freeze
from dflowgen.optimize.proxies import Proxies, load_proxy
from dflowgen.recipes import load_recipe
from dflowgen.render import RenderConfig, SceneParams, render, sample_params
from dflowgen.seeding import sample_generator
from machine import counted_flops, load, matmul_flop_rate, peak_rss_mib, synchronize  # bench/machine.py, beside this script


# The first updates of a batch run slower (oneDNN builds its kernels, the allocator grows its heap): on 2 CPU
# threads at reproduce-mini, 6.2 and 3.3 s before settling near 2.6 s.
WARM_UP_UPDATES = 2


def median_seconds(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``step`` over ``repeats`` runs after one warm-up."""
    step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_proxies(args: argparse.Namespace, device: torch.device) -> Proxies:
    def one(weights: str | None) -> torch.nn.Module:
        if weights:
            return load_proxy(weights, args.model, device, args.bf16)
        return freeze(build_raft(args.model, mixed_precision=args.bf16 and device.type == "cuda").to(device))

    return Proxies(base=one(args.base), target=one(args.target))


def time_updates(
    args: argparse.Namespace, batch: int, device: torch.device, render_config: RenderConfig, config: OptimizeConfig,
    bank: LayerBank, proxies: Proxies,
) -> tuple[list[float], list[float], float]:
    """Wall and CPU seconds of every update step of one ``optimize_batch`` call, and wall seconds of the call."""
    params = sample_params(render_config, bank, seed=0, indices=range(batch))
    stamps: list[tuple[float, float]] = []

    def on_update() -> None:
        synchronize(device)
        stamps.append((time.perf_counter(), time.process_time()))

    synchronize(device)
    start = (time.perf_counter(), time.process_time())
    optimize_batch(params, range(batch), 0, bank, render_config, config, proxies, device, on_update)
    synchronize(device)
    total = time.perf_counter() - start[0]
    pairs = list(zip([start, *stamps], stamps))
    return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs], total


def report(
    args: argparse.Namespace, batch: int, walls: list[float], cpus: list[float], total: float, recipe_updates: int
) -> float:
    """Print the figures of one batch size; return wall seconds per update (median after the warm-up updates)."""
    warm = WARM_UP_UPDATES if len(walls) > WARM_UP_UPDATES else 0
    steady = statistics.median(walls[warm:])
    steady_cpu = statistics.median(cpus[warm:])
    # An optimised sample costs its updates, one more evaluation (the last, without backward) and a render.
    tail = max(total - sum(walls), 0.0)
    per_sample = (steady * recipe_updates + tail) / batch
    print(
        f"batch {batch:3d} × {args.copies} copies: updates {', '.join(f'{u:.2f}' for u in walls)} s wall "
        f"(median {steady:.3f} s wall, {steady_cpu:.3f} s CPU; {1000 * steady / batch:.0f} ms per sample-update); "
        f"at {recipe_updates} updates: {per_sample:.1f} s per sample, {3600 / per_sample:.1f} samples/hour"
    )
    return steady


def update_flops(
    params: SceneParams, generators: list[torch.Generator], size: tuple[int, int], bank: LayerBank,
    render_config: RenderConfig, config: OptimizeConfig, proxies: Proxies,
) -> dict[str, float]:
    """Floating-point operations of one update (an evaluation and its backward) by operator."""
    transforms = draw_copy_transforms(generators, config.copies, size, config.augment).to(params.device)
    alpha = torch.full((params.batch_size,), config.alpha_for(0), device=params.device)
    return counted_flops(
        lambda: evaluate(params, transforms, alpha, bank, render_config, config, proxies).total.sum().backward()
    )


def report_arithmetic(flops: dict[str, float], update_seconds: float, device: torch.device) -> None:
    """Print an update's counted arithmetic, and the least time it needs at this machine's matrix-product rate."""
    total = sum(flops.values())
    convolutions = sum(count for operator, count in flops.items() if "convolution" in operator)
    rate = matmul_flop_rate(device)
    floor = total / rate
    print(
        f"arithmetic of an update: {total / 1e9:.1f} GFLOP ({100 * convolutions / total:.0f}% in convolutions), "
        f"{total / update_seconds / 1e9:.0f} GFLOP/s; a 2048² matrix product runs at {rate / 1e9:.0f} GFLOP/s here, "
        f"so these operations alone need {floor:.3f} s = {100 * floor / update_seconds:.0f}% of the update"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="320x256", help="WIDTHxHEIGHT of the rendered samples")
    parser.add_argument("--model", default="raft-small", choices=["raft", "raft-small"])
    parser.add_argument("--base", help="base proxy checkpoint (default: random weights)")
    parser.add_argument("--target", help="target proxy checkpoint (default: random weights)")
    parser.add_argument("--batch", type=int, default=1, help="samples optimised together")
    parser.add_argument("--copies", type=int, default=OptimizeConfig().copies)
    parser.add_argument("--iters", type=int, default=4, help="proxy GRU iterations (the authors' scripts: 4)")
    parser.add_argument("--updates", type=int, default=5, help=f"updates run; the first {WARM_UP_UPDATES} are a warm-up")
    parser.add_argument("--recipe-updates", type=int, default=OptimizeConfig().updates, help="updates extrapolated to")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the proxies (CUDA only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--find-batch", action="store_true", help="double the batch until it does not fit (CUDA)")
    parser.add_argument("--max-batch", type=int, help="largest batch --find-batch tries (default: until out of memory)")
    parser.add_argument("--recipe", help="take the render and optimiser settings and the batch from this recipe")
    args = parser.parse_args()
    if args.find_batch and args.device == "cpu":
        parser.error("--find-batch needs a CUDA device")
    if args.recipe:
        recipe = load_recipe(args.recipe)
        args.size = f"{recipe.render.width}x{recipe.render.height}"
        args.model, args.batch = recipe.optimize.base_model, recipe.generate.batch_size
        args.copies, args.iters, args.recipe_updates = (recipe.optimize.copies, recipe.optimize.proxy_iters,
                                                        recipe.optimize.updates)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width, height = parse_size(args.size)
    if args.recipe:
        render_config = recipe.render
        config = dataclasses.replace(recipe.optimize, updates=args.updates, mixed_precision=args.bf16)
    else:
        # The paper's 512×384 ranges in pixels, scaled to this size (like recipes/demo.toml).
        render_config = RenderConfig(width=width, height=height, canvas_margin=round(100 * width / 512))
        config = OptimizeConfig(
            base_model=args.model, target_model=args.model, proxy_iters=args.iters, copies=args.copies,
            updates=args.updates, mixed_precision=args.bf16,
        )
    bank = load_layer_bank(size=render_config.canvas_size).to(device)
    proxies = make_proxies(args, device)
    print(
        f"{args.recipe + ': ' if args.recipe else ''}{width}×{height}, proxies 2 × {args.model} ({args.iters} iters{', bf16' if args.bf16 else ''}), "
        f"{args.copies} copies, {device}, {args.threads} threads; timing {args.updates} updates; {load()}"
    )

    steady = report(args, args.batch, *time_updates(args, args.batch, device, render_config, config, bank, proxies),
                    args.recipe_updates)

    params = sample_params(render_config, bank, seed=0, indices=range(args.batch)).to(device).requires_grad_()
    generators = [sample_generator(0, index, "optimize") for index in range(args.batch)]

    def render_step() -> None:
        out = render(params, bank, render_config)
        (out.img1.mean() + out.img2.mean() + (out.flow * out.valid).abs().mean()).backward()

    def copies_step() -> None:
        out = render(params.detach(), bank, render_config)
        inputs = [t.detach().requires_grad_() for t in (out.img1, out.img2, out.flow)]
        transforms = draw_copy_transforms(generators, args.copies, (width, height), config.augment).to(device)
        copies = augment_copies(*inputs, out.valid, transforms)
        (copies.img1.mean() + copies.img2.mean() + (copies.flow * copies.valid).abs().mean()).backward()

    render_seconds = median_seconds(render_step, args.repeats, device)
    with torch.no_grad():
        render_forward = median_seconds(lambda: render(params.detach(), bank, render_config), args.repeats, device)
    copies_seconds = median_seconds(copies_step, args.repeats, device) - render_forward
    print(f"renderer forward+backward {render_seconds:.3f} s = {100 * render_seconds / steady:.1f}% of an update "
          f"(goal <= 10%); copies forward+backward {copies_seconds:.3f} s = {100 * copies_seconds / steady:.1f}%")
    report_arithmetic(update_flops(params, generators, (width, height), bank, render_config, config, proxies),
                      steady, device)
    print(f"peak RSS {peak_rss_mib():.0f} MiB; {load()}")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")

    if args.find_batch:
        batch = args.batch * 2
        while args.max_batch is None or batch <= args.max_batch:
            torch.cuda.empty_cache()
            try:
                report(args, batch, *time_updates(args, batch, device, render_config, config, bank, proxies),
                       args.recipe_updates)
            except torch.cuda.OutOfMemoryError:
                print(f"batch {batch}: out of memory")
                break
            batch *= 2
        else:
            print(f"batch {batch}: not tried (--max-batch {args.max_batch})")


if __name__ == "__main__":
    main()
