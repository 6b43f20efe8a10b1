"""Reproduction settings: the ``[reproduce]`` table of a recipe (``Recipe.reproduce``).

Kept free of :mod:`dflowgen.recipes` imports, because the recipe holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dflowgen.fields import check_positive, nested
from dflowgen.train.config import TrainConfig

SetVariant = Literal["random", "dflow", "dflow-alpha-mix", "dflow-no-effects", "random-no-effects"]
SET_VARIANTS: tuple[str, ...] = get_args(SetVariant)
RowStart = Literal["base", "scratch"]


@dataclass(frozen=True)
class ReproduceConfig:
    """What ``dflowgen reproduce`` compares, and on which data; keys under ``[reproduce]``.

    The rest of the recipe says how each stage runs: ``[render]``, ``[generate]`` and
    ``[optimize]`` make the sets, ``[train]`` trains a network on each, ``[reproduce.base]`` trains
    the base network and ``[reproduce.proxy]`` fine-tunes the target proxy (both complete
    ``[train]`` tables; their defaults are ``[train]``'s).

    The base [DFlow §3.1]: the network that finds the random pipeline data familiar. It starts
    from ``init`` (a weights file, a weights-store name, or a path under ``data_root``; "" = freshly
    initialised from ``base.seed``) and, with ``base_samples`` > 0, is trained on that many random
    samples drawn with seed ``base_seed`` (the "base dataset", apart from every row's data).
    With ``base_samples`` = 0 the base is ``init`` itself, which must then be named. The base is
    the base proxy of every optimised set, the start of the target proxy, and, with ``rows_start =
    "base"``, the start of every row; ``"scratch"`` trains every row from a fresh network instead.

    Data: ``sintel`` is a folder in the MPI-Sintel layout, relative to ``data_root`` unless
    absolute; ``data_root`` "" means ``$DFLOWGEN_SHARED_DATA``, else ``../shared/data`` beside
    the repository. Its frames are resized by ``sintel_scale`` wherever they are used, so that the
    renders relate to Sintel as the paper's 512×384 renders relate to the 1024×436 frames (mini
    renders 160×128: 160/512 = 0.3125). The target proxy is the ``[optimize]`` base proxy
    fine-tuned on the ``proxy_scenes`` (both passes); every network is evaluated on the
    ``eval_scenes``, which nothing else sees, with ``eval_iters`` GRU iterations, and with
    ``eval_proxy_scenes`` also on the proxy scenes. The scenes are fixed in the recipe before
    any run; the report never picks pairs after seeing results.

    Rows: one set of ``num_samples`` samples per entry of ``sets``: ``random`` (θ as drawn),
    ``dflow`` (optimised against the base and target proxies), ``dflow-alpha-mix`` (the α
    combination ``alpha_mix``), ``dflow-no-effects`` and ``random-no-effects`` (white balance,
    noise, fog and blur switched off). All sets share ``generate.seed``, so an optimised sample
    starts from the random set's sample of the same index. With ``equal_sizes`` every set is cut
    to the smallest one (DFlow drops samples over its keep threshold). Every row is trained once
    per seed in ``seeds`` (the ``[train]`` seed, which orders and augments the data).
    """

    data_root: str = ""
    sintel: str = "sintel-mini"
    sintel_scale: float = 1.0
    proxy_scenes: tuple[str, ...] = ("alley_1", "ambush_4", "bandage_1")
    eval_scenes: tuple[str, ...] = ("alley_2", "cave_2", "temple_3")
    eval_proxy_scenes: bool = True
    eval_iters: int = 12
    num_samples: int = 2000
    sets: tuple[SetVariant, ...] = ("random", "dflow")
    alpha_mix: tuple[float, ...] = (10.0, 20.0, 30.0)
    equal_sizes: bool = True
    init: str = ""
    base_samples: int = 0
    base_seed: int = 1000
    rows_start: RowStart = "base"
    seeds: tuple[int, ...] = (0, 1)
    base: TrainConfig = nested(TrainConfig)
    proxy: TrainConfig = nested(TrainConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.sintel_scale <= 1.0:
            raise ValueError(f"sintel_scale must be in (0, 1], got {self.sintel_scale}")
        if not self.proxy_scenes or not self.eval_scenes:
            raise ValueError("proxy_scenes and eval_scenes each need at least one scene")
        shared = sorted(set(self.proxy_scenes) & set(self.eval_scenes))
        if shared:
            raise ValueError(f"scene(s) {', '.join(shared)} are in both proxy_scenes and eval_scenes: "
                             "evaluation must use scenes the target proxy never saw")
        check_positive(self, "eval_iters", "num_samples")
        if not self.sets:
            raise ValueError(f"sets needs at least one of {', '.join(SET_VARIANTS)}")
        unknown = [name for name in self.sets if name not in SET_VARIANTS]
        if unknown:
            raise ValueError(f"unknown set(s) {', '.join(unknown)} (choose from {', '.join(SET_VARIANTS)})")
        if len(set(self.sets)) != len(self.sets):
            raise ValueError(f"sets lists a set twice: {list(self.sets)}")
        if not self.alpha_mix or any(alpha < 0 for alpha in self.alpha_mix):
            raise ValueError(f"alpha_mix needs at least one value, all >= 0, got {list(self.alpha_mix)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds needs at least one seed and no repeats, got {list(self.seeds)}")
        if self.base_samples < 0:
            raise ValueError(f"base_samples must be >= 0, got {self.base_samples}")
        if self.rows_start not in get_args(RowStart):
            raise ValueError(f"rows_start must be 'base' or 'scratch', got {self.rows_start!r}")
        if self.base.mode != "supervised":
            raise ValueError(f"base.mode must be 'supervised' (the base learns from rendered labels), "
                             f"got {self.base.mode!r}")
        if self.proxy.mode != "supervised":
            raise ValueError(f"proxy.mode must be 'supervised' (the target proxy learns from labelled pairs), "
                             f"got {self.proxy.mode!r}")
