"""Training hyper-parameters; every field is a recipe key under ``[train]`` and its sub-tables.

Defaults follow the official RAFT chairs stage (``train_standard.sh`` and ``datasets.py`` of
princeton-vl/RAFT); the other stages are recipes (``recipes/train-*.toml``). ``mode`` picks
what the network learns from: ground truth (``supervised``), or unlabelled frames
(``self-supervised`` [SMURF], ``pseudo-label`` [CLIP-Flow], ``distill`` [MDFlow]); each
label-free mode reads its own sub-table (``[train.selfsup]``, ``[train.pseudo]``,
``[train.distill]``) and ignores the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dflowgen.fields import check_non_negative, check_positive, check_probability, nested, to_dict
from dflowgen.losses.selfsup import FB_ALPHA1, FB_ALPHA2, SelfSupervisedLossConfig
from dflowgen.models.registry import ModelName

TrainMode = Literal["supervised", "self-supervised", "pseudo-label", "distill"]
TRAIN_MODES: tuple[TrainMode, ...] = ("supervised", "self-supervised", "pseudo-label", "distill")
LABEL_FREE_MODES: tuple[TrainMode, ...] = ("self-supervised", "pseudo-label", "distill")


@dataclass(frozen=True)
class AugmentConfig:
    """RAFT-style augmentation of every training pair (:class:`dflowgen.data.augment.FlowAugmentor`).

    With probability ``spatial_prob`` a pair is zoomed by ``2**u``, ``u`` uniform in
    ``[min_scale, max_scale]`` (official stages: chairs −0.1…1.0, things −0.4…0.8,
    sintel −0.2…0.6, kitti −0.2…0.4), each axis further stretched by ``2**v``,
    ``|v| <= max_stretch``, with probability ``stretch_prob`` (dense flow only); then
    flipped (``do_flip``), colour-jittered (``photometric``), partly erased (``eraser``)
    and randomly cropped. ``spatial_prob = 0`` with the switches off leaves the random crop
    only, as the DFlow target proxy is trained.
    """

    min_scale: float = -0.1
    max_scale: float = 1.0
    spatial_prob: float = 0.8
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    do_flip: bool = True
    photometric: bool = True
    eraser: bool = True

    def __post_init__(self) -> None:
        if self.min_scale > self.max_scale:
            raise ValueError(f"augment.min_scale ({self.min_scale}) must not exceed augment.max_scale ({self.max_scale})")
        check_probability(self, "spatial_prob", "stretch_prob", section="augment")
        check_non_negative(self, "max_stretch", section="augment")


@dataclass(frozen=True)
class JitterConfig:
    """Colour jitter of a network's *input* in the label-free modes (:mod:`dflowgen.train.labelfree.jitter`).

    Per sample: brightness and contrast factors in ``1 ± brightness``/``1 ± contrast``, saturation in
    ``1 ± saturation``, a hue shift of ``± hue`` of the colour circle; the second frame gets its own
    draw with probability ``asymmetric_prob``. ``prob`` is the chance that a sample is jittered at all.
    The losses that compare images (census, smoothness) always read the frames *without* jitter.
    """

    prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5 / 3.14
    asymmetric_prob: float = 0.2

    def __post_init__(self) -> None:
        check_probability(self, "prob", "asymmetric_prob", section="jitter")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"jitter.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"jitter.hue must be in [0, 0.5] (a fraction of the colour circle), got {self.hue}")


@dataclass(frozen=True)
class SelfSupervisedTrainConfig:
    """``[train.selfsup]``: SMURF-style unsupervised training [SMURF §3].

    Every step runs the network on (frame 1, frame 2), (frame 2, frame 1) and on the
    self-distillation crop of both, as one batch, and minimises the loss of ``[train.selfsup.loss]``
    (census with occlusion masking, edge-aware smoothness, self-distillation full frame → crop)
    on every GRU iterate, iterate i of N weighted ``sequence_gamma^(N−1−i)`` and the weights
    normalised to sum 1 (``sequence_gamma = 0``: the last iterate only). ``photometric`` jitters the
    network input (``[train.selfsup.jitter]``), never the frames the census loss compares.
    """

    sequence_gamma: float = 0.8
    photometric: bool = True
    jitter: JitterConfig = nested(JitterConfig)
    loss: SelfSupervisedLossConfig = nested(SelfSupervisedLossConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sequence_gamma <= 1.0:
            raise ValueError(f"selfsup.sequence_gamma must be in [0, 1], got {self.sequence_gamma}")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """``[train.pseudo]``: iterative pseudo-labelling with a contrastive flow loss [CLIP-Flow].

    A teacher predicts the flow of every unlabelled pair on the whole frames (``label_iters``
    GRU iterations, both directions); a label pixel is kept where the forward-backward check
    passes, ``|F_fw + F_bw(p + F_fw)|² <= fb_alpha1·(|F_fw|² + |F_bw(p + F_fw)|²) + fb_alpha2``, and
    ``p + F_fw`` lies inside frame 2. The student then trains on the labelled frames with the
    ``[train]`` sequence loss and augmentation, plus ``contrastive_weight`` × an InfoNCE loss between
    its 1/8 feature vectors of frame 1 and those of frame 2 read at the labelled positions
    (``num_anchors`` anchors per sample, temperature ``temperature``; see
    :mod:`dflowgen.train.labelfree.contrastive`). Every ``refresh_every`` steps (0: never) the student,
    as it is then, labels the frames again.
    """

    label_iters: int = 12
    fb_alpha1: float = FB_ALPHA1
    fb_alpha2: float = FB_ALPHA2
    refresh_every: int = 0
    contrastive_weight: float = 0.1
    temperature: float = 0.07
    num_anchors: int = 256

    def __post_init__(self) -> None:
        check_positive(self, "label_iters", "num_anchors", section="pseudo")
        check_non_negative(self, "fb_alpha1", "fb_alpha2", "contrastive_weight", section="pseudo")
        if self.refresh_every < 0:
            raise ValueError(f"pseudo.refresh_every must be >= 0 (0 = never), got {self.refresh_every}")
        check_positive(self, "temperature", section="pseudo")


@dataclass(frozen=True)
class StrongAugmentConfig:
    """``[train.distill.augment]``: the student's strong augmentation [MDFlow, after ARFlow].

    Geometric, on both frames: a zoom ``2^U(min_scale, max_scale)``, a rotation ``U(±max_rotate)``
    degrees and a translation keeping the view inside the frame where it can, with flips
    (horizontal ``h_flip_prob``, vertical ``v_flip_prob``); frame 2 is further zoomed by
    ``2^U(±relative_scale)`` and shifted by ``U(±relative_translate)`` px. The teacher's flow and
    confidence are carried through the same transforms exactly. Appearance: the colour jitter of
    ``[train.distill.augment.jitter]`` (with probability ``jitter.prob``). Occlusion: with
    ``eraser_prob`` 1–2 boxes of frame 2, each side ``eraser_size`` of the frame's, painted with its
    mean colour (the student must infer the motion of what they hide).
    """

    min_scale: float = 0.0
    max_scale: float = 0.4
    max_rotate: float = 10.0
    h_flip_prob: float = 0.5
    v_flip_prob: float = 0.1
    relative_scale: float = 0.05
    relative_translate: float = 4.0
    eraser_prob: float = 0.5
    eraser_size: tuple[float, float] = (0.1, 0.3)
    jitter: JitterConfig = nested(JitterConfig)

    def __post_init__(self) -> None:
        if self.min_scale > self.max_scale:
            raise ValueError(f"distill.augment.min_scale ({self.min_scale}) must not exceed max_scale "
                             f"({self.max_scale})")
        check_non_negative(self, "max_rotate", "relative_scale", "relative_translate", section="distill.augment")
        check_probability(self, "h_flip_prob", "v_flip_prob", "eraser_prob", section="distill.augment")
        low, high = self.eraser_size
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"distill.augment.eraser_size must satisfy 0 < lo <= hi <= 1 (fractions of the frame), "
                             f"got {list(self.eraser_size)}")


@dataclass(frozen=True)
class DistillConfig:
    """``[train.distill]``: reliable (mutual) knowledge distillation [MDFlow].

    The teacher predicts both directions of every training crop (``teacher_iters`` iterations, no
    augmentation); its confidence is the forward-backward check of ``[train.pseudo]``'s form
    (``fb_alpha1``, ``fb_alpha2``) and the in-frame test. The student sees the strongly augmented
    pair (``[train.distill.augment]``) and is supervised, in both directions, by the teacher's flow
    carried through the same transforms, on confident pixels only, with the ``[train]`` sequence
    loss (γ, max_flow). ``selfsup_weight`` adds the census + smoothness terms of
    ``[train.selfsup.loss]`` on the student's last iterate (MDFlow's extra unsupervised term).

    ``swap_every`` > 0 trains back and forth: the two networks swap roles every ``swap_every``
    steps, the teacher of one phase being the student of the next; the network started from
    ``--init`` is the student first, and it is the one a checkpoint's ``model`` holds.
    """

    teacher_iters: int = 12
    fb_alpha1: float = FB_ALPHA1
    fb_alpha2: float = FB_ALPHA2
    selfsup_weight: float = 0.1
    swap_every: int = 0
    augment: StrongAugmentConfig = nested(StrongAugmentConfig)

    def __post_init__(self) -> None:
        check_positive(self, "teacher_iters", section="distill")
        check_non_negative(self, "fb_alpha1", "fb_alpha2", "selfsup_weight", section="distill")
        if self.swap_every < 0:
            raise ValueError(f"distill.swap_every must be >= 0 (0 = a fixed teacher), got {self.swap_every}")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage: model, optimiser, schedule, loss, data handling and bookkeeping.

    ``batch_size`` is the *global* batch: under torchrun each of the ``W`` processes takes
    ``batch_size / W`` samples of every step, so a recipe means the same thing on any
    number of GPUs. The learning rate follows OneCycle with linear annealing over
    ``num_steps + 100`` steps and ``pct_start`` warm-up, as the official trainer does.

    ``mode`` is what the network learns from (see the module docstring). In the label-free
    modes ``[train.augment]`` gives the data pipeline's geometric augmentation (zoom, stretch,
    flips, crop) of the unlabelled frames; their colour jitter and eraser are the mode's own
    (``selfsup.jitter``, ``distill.augment``), since the photometric losses must compare the
    frames as they are. Pseudo-labelled frames are labelled data and get all of ``[train.augment]``.

    With validation data (``--val``), the network is measured on it every ``val_every`` steps and
    after the last, with ``val_iters`` GRU iterations and the ``dflowgen eval`` protocol.
    """

    mode: TrainMode = "supervised"
    model: ModelName = "raft-small"
    num_steps: int = 100_000
    batch_size: int = 10
    crop_size: tuple[int, int] = (368, 496)
    lr: float = 4e-4
    weight_decay: float = 1e-4
    epsilon: float = 1e-8
    pct_start: float = 0.05
    clip: float = 1.0
    gamma: float = 0.8
    max_flow: float = 400.0
    iters: int = 12
    freeze_bn: bool = False
    mixed_precision: bool = False
    max_nonfinite: int = 5
    checkpoint_every: int = 5000
    log_every: int = 100
    val_every: int = 1000
    val_iters: int = 12
    seed: int = 1234
    num_workers: int = 2
    augment: AugmentConfig = nested(AugmentConfig)
    selfsup: SelfSupervisedTrainConfig = nested(SelfSupervisedTrainConfig)
    pseudo: PseudoLabelConfig = nested(PseudoLabelConfig)
    distill: DistillConfig = nested(DistillConfig)

    def __post_init__(self) -> None:
        check_positive(self, "num_steps", "batch_size", "iters", "checkpoint_every", "log_every", "max_nonfinite",
                       "val_every", "val_iters")
        if any(side < 8 or side % 8 for side in self.crop_size):
            raise ValueError(f"crop_size must be positive multiples of 8 (RAFT works at 1/8), got {list(self.crop_size)}")
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")
        check_non_negative(self, "num_workers")
        check_positive(self, "lr", "clip", "gamma", "max_flow")


# Fields that change how a run is watched or stored, not the parameters it produces;
# a resumed run may change them.
BOOKKEEPING_FIELDS = frozenset({"num_workers", "log_every", "checkpoint_every", "max_nonfinite", "val_every",
                                "val_iters"})

# Settings a resumed run may change: bookkeeping, and the length of the run.
RESUMABLE_FIELDS = BOOKKEEPING_FIELDS | {"num_steps"}


def result_settings(config: TrainConfig) -> dict[str, Any]:
    """``config`` as a plain dict without its bookkeeping fields: what decides the network a run trains.

    Finished stages (reproduce, benchmark) are matched on this, so a new or changed bookkeeping field
    (logging cadence, workers, validation) does not void them.
    """
    return {key: value for key, value in to_dict(config).items() if key not in BOOKKEEPING_FIELDS}
