"""CUDA and bf16 readiness checks (issue #17): the same computations on CUDA and on the CPU, compared.

    python bench/gpu_check.py                                # CUDA against the CPU, 256×192
    python bench/gpu_check.py --device cpu --size 64x48      # the CPU against itself (what the test runs)

Four checks, each run from the same inputs on ``--device`` and on ``--reference-device``:

* ``render``: :func:`dflowgen.render.render` of 2 samples drawn by ``sample_params``, and the
  gradients of a fixed scalar loss (seeded random weights on img1, img2 and the valid flow) with
  respect to every learnable field of θ;
* ``dflow``: one update of :func:`dflowgen.optimize.loop.optimize_batch` (2 samples, 2 copies,
  two seeded random RAFT-small proxies, 4 GRU iterations, ``keep_best`` off so the kept iterate is θ₁);
* ``train``: one :func:`dflowgen.train.supervised.train_step` (AdamW, clipping) of a seeded
  RAFT-small on the rendered batch, 4 GRU iterations;
* ``eval``: :func:`dflowgen.evaluate.evaluate` of the packaged ``demo-base`` RAFT-small (4 iterations)
  on the 2 rendered pairs. A trained network, because a random one predicts almost no motion, so its
  AEPE is the mean ground-truth speed whatever it computes.

``dflow-bf16`` and ``train-bf16`` compare bf16 autocast with float32, both on ``--device``; they run
only where it is CUDA (the project honours bf16 only there) and print ``SKIP`` otherwise. Every
compared figure prints ``PASS|FAIL name: measured vs tolerance (what)``; the exit status is 1 when
any fails. TF32 is switched off, so the float32 figures compare float32 with float32.

Why each tolerance is what it is. Each was set from what float32 rounding alone does to the same
computation on the CPU: float32 against float64 for the renderer; for the networks (whose
correlation is float32 only) a change of convolution implementation (oneDNN on/off) and a 1-ulp
random perturbation of θ or of the images; and CPU bf16 autocast standing in for CUDA's for the
bf16 figures (so their margins are the least certain). CUDA and
CPU float32 results differ by rounding of the same kind, so each tolerance is about 10× (at least
3×) the largest figure measured that way at sizes from 64×48 to 512×384 over 2–6 seeds, and
well below what a wrong kernel gives (a wrong sign, scale or offset moves these figures to
order 1):

* render images: mean |Δ| ≤ 3e-4 (measured ≤ 3e-5) and at most 0.1% of pixels off by more than
  0.02 (measured ≤ 0.027%, none at 256×192). Single pixels legitimately differ by up to ~0.07:
  textures are read at atlas coordinates in the tens of thousands of pixels, where float32 steps
  are ~4e-3 px, and that step lands on sharp texture and mask edges.
* render flow: at most 0.1% of the pixels valid on both devices off by more than 1e-3 px
  (measured ≤ 0.0013%; elsewhere ≤ 5e-4 px). A pixel split about 50/50 between two layers takes
  the translation of whichever holds more than half, so a rounding flip moves its flow by the
  layers' difference (up to ~100 px): a maximum would fail on healthy code.
* render valid and occ (thresholded labels): at most 0.1% of pixels differ (measured ≤ 0.002%).
* render gradients: relative L2 error ≤ 1e-2 over all fields together (measured ≤ 1.5e-3) and
  ≤ 0.2 for the worst single field (measured ≤ 0.036; the layer warp fields collect the texture
  edge rounding above). A field whose gradient is under a millionth of the whole is measured
  against that millionth: it is rounding residue, exactly zero on one device and not on the other.
* dflow: losses at θ₀ (a forward pass) relative error ≤ 1e-4 (measured ≤ 2.4e-7); losses at θ₁
  ≤ 2e-3 (measured ≤ 2.1e-4); at most 1% of θ's elements step in different directions (measured
  ≤ 0.26%). θ₁ itself is not compared by norm: Adam's first step is lr·g/(|g|+ε) ≈ ±lr whatever
  |g|, so an element whose gradient is rounding noise moves by a full ±lr (1 px for the warp
  fields) either way, and a 1-ulp change of θ already changes the step by 10–18% in L2. Steps
  under a millionth of the largest count as no move.
  bf16: θ₀ losses ≤ 1e-2 (measured ≤ 1e-4), θ₁ losses ≤ 0.2 (measured ≤ 0.059; more steps flip,
  each by ±lr), steps in different directions ≤ 25% (measured ≤ 7.8%; unrelated steps give 50%).
* train: loss relative error ≤ 1e-4 (measured ≤ 1.1e-7); the weight update ΔW relative L2 error
  ≤ 5e-2 (measured ≤ 6.1e-3; the same Adam sign flips of rounding-noise gradients). The updated
  weights are W₀ + ΔW from the same W₀, so comparing ΔW is the strict form of comparing them
  (their own relative error was ≤ 4e-5). bf16: loss ≤ 1e-2 (measured ≤ 8e-5), ΔW ≤ 0.6 (measured
  ≤ 0.18; unrelated updates give √2, a skipped one 1).
* eval: per-pair EPE relative error ≤ 1e-3 (measured ≤ 1e-6); the inputs are the same uint8 pairs.

At the end it prints the peak resident memory and, for each CUDA device used, its peak allocated memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.cli.options import parse_size
from dflowgen.data.sample import FlowPair
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.models.modes import freeze
from dflowgen.models.raft import build_raft
from dflowgen.models.registry import load_model
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.optimize.loop import OptimizedBatch, optimize_batch
from dflowgen.optimize.proxies import Proxies
from dflowgen.render import LEARNABLE_GROUPS, RenderConfig, RenderOutput, SceneParams, render, sample_params
from dflowgen.train.config import TrainConfig
from dflowgen.train.schedule import make_optimizer
from dflowgen.train.supervised import train_step
from machine import load, peak_rss_mib  # bench/machine.py, beside this script

BATCH = 2
ITERS = 4
COPIES = 2
LEARNABLE = tuple(name for names in LEARNABLE_GROUPS.values() for name in names)


@dataclass(frozen=True)
class Figure:
    """One compared figure: it passes when ``measured`` is finite and at most ``tolerance``."""

    name: str
    measured: float
    tolerance: float
    what: str

    @property
    def passed(self) -> bool:
        return math.isfinite(self.measured) and self.measured <= self.tolerance

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.name}: {self.measured:.3g} vs {self.tolerance:.3g} ({self.what})"


@dataclass(frozen=True)
class StepTolerances:
    """Tolerances of one optimisation step compared across devices or precisions (see the module docstring)."""

    loss: float  # relative error of the losses before the step (a forward pass)
    updated: float  # dflow: relative error of the losses after the step; train: relative L2 error of ΔW
    signs: float = 0.0  # dflow: share of θ's elements stepping in different directions


DFLOW_FP32 = StepTolerances(loss=1e-4, updated=2e-3, signs=1e-2)
DFLOW_BF16 = StepTolerances(loss=1e-2, updated=0.2, signs=0.25)
TRAIN_FP32 = StepTolerances(loss=1e-4, updated=5e-2)
TRAIN_BF16 = StepTolerances(loss=1e-2, updated=0.6)
IMAGE_MEAN = 3e-4  # mean |Δ| of img1 and of img2, in [0, 1]
IMAGE_OFF, FLOW_OFF_PX = 0.02, 1e-3  # a pixel is off when it differs by more
SHARE = 1e-3  # the largest share of pixels off, or labelled differently (valid, occ)
GRAD_ALL, GRAD_FIELD = 1e-2, 0.2  # relative L2 error of dloss/dθ: all fields together, the worst single field
EVAL_EPE = 1e-3  # relative error of each pair's EPE


# ---- measures: pure functions of two results, computed in float64 on the CPU -------------------------------------


def relative_error(result: torch.Tensor, reference: torch.Tensor, floor: float = 0.0) -> float:
    """‖result − reference‖₂ / max(‖reference‖₂, ``floor``) (0 when both are zero, inf when only the reference is)."""
    result, reference = result.detach().double().cpu(), reference.detach().double().cpu()
    error, scale = (result - reference).norm().item(), max(reference.norm().item(), floor)
    if scale == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / scale


def max_relative_error(result: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """The largest elementwise |result − reference| / |reference| (for per-sample losses)."""
    result, reference = np.asarray(result, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(result - reference) / np.abs(reference)
    return float(np.nan_to_num(ratio, nan=math.inf).max())


def share_off(
    result: torch.Tensor, reference: torch.Tensor, threshold: float, where: torch.Tensor | None = None
) -> float:
    """Share of the pixels where any channel of two B×C×H×W maps differs by more than ``threshold`` (NaN: off).

    ``where`` (B×H×W bool) restricts the pixels counted.
    """
    off = ~((result.double().cpu() - reference.double().cpu()).abs() <= threshold).all(dim=1)
    if where is not None:
        off = off[where.cpu()]
    return off.double().mean().item() if off.numel() else 0.0


def mean_abs_difference(result: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |result − reference| over all elements."""
    return (result.double().cpu() - reference.double().cpu()).abs().mean().item()


