"""Cost of one search candidate — render M samples, train K steps, score P target pairs — and how it splits.

    python bench/search.py                        # search-tiny whole, search-cpu by stages; 2 threads, CPU
    python bench/search.py --device cuda --threads 8 --recipe search-cpu

``search-tiny`` candidates are run whole (:func:`dflowgen.search.candidate.score_candidate`,
median of a few). A realistic recipe costs minutes per candidate on CPU, so it is measured
stage by stage on a fraction and extrapolated linearly: rendering ``m`` of the M samples,
training a few steps (the median step time from the trainer's log is the per-step cost;
the rest of the call is the fixed cost of building the network, its optimiser and
checkpoint), scoring ``p`` of the P target
pairs. The target is the shared unlabelled Sintel frames when present (else synthetic
1024×436 frames), resized by the recipe's ``search.target_scale``. Times are wall-clock
seconds (CPU seconds of this process beside them: other programs sharing the machine
inflate wall time, not CPU time). Optuna's bookkeeping (about 10 ms per λ parameter with
SQLite) comes on top.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dflowgen.assets import load_layer_bank
from dflowgen.recipes import load_recipe, with_overrides
from dflowgen.models.raft import load_raft
from dflowgen.search.candidate import render_set, score_candidate
from dflowgen.search.target import load_target, score_model
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME, train
from machine import load, peak_rss_mib, synchronize  # bench/machine.py, beside this script

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_FRAMES = SHARED_DATA / "sintel-unlabeled" / "training" / "final" / "demo"


def timed(step: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(wall, CPU) seconds of one call of ``step``, and its result."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = step()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def synthetic_frames(folder: Path, count: int, width: int, height: int) -> str:
    """``count`` frames of a texture moving 2 px right per frame; the spec of their folder."""
    folder.mkdir(parents=True, exist_ok=True)
    texture = np.random.default_rng(0).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(texture).resize((width + 2 * count + 16, height + 16), Image.BICUBIC))
    for index in range(count):
        Image.fromarray(big[8:8 + height, 2 * index: 2 * index + width]).save(folder / f"{index:03d}.png")
    return f"frames:{folder}"


def bench_whole(recipe_name: str, target_spec: str, repeats: int, device: torch.device) -> None:
    recipe = load_recipe(recipe_name)
    recipe, search = recipe, recipe.search
    target = load_target(target_spec, search.target_pairs, search.target_scale)
    bank = load_layer_bank(size=recipe.render.canvas_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32×32 tensors gain nothing from more threads, and lose to their barriers
    score_candidate(recipe, search, target, bank, None, device)  # warm-up: first-use imports and allocations
    runs = [score_candidate(recipe, search, target, bank, None, device).seconds for _ in range(repeats)]
    torch.set_num_threads(threads)
    split = {stage: statistics.median(run[stage] for run in runs) for stage in ("render", "train", "score", "total")}
    print(f"{recipe_name}: {recipe.render.width}×{recipe.render.height}, M={search.num_samples} samples, "
          f"K={recipe.train.num_steps} steps of {recipe.train.model} (batch {recipe.train.batch_size}, "
          f"{recipe.train.iters} iterations), P={len(target.pairs)} target pairs "
          f"{tuple(target.pairs[0].img1.shape[-2:])}; median of {repeats} whole candidates, 1 thread")
    _print_split(split)


def bench_staged(recipe_name: str, target_spec: str, device: torch.device, render_samples: int, train_steps: int,
                 score_pairs: int) -> None:
    recipe = load_recipe(recipe_name)
    recipe, search = recipe, recipe.search
    bank = load_layer_bank(size=recipe.render.canvas_size)
    m = min(render_samples, search.num_samples)
    render_set(recipe, bank, min(2, m), device)
    render_wall, render_cpu, dataset = timed(lambda: render_set(recipe, bank, m, device), device)

    K = recipe.train.num_steps
    short = with_overrides(recipe, {"train.num_steps": train_steps, "train.log_every": 1})
    with tempfile.TemporaryDirectory() as scratch:
        train_wall, train_cpu, result = timed(
            lambda: train(short.train, [DataSource(dataset)], scratch, device=str(device), quiet=True), device)
        steps = [json.loads(line) for line in (Path(scratch) / LOG_NAME).read_text().splitlines()]
        model = load_raft(result.checkpoint, model_name=recipe.train.model, map_location=device)
    step_seconds = [record["time"] for record in steps]
    per_step = statistics.median(step_seconds[1:])
    fixed = train_wall - sum(step_seconds)

    target = load_target(target_spec, score_pairs, search.target_scale)
    P = search.target_pairs or score_pairs
    score_model(model, load_target(target_spec, 1, search.target_scale), search.eval_iters, search.selfsup, device)
    score_wall, score_cpu, _ = timed(lambda: score_model(model, target, search.eval_iters, search.selfsup, device),
                                     device)
    per_pair = len(target.pairs)
    split = {
        "render": render_wall / m * search.num_samples,
        "train": fixed + K * per_step,
        "score": score_wall / per_pair * P,
    }
    split["total"] = sum(split.values())
    print(f"{recipe_name}: {recipe.render.width}×{recipe.render.height}, M={search.num_samples} samples, "
          f"K={K} steps of {recipe.train.model} (batch {recipe.train.batch_size}, crop "
          f"{list(recipe.train.crop_size)}, {recipe.train.iters} iterations), P={P} target pairs "
          f"{tuple(target.pairs[0].img1.shape[-2:])}, {search.eval_iters} iterations")
    print(f"  measured: render {m} samples {render_wall:.2f} s ({render_cpu:.2f} CPU s); train {train_steps} steps "
          f"{train_wall:.1f} s ({train_cpu:.1f} CPU s): median step {per_step:.2f} s (first {step_seconds[0]:.2f} s), "
          f"fixed {fixed:.1f} s; score {per_pair} pairs {score_wall:.2f} s ({score_cpu:.2f} CPU s)")
    print("  extrapolated to one candidate:")
    _print_split(split)


def _print_split(split: dict[str, float]) -> None:
    total = split["total"]
    parts = ", ".join(f"{stage} {split[stage]:.2f} s ({100 * split[stage] / total:.0f} %)"
                      for stage in ("render", "train", "score"))
    print(f"  per candidate {total:.2f} s: {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", default="search-cpu", help="the realistic search recipe, measured by stages")
    parser.add_argument("--target", default=None, help="target data spec (default: shared Sintel frames)")
    parser.add_argument("--repeats", type=int, default=3, help="whole search-tiny candidates timed")
    parser.add_argument("--render-samples", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=5, help="steps timed (the first is left out of the median)")
    parser.add_argument("--score-pairs", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        tiny_target = synthetic_frames(Path(scratch) / "tiny", 4, 32, 32)
        target = args.target or (f"frames:{SHARED_FRAMES}" if SHARED_FRAMES.is_dir()
                                 else synthetic_frames(Path(scratch) / "frames", 4, 1024, 436))
        print(f"device {device}, {args.threads} threads; tiny target: 32×32 synthetic frames; "
              f"realistic target: {target}; {load()}")
        bench_whole("search-tiny", tiny_target, args.repeats, device)
        bench_staged(args.recipe, target, device, args.render_samples, args.train_steps, args.score_pairs)
        print(f"peak RSS {peak_rss_mib():.0f} MiB; {load()}")


if __name__ == "__main__":
    main()
