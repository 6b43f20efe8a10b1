"""Batches of a set, ready to store: rendered as drawn, or optimised against proxies first [DFlow].

``generate`` (and so ``reproduce`` and ``benchmark``) makes every batch through :func:`produce_batch`, and a
search candidate renders through the same :func:`render_batch`, so sample ``i`` of a recipe is the same
whichever of them asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from dflowgen.assets import LayerBank
from dflowgen.data.shards import SampleBatch
from dflowgen.optimize.config import OptimizeConfig
from dflowgen.optimize.loop import optimize_batch
from dflowgen.optimize.proxies import Proxies
from dflowgen.render import RenderConfig, RenderOutput, SceneParams, render, sample_params
from dflowgen.seeding import sample_seed

# Why an optimised sample is not kept: its loss turned non-finite, or its target loss stayed at or over the threshold.
DROP_REASONS = ("nonfinite", "threshold")


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W float in [0, 1] -> B×H×W×3 uint8 (rounded)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _sample_batch(
    output: RenderOutput, params: SceneParams, seed: int, indices: Sequence[int], store_params: bool,
    meta: Mapping[str, np.ndarray] | None = None,
) -> SampleBatch:
    """A rendered batch in file conventions, with its θ (``store_params``) and per-sample ``meta`` columns."""
    return SampleBatch(
        img1=_to_uint8(output.img1),
        img2=_to_uint8(output.img2),
        flow=output.flow.permute(0, 2, 3, 1).cpu().numpy(),
        valid=(output.valid[:, 0] > 0.5).cpu().numpy().astype(np.uint8),
        occ=(output.occ[:, 0] > 0.5).cpu().numpy().astype(np.uint8),
        params=params.to_numpy() if store_params else {},
        meta={
            "index": np.asarray(indices, dtype=np.int64),
            "seed": np.asarray([sample_seed(seed, index) for index in indices], dtype=np.int64),
            **{f"effect_{name}": (flags > 0.5).cpu().numpy().astype(np.uint8) for name, flags in output.effects.items()},
            **(meta or {}),
        },
    )


def render_batch(
    config: RenderConfig, bank: LayerBank, seed: int, indices: Sequence[int], device: torch.device, store_params: bool = True
) -> SampleBatch:
    """Render the samples with global ``indices`` of the set seeded ``seed``, ready to store (θ with ``store_params``)."""
    params = sample_params(config, bank, seed, indices)
    with torch.no_grad():
        output = render(params.to(device), bank, config)
    return _sample_batch(output, params, seed, indices, store_params)


def optimized_batch(
    config: RenderConfig, optimize: OptimizeConfig, bank: LayerBank, seed: int, indices: Sequence[int],
    device: torch.device, proxies: Proxies, store_params: bool = True, on_update: Callable[[], None] | None = None,
) -> tuple[SampleBatch, dict[str, int]]:
    """Optimise samples ``indices`` against ``proxies`` [DFlow]: the kept ones ready to store, and drops by reason.

    Kept samples carry their losses, α and updates taken as ``meta`` columns. A sample
    whose loss turned non-finite (``nonfinite``), or whose target loss stayed at or over
    ``keep_threshold`` (``threshold``), is dropped.
    """
    params = sample_params(config, bank, seed, indices)
    result = optimize_batch(params, indices, seed, bank, config, optimize, proxies, device, on_update)
    kept = np.flatnonzero(result.kept)
    selected = torch.from_numpy(kept)
    output = RenderOutput(
        img1=result.output.img1[selected],
        img2=result.output.img2[selected],
        flow=result.output.flow[selected],
        valid=result.output.valid[selected],
        occ=result.output.occ[selected],
        effects={name: flags[selected] for name, flags in result.output.effects.items()},
    )
    batch = _sample_batch(
        output, result.params.select(selected), seed, [indices[i] for i in kept], store_params,
        meta={name: values[kept] for name, values in result.losses.items()},
    )
    dropped = dict(zip(DROP_REASONS, (int((~result.finite).sum()), int((result.finite & ~result.kept).sum()))))
    return batch, dropped


def produce_batch(
    config: RenderConfig, optimize: OptimizeConfig | None, bank: LayerBank, seed: int, indices: Sequence[int],
    device: torch.device, proxies: Proxies | None = None, store_params: bool = True,
    on_update: Callable[[], None] | None = None,
) -> tuple[SampleBatch, dict[str, int]]:
    """The samples ``indices`` of a set, ready to store, and the drops by reason: the one producer of batches.

    With ``optimize`` (and its ``proxies``) the samples are optimised [DFlow] (:func:`optimized_batch`);
    without, they are rendered as drawn (:func:`render_batch`) and none is dropped.
    """
    if optimize is None:
        return render_batch(config, bank, seed, indices, device, store_params), dict.fromkeys(DROP_REASONS, 0)
    if proxies is None:
        raise ValueError("optimised batches need the proxies")
    return optimized_batch(config, optimize, bank, seed, indices, device, proxies, store_params, on_update)
