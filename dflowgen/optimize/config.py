"""DFlow optimisation settings; every field is a recipe key under ``[optimize]`` (and ``[optimize.augment]``).

Defaults are the paper's values [DFlow §3.1, App. A.6, A.7]; the authors' released scripts'
values (4 GRU iterations, 100 updates, W = 12, keep below 12, ...) are a preset in
``recipes/sintel.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dflowgen.fields import check_non_negative, check_positive, check_probability, nested
from dflowgen.models.registry import MODEL_NAMES, ModelName

TaskLossForm = Literal["add-exp", "add-sigmoid", "add-tanh", "mul-exp", "mul-sigmoid", "mul-tanh"]
TASK_LOSS_FORMS: tuple[str, ...] = get_args(TaskLossForm)


@dataclass(frozen=True)
class CopyAugmentConfig:
    """RAFT-style, differentiable augmentation of the copies each update shows the proxies.

    Every copy is the rendered pair zoomed by ``2**u`` (``u`` uniform in ``[min_scale,
    max_scale]``), each axis stretched by ``2**v`` (``v`` uniform in ``[-max_stretch,
    max_stretch]``, drawn per axis) with probability ``stretch_prob``, each axis' zoom
    raised to at least 1 (as RAFT raises it to the crop size: a copy never shows outside the
    rendered frame), cropped back to the rendered size at a random offset, flipped
    left-right / up-down with ``hflip_prob`` / ``vflip_prob``, and colour-jittered the same
    way in both frames (brightness, contrast, saturation by factors uniform in
    ``[max(0, 1 − value), 1 + value]``, hue shifted by up to ``± hue`` turns of the colour
    circle). The same geometric transform moves the flow, so the copy's flow is exact.
    """

    min_scale: float = 0.0
    max_scale: float = 0.4
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    hflip_prob: float = 0.5
    vflip_prob: float = 0.1
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.159

    def __post_init__(self) -> None:
        if self.min_scale > self.max_scale:
            raise ValueError(
                f"augment.min_scale ({self.min_scale}) must not exceed augment.max_scale ({self.max_scale})"
            )
        check_probability(self, "stretch_prob", "hflip_prob", "vflip_prob", section="augment")
        check_non_negative(self, "max_stretch", "brightness", "contrast", "saturation", "hue", section="augment")
        if self.hue > 0.5:
            raise ValueError(f"augment.hue must be at most 0.5 (half a turn of the colour circle), got {self.hue}")


@dataclass(frozen=True)
class OptimizeConfig:
    """How every sample's θ is optimised against the frozen base and target proxies.

    Proxies: ``*_weights`` is a file path or a name in the weights store (``raft-chairs``,
    ``demo-base``, ...); ``proxy_iters`` GRU iterations each; ``mixed_precision`` runs them
    under bf16 autocast on CUDA (correlation kept in float32).
    Task loss ``form`` (``add``/``mul`` × ``exp``/``sigmoid``/``tanh``, see
    ``optimize.objective``) with ``alpha``, ``beta``, ``gamma``, ``epsilon`` over proxy
    sequence losses (``sequence_gamma``, ``max_flow``); several ``alpha`` values make the α
    combination: sample ``i`` is optimised with ``alpha[i % len(alpha)]``.
    Regularisers: ``fold_weight`` × grid fold-over hinge (the anchor field's derivative along
    each axis kept above ``fold_margin``), ``noise_weight`` × texture-noise L1.
    Optimiser: Adam with a learning rate per parameter group (``lr_*``, see
    ``render.params.LEARNABLE_GROUPS``), scaled by ``max(0, 1 − update/decay_updates)``;
    ``updates`` steps, each on ``copies`` augmented copies. A sample is written when its
    target loss at the kept iterate (the best one with ``keep_best``, else the last) is
    below ``keep_threshold``.
    """

    base_model: ModelName = "raft"
    base_weights: str = "raft-chairs"
    target_model: ModelName = "raft"
    target_weights: str = ""
    proxy_iters: int = 12
    mixed_precision: bool = False
    form: TaskLossForm = "add-exp"
    alpha: tuple[float, ...] = (20.0,)
    beta: float = 1.0
    gamma: float = 0.0
    epsilon: float = 1e-6
    sequence_gamma: float = 0.8
    max_flow: float = 400.0
    fold_weight: float = 1.0
    fold_margin: float = 0.1
    noise_weight: float = 1.0
    lr_pixel: float = 1.0
    lr_rotation_scale: float = 0.1
    lr_effects: float = 3e-2
    lr_noise: float = 1e-3
    updates: int = 80
    decay_updates: int = 80
    copies: int = 6
    keep_threshold: float = 25.0
    keep_best: bool = True
    augment: CopyAugmentConfig = nested(CopyAugmentConfig)

    def __post_init__(self) -> None:
        for name in ("base_model", "target_model"):
            if getattr(self, name) not in MODEL_NAMES:
                raise ValueError(f"{name} must be one of {', '.join(MODEL_NAMES)}, got {getattr(self, name)!r}")
        if self.form not in TASK_LOSS_FORMS:
            raise ValueError(f"form must be one of {', '.join(TASK_LOSS_FORMS)}, got {self.form!r}")
        if not self.alpha:
            raise ValueError("alpha needs at least one value")
        if any(alpha < 0 for alpha in self.alpha):
            raise ValueError(f"alpha values must be >= 0, got {list(self.alpha)}")
        check_positive(self, "proxy_iters", "copies", "decay_updates")
        check_non_negative(self, "updates")
        check_positive(self, "epsilon", "sequence_gamma", "max_flow", "keep_threshold")
        learning_rates = ("lr_pixel", "lr_rotation_scale", "lr_effects", "lr_noise")
        check_non_negative(self, "beta", "fold_weight", "fold_margin", "noise_weight", *learning_rates)

    def alpha_for(self, index: int) -> float:
        """The α sample ``index`` is optimised with (the α combination cycles through ``alpha``)."""
        return self.alpha[index % len(self.alpha)]
