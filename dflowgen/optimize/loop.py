"""The per-sample optimisation of θ against the frozen proxies [DFlow §3.1, App. A.6].

Many samples are optimised in one batch, but nothing couples them: the objective is the
*sum* of per-sample losses (so each sample's gradient is its own loss's gradient), Adam
works elementwise, and every sample draws its augmented copies from its own generator
``sample_generator(seed, index, stream="optimize")``. A sample optimised alone therefore
ends where it ends in any batch (up to float rounding).

Evaluation ``k`` (0 ≤ k ≤ updates) renders θ_k, shows the proxies ``copies`` augmented
copies of each sample and records its losses; an Adam step follows every evaluation but
the last. The iterate kept is the one with the lowest target loss (``keep_best``) or the
last. A sample whose loss or gradient turns non-finite is dropped from the objective with
``torch.where`` (so a NaN cannot leak into its batch mates' gradients), never rendered
again, and reported with ``finite = False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dflowgen.assets import LayerBank
from dflowgen.optimize.copies import CopyTransforms, augment_copies, draw_copy_transforms
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.optimize.objective import proxy_losses, task_loss
from dflowgen.optimize.proxies import Proxies
from dflowgen.optimize.regularisers import fold_over_hinge, noise_l1
from dflowgen.render import LEARNABLE_GROUPS, RenderConfig, RenderOutput, SceneParams, render
from dflowgen.seeding import sample_generator

AUGMENT_STREAM = "optimize"
"""Name of the random stream the augmented copies are drawn from (see ``dflowgen.seeding``)."""

_LEARNABLE = tuple(name for names in LEARNABLE_GROUPS.values() for name in names)


@dataclass
class OptimizedBatch:
    """The result of :func:`optimize_batch` for ``B`` samples, on the CPU.

    params: the kept iterate of θ (detached).
    output: the render of ``params`` without augmentation; zero rows for samples that are
        not ``finite``.
    losses: each a ``(B,)`` array: ``target_loss_initial``, ``target_loss_final``,
        ``base_loss_initial``, ``base_loss_final``, ``task_loss_final`` (float32, proxy
        losses averaged over the copies; "final" is the kept iterate), ``updates`` (int64:
        steps taken before the kept iterate), ``alpha`` (float32).
    finite: ``(B,)`` bool, False where the sample's loss or gradient turned non-finite.
    kept: ``(B,)`` bool, ``finite & target_loss_final < keep_threshold``.
    """

    params: SceneParams
    output: RenderOutput
    losses: dict[str, np.ndarray]
    finite: np.ndarray
    kept: np.ndarray


@dataclass
class Evaluation:
    """Per-sample losses of one evaluation, each ``n`` (the samples evaluated)."""

    total: torch.Tensor  # task loss + weighted regularisers: what is minimised
    task: torch.Tensor
    target: torch.Tensor  # target proxy loss, mean over the copies
    base: torch.Tensor  # base proxy loss, mean over the copies

    def finite(self) -> torch.Tensor:
        """``n`` bool: every loss of the sample is finite."""
        return torch.stack([v.isfinite() for v in (self.total, self.task, self.target, self.base)]).all(dim=0)


def evaluate(
    theta: SceneParams,
    copy_transforms: CopyTransforms,
    alpha: torch.Tensor,
    bank: LayerBank,
    render_config: RenderConfig,
    config: OptimizeConfig,
    proxies: Proxies,
) -> Evaluation:
    """Render ``n`` samples, make their copies, and score them.

    Args:
        theta: θ of ``n`` samples.
        copy_transforms: ``n·copies`` transforms on θ's device, sample-major.
        alpha: ``n`` α of each sample.
    """
    rendered = render(theta, bank, render_config)
    copies = augment_copies(rendered.img1, rendered.img2, rendered.flow, rendered.valid, copy_transforms)
    shape = (theta.batch_size, config.copies)
    settings = dict(iters=config.proxy_iters, sequence_gamma=config.sequence_gamma, max_flow=config.max_flow)
    target = proxy_losses(proxies.target, copies.img1, copies.img2, copies.flow, copies.valid, **settings)
    base = proxy_losses(proxies.base, copies.img1, copies.img2, copies.flow, copies.valid, **settings)
    target, base = target.reshape(shape), base.reshape(shape)
    task = task_loss(config.form, target, base, alpha, config.beta, config.gamma, config.epsilon)
    total = task
    if config.fold_weight > 0:
        total = total + config.fold_weight * fold_over_hinge(theta, render_config, config.fold_margin)
    if config.noise_weight > 0:
        total = total + config.noise_weight * noise_l1(theta)
    return Evaluation(total=total, task=task, target=target.mean(dim=1), base=base.mean(dim=1))


def make_optimizer(
    theta: SceneParams, config: OptimizeConfig
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with one parameter group per ``LEARNABLE_GROUPS`` entry, and the linear decay of every rate.

    The rate of step ``k`` (counting from 0) is ``lr_group · max(0, 1 − k/decay_updates)``.
    """
    rates = {
        "pixel": config.lr_pixel,
        "rotation_scale": config.lr_rotation_scale,
        "effects": config.lr_effects,
        "noise": config.lr_noise,
    }
    groups = theta.learnable_groups()
    if set(groups) != set(rates):
        raise RuntimeError(f"learning rates for groups {sorted(rates)} but θ has groups {sorted(groups)}")
    optimizer = torch.optim.Adam([{"params": tensors, "lr": rates[name]} for name, tensors in groups.items()])
    decay = config.decay_updates
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / decay))
    return optimizer, scheduler