def sign_disagreement(result: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of the elements that moved in either step (1-D) whose steps have different signs.

    A step under a millionth of the reference's largest is no move: a gradient that is exactly zero
    on one device may be a rounding residue on the other.
    """
    floor = 1e-6 * reference.abs().max()
    moved = (result.abs() > floor) | (reference.abs() > floor)
    if not moved.any():
        return 0.0
    return (torch.sign(result) != torch.sign(reference))[moved].double().mean().item()


# ---- render ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """A render (on the CPU) and the gradients of :func:`render_loss` by learnable field of θ (zeros where unused)."""

    output: RenderOutput
    gradients: dict[str, torch.Tensor]


def render_loss(output: RenderOutput, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ mean(w·x) over x = img1, img2 (B×3×H×W) and the valid flow (B×2×H×W).

    Fixed random weights, not plain means: every pixel's gradient counts, and none cancels by symmetry.
    """
    terms = (output.img1, output.img2, output.flow * output.valid)
    return sum((weight * term).mean() for weight, term in zip(weights, terms, strict=True))


def loss_weights(config: RenderConfig, seed: int = 1) -> list[torch.Tensor]:
    """The weights of :func:`render_loss`: B×3×H×W, B×3×H×W, B×2×H×W uniform in [0, 1), on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, config.height, config.width)
    return [torch.rand(shape[0], channels, *shape[1:], generator=generator) for channels in (3, 3, 2)]


def run_render(params: SceneParams, bank: LayerBank, config: RenderConfig, device: torch.device) -> RenderResult:
    """Render θ = ``params`` (B samples) on ``device`` and take dloss/dθ of :func:`render_loss`."""
    theta = params.to(device).requires_grad_()
    output = render(theta, bank.to(device), config)
    weights = [weight.to(device) for weight in loss_weights(config)]
    fields = [getattr(theta, name) for name in LEARNABLE]
    gradients = torch.autograd.grad(render_loss(output, weights), fields, allow_unused=True)
    effects = {name: flags.cpu() for name, flags in output.effects.items()}
    cpu = RenderOutput(output.img1.detach().cpu(), output.img2.detach().cpu(), output.flow.detach().cpu(),
                       output.valid.cpu(), output.occ.cpu(), effects)
    return RenderResult(cpu, {name: (torch.zeros_like(field) if grad is None else grad).cpu()
                              for name, field, grad in zip(LEARNABLE, fields, gradients, strict=True)})


def compare_render(result: RenderResult, reference: RenderResult) -> list[Figure]:
    """Images (mean and outliers), flow where both are valid (outliers), labels, and gradients."""
    out, ref = result.output, reference.output
    both_valid = ((out.valid > 0.5) & (ref.valid > 0.5))[:, 0]
    figures = []
    for name in ("img1", "img2"):
        a, b = getattr(out, name), getattr(ref, name)
        figures += [
            Figure(f"render.{name}.mean", mean_abs_difference(a, b), IMAGE_MEAN, "mean |Δ|, images in [0, 1]"),
            Figure(f"render.{name}.outliers", share_off(a, b, IMAGE_OFF), SHARE,
                   f"share of pixels off by > {IMAGE_OFF}; max |Δ| {(a - b).abs().max().item():.3g}"),
        ]
    flow_max = (out.flow - ref.flow).abs().amax(dim=1)[both_valid]
    figures.append(Figure("render.flow.outliers", share_off(out.flow, ref.flow, FLOW_OFF_PX, both_valid), SHARE,
                          f"share of pixels valid on both off by > {FLOW_OFF_PX} px; "
                          f"max |Δ| {flow_max.max().item() if flow_max.numel() else 0.0:.3g} px"))
    for name in ("valid", "occ"):
        figures.append(Figure(f"render.{name}", share_off(getattr(out, name), getattr(ref, name), 0.5), SHARE,
                              "share of pixels labelled differently"))
    everything = [torch.cat([g[name].flatten() for name in LEARNABLE]) for g in (result.gradients, reference.gradients)]
    # A field's gradient under a millionth of the whole is rounding residue (it may be exactly zero on one device).
    floor = 1e-6 * everything[1].double().norm().item()
    errors = {name: relative_error(result.gradients[name], reference.gradients[name], floor) for name in LEARNABLE}
    worst = max(errors, key=lambda name: errors[name])
    figures += [
        Figure("render.grad", relative_error(*everything), GRAD_ALL, "relative L2 error of dloss/dθ, all fields"),
        Figure("render.grad.worst-field", errors[worst], GRAD_FIELD, f"relative L2 error of dloss/d{worst}"),
    ]
    return figures


# ---- DFlow update ---------------------------------------------------------------------------------------------------


def seeded_raft_small(seed: int, device: torch.device, bf16: bool) -> nn.Module:
    """RAFT-small with the weights ``torch.manual_seed(seed)`` draws on the CPU (so every device gets the same ones)."""
    torch.manual_seed(seed)
    return build_raft("raft-small", mixed_precision=bf16).to(device)


def run_dflow(
    params: SceneParams, bank: LayerBank, render_config: RenderConfig, device: torch.device, bf16: bool = False
) -> OptimizedBatch:
    """One DFlow update of the samples of ``params`` against two frozen seeded RAFT-small proxies (result on the CPU).

    The copies' transforms are drawn on the CPU from the samples' own generators, so every device gets the same.
    """
    config = OptimizeConfig(base_model="raft-small", target_model="raft-small", proxy_iters=ITERS, copies=COPIES,
                            updates=1, keep_best=False, mixed_precision=bf16)
    base, target = (freeze(seeded_raft_small(seed, device, bf16)) for seed in (0, 1))
    proxies = Proxies(base=base, target=target)
    return optimize_batch(params, range(BATCH), 0, bank.to(device), render_config, config, proxies, device)


def theta_step(result: OptimizedBatch, start: SceneParams) -> torch.Tensor:
    """θ₁ − θ₀ of every learnable field, flattened into one vector."""
    return torch.cat([(getattr(result.params, name) - getattr(start, name).cpu()).flatten() for name in LEARNABLE])


def compare_dflow(
    result: OptimizedBatch,
    reference: OptimizedBatch,
    start: SceneParams,
    tolerances: StepTolerances,
    name: str = "dflow",
) -> list[Figure]:
    """Losses at θ₀ and θ₁ (per sample) and the direction of every element's step."""
    initial = ("target_loss_initial", "base_loss_initial")
    final = ("target_loss_final", "base_loss_final", "task_loss_final")

    def loss_error(keys: Sequence[str]) -> float:
        return max(max_relative_error(result.losses[key], reference.losses[key]) for key in keys)

    return [
        Figure(f"{name}.initial-loss", loss_error(initial), tolerances.loss, "relative error, proxy losses at θ₀"),
        Figure(f"{name}.updated-loss", loss_error(final), tolerances.updated, "relative error, losses at θ₁"),
        Figure(f"{name}.step-signs", sign_disagreement(theta_step(result, start), theta_step(reference, start)),
               tolerances.signs, "share of θ's elements stepping in different directions"),
    ]


# ---- training step --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """The loss of one training step (NaN when it was skipped) and its weight update ΔW (flattened, on the CPU)."""

    loss: float
    update: torch.Tensor


def train_batch(output: RenderOutput) -> dict[str, torch.Tensor]:
    """A rendered batch as the trainer takes it: img1, img2 B×3×H×W in [0, 255], flow B×2×H×W, valid B×H×W."""
    return {"img1": output.img1 * 255, "img2": output.img2 * 255, "flow": output.flow, "valid": output.valid[:, 0]}


def run_train(batch: dict[str, torch.Tensor], device: torch.device, bf16: bool = False) -> TrainResult:
    """One :func:`train_step` (AdamW, clipping) of a seeded RAFT-small on ``batch`` (see :func:`train_batch`)."""
    height, width = batch["img1"].shape[-2:]
    config = TrainConfig(model="raft-small", batch_size=BATCH, crop_size=(height, width), iters=ITERS,
                         mixed_precision=bf16)
    model = seeded_raft_small(0, device, bf16).train()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    stats = train_step(model, make_optimizer(model, config), batch, config, device)
    after = [parameter.detach().cpu() for parameter in model.parameters()]
    update = torch.cat([(new - old.cpu()).flatten() for new, old in zip(after, before, strict=True)])
    return TrainResult(math.nan if stats is None else stats["loss"], update)


def compare_train(result: TrainResult, reference: TrainResult, tolerances: StepTolerances,
                  name: str = "train") -> list[Figure]:
    """The step's loss and its weight update."""
    return [
        Figure(f"{name}.loss", max_relative_error(result.loss, reference.loss), tolerances.loss, "relative error"),
        Figure(f"{name}.update", relative_error(result.update, reference.update), tolerances.updated,
               "relative L2 error of the weight update ΔW"),
    ]


# ---- evaluation -----------------------------------------------------------------------------------------------------


def flow_pairs(output: RenderOutput) -> list[FlowPair]:
    """A rendered batch as labelled pairs in file conventions (uint8 H×W×3 images, as a set stores them)."""
    images = [image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
              for image in (output.img1, output.img2)]
    flows = output.flow.permute(0, 2, 3, 1).numpy()
    valid = output.valid[:, 0].numpy() > 0.5
    return [FlowPair(images[0][i], images[1][i], flows[i], valid[i], f"sample-{i}") for i in range(len(flows))]


def run_eval(pairs: Sequence[FlowPair], device: torch.device) -> np.ndarray:
    """Per-pair EPE (px) of the packaged demo-base RAFT-small with ``ITERS`` iterations."""
    model = load_model("demo-base", "raft-small", map_location=device)
    return np.array([pair.epe for pair in evaluate(model, pairs, ITERS, device=device).pairs])


def compare_eval(result: np.ndarray, reference: np.ndarray) -> list[Figure]:
    """Per-pair EPEs (px) of the same pairs."""
    return [Figure("eval.epe", max_relative_error(result, reference), EVAL_EPE,
                   f"relative error of each pair's EPE; reference AEPE {float(np.mean(reference)):.3g} px")]


# ---- driver ---------------------------------------------------------------------------------------------------------


def report(label: str, figures: list[Figure], start: float) -> list[Figure]:
    """Print the figures of one check and its wall time since ``start``; return the figures."""
    for figure in figures:
        print(figure.line(), flush=True)
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)", flush=True)
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device checked (default cuda)")
    parser.add_argument("--reference-device", default="cpu", help="device it is compared with (default cpu)")
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT, multiples of 8 (default 256x192)")
    args = parser.parse_args(argv)
    try:
        args.size = parse_size(args.size)
    except DflowgenError as error:
        parser.error(str(error))
    if any(side % 8 for side in args.size):
        parser.error(f"--size must be multiples of 8 (RAFT works at 1/8), got {args.size[0]}x{args.size[1]}")
    for option in ("device", "reference_device"):
        try:
            device = torch.device(getattr(args, option))
        except RuntimeError as error:
            parser.error(str(error))
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--{option.replace('_', '-')} {device}: CUDA is not available here")
        setattr(args, option, device)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every check, print its figures, and return 1 when any figure fails (else 0)."""
    args = parse_args(argv)
    # Float32 must mean float32 on both sides: TF32 matmuls and convolutions round to 10-bit mantissas.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device, reference_device = args.device, args.reference_device
    width, height = args.size
    print(f"{device} against {reference_device}, {BATCH} samples at {width}×{height}, {ITERS} GRU iterations, "
          f"torch {torch.__version__}, TF32 off", flush=True)
    # The paper's 512×384 canvas margin scaled to this size, like bench/optimize.py.
    render_config = RenderConfig(width=width, height=height, canvas_margin=round(100 * width / 512))
    bank = load_layer_bank(size=render_config.canvas_size)
    params = sample_params(render_config, bank, seed=0, indices=range(BATCH))
    figures: list[Figure] = []

    start = time.perf_counter()
    devices = (device, reference_device)
    rendered, reference_render = (run_render(params, bank, render_config, where) for where in devices)
    figures += report("render", compare_render(rendered, reference_render), start)

    start = time.perf_counter()
    dflow, reference_dflow = (run_dflow(params, bank, render_config, where) for where in devices)
    figures += report("dflow", compare_dflow(dflow, reference_dflow, params, DFLOW_FP32), start)

    start = time.perf_counter()
    batch = train_batch(reference_render.output)
    trained, reference_trained = (run_train(batch, where) for where in devices)
    figures += report("train", compare_train(trained, reference_trained, TRAIN_FP32), start)

    start = time.perf_counter()
    pairs = flow_pairs(reference_render.output)
    figures += report("eval", compare_eval(run_eval(pairs, device), run_eval(pairs, reference_device)), start)

    if device.type == "cuda":
        start = time.perf_counter()
        bf16 = run_dflow(params, bank, render_config, device, bf16=True)
        figures += report("dflow-bf16", compare_dflow(bf16, dflow, params, DFLOW_BF16, "dflow-bf16"), start)
        start = time.perf_counter()
        figures += report("train-bf16", compare_train(run_train(batch, device, bf16=True), trained, TRAIN_BF16,
                                                      "train-bf16"), start)
    else:
        print(f"SKIP dflow-bf16, train-bf16: bf16 autocast runs only on CUDA, not on {device}")

    failed = [figure.name for figure in figures if not figure.passed]
    print(f"peak RSS {peak_rss_mib():.0f} MiB; {load()}")
    for where in dict.fromkeys(devices):
        if where.type == "cuda":
            print(f"peak CUDA memory on {where}: {torch.cuda.max_memory_allocated(where) / 2**20:.0f} MiB")
    print(f"{len(figures) - len(failed)} of {len(figures)} figures pass"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