def optimize_batch(
    params: SceneParams,
    indices: Sequence[int],
    seed: int,
    bank: LayerBank,
    render_config: RenderConfig,
    config: OptimizeConfig,
    proxies: Proxies,
    device: torch.device | str,
    on_update: Callable[[], None] | None = None,
) -> OptimizedBatch:
    """Optimise θ of ``B`` samples so the target proxy finds them easy and the base proxy hard.

    Args:
        params: θ of the samples as drawn by ``render.sample_params(render_config, bank,
            seed, indices)`` (any device; left unchanged).
        indices: the samples' global indices (``B``): they pick each sample's α
            (``config.alpha_for``) and augmentation stream.
        seed: the run seed.
        bank: the layer bank ``params`` were drawn from.
        render_config, config: the ``[render]`` and ``[optimize]`` recipe sections.
        proxies: frozen proxies on ``device`` (see ``optimize.proxies``).
        device: where to optimise.
        on_update: called after every update step (``config.updates`` calls; steps a batch
            cannot take because every sample turned non-finite are still counted).

    Returns:
        The kept iterates, their renders and losses, on the CPU. Same inputs give the same
        result (bit-identical on the CPU).
    """
    batch = params.batch_size
    if len(indices) != batch:
        raise ValueError(f"{len(indices)} indices for {batch} samples")
    device = torch.device(device)
    theta = SceneParams(**{name: t.detach().to(device).clone() for name, t in params.tensors().items()})
    theta.requires_grad_(True)
    optimizer, scheduler = make_optimizer(theta, config)
    generators = [sample_generator(seed, int(index), AUGMENT_STREAM) for index in indices]
    alpha = torch.tensor([config.alpha_for(int(index)) for index in indices], dtype=theta.dtype, device=device)
    size = (render_config.width, render_config.height)
    record = _Record(theta, config.keep_best)
    alive = _finite_rows(theta, _LEARNABLE)

    for update in range(config.updates + 1):
        transforms = draw_copy_transforms(generators, config.copies, size, config.augment).to(device)
        active = alive.nonzero().squeeze(1)
        last = update == config.updates
        if active.numel() == 0:
            if not last and on_update is not None:
                on_update()
            continue
        rows = (active[:, None] * config.copies + torch.arange(config.copies, device=device)).reshape(-1)
        with torch.set_grad_enabled(not last):
            evaluation = evaluate(
                theta.select(active), transforms.select(rows), alpha[active], bank, render_config, config, proxies
            )
        finite = evaluation.finite()
        record.update(update, active, evaluation, finite, theta)
        alive[active[~finite]] = False
        if last:
            break
        objective = torch.where(finite, evaluation.total, torch.zeros_like(evaluation.total)).sum()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        alive &= _finite_rows(theta, _LEARNABLE, gradients=True)
        _zero_gradients_of_dropped(theta, alive)
        optimizer.step()
        scheduler.step()
        if on_update is not None:
            on_update()

    kept_params = record.params()
    output = _render_kept(kept_params, alive, bank, render_config)
    losses = record.losses()
    losses["alpha"] = alpha.cpu().numpy().astype(np.float32)
    finite = alive.cpu().numpy()
    return OptimizedBatch(
        params=kept_params.to("cpu"),
        output=output,
        losses=losses,
        finite=finite,
        kept=finite & (losses["target_loss_final"] < config.keep_threshold),
    )


class _Record:
    """Initial losses, and the kept iterate with its losses, of every sample of the batch."""

    def __init__(self, theta: SceneParams, keep_best: bool) -> None:
        batch, device = theta.batch_size, theta.device
        self.keep_best = keep_best
        self.kept = {name: getattr(theta, name).detach().clone() for name in _LEARNABLE}
        self.fixed = theta.detach()
        nan = torch.full((batch,), float("nan"), device=device)
        self.initial = {"target": nan.clone(), "base": nan.clone()}
        self.final = {"target": nan.clone(), "base": nan.clone(), "task": nan.clone()}
        self.best_target = torch.full((batch,), float("inf"), device=device)
        self.updates = torch.zeros(batch, dtype=torch.int64, device=device)

    def update(
        self, update: int, active: torch.Tensor, evaluation: Evaluation, finite: torch.Tensor, theta: SceneParams
    ) -> None:
        """Record evaluation ``update`` of the ``active`` samples (``finite``: which of them scored)."""
        target = evaluation.target.detach()
        if update == 0:
            self.initial["target"][active] = target
            self.initial["base"][active] = evaluation.base.detach()
        better = finite & (target < self.best_target[active]) if self.keep_best else finite
        chosen = active[better]
        if chosen.numel() == 0:
            return
        self.best_target[chosen] = target[better]
        self.final["target"][chosen] = target[better]
        self.final["base"][chosen] = evaluation.base.detach()[better]
        self.final["task"][chosen] = evaluation.task.detach()[better]
        self.updates[chosen] = update
        for name in _LEARNABLE:
            self.kept[name][chosen] = getattr(theta, name).detach()[chosen]

    def params(self) -> SceneParams:
        return SceneParams(**{**self.fixed.tensors(), **{name: t.clone() for name, t in self.kept.items()}})

    def losses(self) -> dict[str, np.ndarray]:
        def host(tensor: torch.Tensor) -> np.ndarray:
            return tensor.cpu().numpy().astype(np.float32)

        return {
            "target_loss_initial": host(self.initial["target"]),
            "target_loss_final": host(self.final["target"]),
            "base_loss_initial": host(self.initial["base"]),
            "base_loss_final": host(self.final["base"]),
            "task_loss_final": host(self.final["task"]),
            "updates": self.updates.cpu().numpy().astype(np.int64),
        }


def _finite_rows(theta: SceneParams, names: Sequence[str], gradients: bool = False) -> torch.Tensor:
    """``B`` bool: every value (or gradient) of the named fields of the sample is finite; no gradient is fine."""
    finite = torch.ones(theta.batch_size, dtype=torch.bool, device=theta.device)
    for name in names:
        tensor = getattr(theta, name).grad if gradients else getattr(theta, name)
        if tensor is not None:
            finite &= tensor.detach().isfinite().reshape(theta.batch_size, -1).all(dim=1)
    return finite


def _zero_gradients_of_dropped(theta: SceneParams, alive: torch.Tensor) -> None:
    """Replace the gradients of dropped samples by 0 (``where``: a NaN times 0 would stay NaN)."""
    for name in _LEARNABLE:
        tensor = getattr(theta, name)
        if tensor.grad is not None:
            keep = alive.reshape(-1, *([1] * (tensor.ndim - 1)))
            tensor.grad = torch.where(keep, tensor.grad, torch.zeros_like(tensor.grad))


def _render_kept(kept: SceneParams, finite: torch.Tensor, bank: LayerBank, render_config: RenderConfig) -> RenderOutput:
    """Render the kept iterates without augmentation, on the CPU, with zero rows for non-finite samples.

    Non-finite values of dropped samples are replaced by 0 for this render only, because the
    renderer's index arithmetic cannot take NaN coordinates; their rows are zeroed after.
    """
    safe = SceneParams(
        **{
            name: torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0) if name in _LEARNABLE else t
            for name, t in kept.tensors().items()
        }
    )
    with torch.no_grad():
        rendered = render(safe, bank, render_config)

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        keep = finite.reshape(-1, *([1] * (tensor.ndim - 1)))
        return torch.where(keep, tensor, torch.zeros_like(tensor)).cpu()

    return RenderOutput(
        img1=rows(rendered.img1),
        img2=rows(rendered.img2),
        flow=rows(rendered.flow),
        valid=rows(rendered.valid),
        occ=rows(rendered.occ),
        effects={name: flags.cpu() for name, flags in rendered.effects.items()},
    )
