"""One reproduction, end to end: base → target proxy → equal-sized sets → a network trained on each → evaluation.

``OUT`` (the ``--out`` folder) holds::

    recipe.toml                   the resolved recipe of the last run
    base/set/                     the base dataset: random pipeline data (with reproduce.base_samples > 0)
    base/train/                   the base network's training run
    base/base.pth                 the base network alone: the base proxy and every row's start
    proxy/train/                  the target proxy's training run (log.jsonl, checkpoints)
    proxy/target-proxy.pth        its network alone (dflowgen.models.registry.export_network)
    sets/<set>/                   each set's shards (dflowgen generate's own format and resume)
    runs/<set>/seed-<s>/last.pth  each row's trained network, one run per seed
    stages/<stage>.json           completion markers (dflowgen.reproduce.stages)
    table.md, results.json, plots/*.png

Every stage resumes what an interrupted run left (generate keeps complete shards, training
continues from ``last.pth``) and is skipped once its marker exists.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.data.spec import open_spec
from dflowgen.devices import resolve_device
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.files import atomic_write_bytes, file_sha256
from dflowgen.data.sets import existing_header
from dflowgen.data.statistics import set_statistics
from dflowgen.files import check_output_path
from dflowgen.generate import generate_set, header_differences, recipe_content, set_header
from dflowgen.models.raft import load_raft
from dflowgen.optimize.proxies import Proxies, load_proxies
from dflowgen.recipes import Recipe, recipe_to_toml, with_overrides
from dflowgen.reproduce.data import SintelSplit, data_root, find_weights, flow_magnitudes
from dflowgen.reproduce.plots import HISTOGRAM_BINS
from dflowgen.reproduce.report import Report, write_report
from dflowgen.reproduce.stages import ExperimentSummary, StageRunner, digest, finish_training, read_log
from dflowgen.train.config import TrainConfig, result_settings
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME
from dflowgen.models.registry import export_network

BASE_SET = Path("base") / "set"
BASE_RUN = Path("base") / "train"
BASE_WEIGHTS = Path("base") / "base.pth"
PROXY_RUN = Path("proxy") / "train"
PROXY_WEIGHTS = Path("proxy") / "target-proxy.pth"
SETS_FOLDER = "sets"
RUNS_FOLDER = "runs"
RECIPE_NAME = "recipe.toml"

_EFFECT_PROBABILITIES = ("white_balance_prob", "noise_prob", "fog_prob", "blur_prob")
# Keys of a set's recipe that do not change its samples (how it is run, or other stages' settings);
# the proxies' paths are replaced by their files' hashes.


def is_optimised(variant: str) -> bool:
    """Whether a set variant is DFlow-optimised (else rendered as drawn)."""
    return variant.startswith("dflow")


def set_recipe(recipe: Recipe, variant: str, base_weights: Path, target_weights: Path) -> Recipe:
    """The recipe that makes set ``variant``: ``recipe`` with the variant's mode, proxies, α and effects."""
    overrides: dict[str, Any] = {"name": f"{recipe.name}-{variant}"}
    if is_optimised(variant):
        overrides.update({"generate.mode": "dflow", "optimize.base_weights": str(base_weights),
                          "optimize.target_weights": str(target_weights)})
    else:
        overrides["generate.mode"] = "random"
    if variant == "dflow-alpha-mix":
        overrides["optimize.alpha"] = list(recipe.reproduce.alpha_mix)
    if variant.endswith("no-effects"):
        overrides.update({f"render.{name}": 0.0 for name in _EFFECT_PROBABILITIES})
    return with_overrides(recipe, overrides)


class _Run(StageRunner):
    """The state one :func:`run_reproduction` call shares between its stages."""

    def __init__(self, recipe: Recipe, out: Path, device: torch.device, quiet: bool,
                 echo: Callable[[str], None]) -> None:
        self.recipe, self.config, self.device, self.quiet = recipe, recipe.reproduce, device, quiet
        self.root = data_root(self.config)
        self.split = SintelSplit.from_config(self.config, self.root)
        self.init_weights = find_weights(self.config.init, self.root) if self.config.init else None
        self.init_sha256 = file_sha256(self.init_weights) if self.init_weights is not None else ""
        self.trains_base = self.config.base_samples > 0
        if not self.trains_base and self.init_weights is None:
            raise DflowgenError("reproduce.init names no network and reproduce.base_samples is 0, so there is no base: "
                                "set init to a weights file or store name, or base_samples > 0 to train one")
        if self.trains_base and self.config.base_seed == recipe.generate.seed:
            raise DflowgenError(f"reproduce.base_seed equals generate.seed ({recipe.generate.seed}): the base dataset "
                                "would repeat the rows' random set; choose another base_seed")
        models = {"reproduce.proxy.model": self.config.proxy.model, "optimize.base_model": recipe.optimize.base_model,
                  "optimize.target_model": recipe.optimize.target_model}
        if self.trains_base:
            models["reproduce.base.model"] = self.config.base.model
        if len(set(models.values())) > 1:
            listed = ", ".join(f"{key} = {value}" for key, value in models.items())
            raise DflowgenError(f"the base, its fine-tuned target proxy and the proxies must be one architecture: {listed}")
        self.base_weights = out / BASE_WEIGHTS if self.trains_base else self.init_weights
        self.base_digest = ""  # what the base depends on; set by the base stages
        rows = len(self.config.sets) * len(self.config.seeds)
        # the base: its set, training, evaluation and the init's evaluation; or only its evaluation
        base_stages = 3 + bool(self.init_weights) if self.trains_base else 1
        super().__init__(out, base_stages + 2 + len(self.config.sets) + 2 * rows, echo)


def _train_run(run: _Run, config: TrainConfig, sources: list[DataSource], run_dir: Path, init: Path | None,
               recipe: Recipe) -> dict[str, Any]:
    """Train (or finish training) the run in ``run_dir``; its checkpoint and last log record."""
    return finish_training(run, config, sources, run_dir, init, device=str(run.device), quiet=run.quiet,
                           recipe_text=recipe_to_toml(recipe))


def _base(run: _Run, bank: LayerBank) -> None:
    """Make the base network (``init`` trained on the base dataset), or take ``init`` as it is; sets ``run.base_digest``."""
    if not run.trains_base:
        run.base_digest = digest({"init_sha256": run.init_sha256})
        return
    recipe = with_overrides(set_recipe(run.recipe, "random", Path(), Path()),
                            {"name": f"{run.recipe.name}-base", "generate.seed": run.config.base_seed})
    set_settings, set_result = _make_set(run, "base set", recipe, run.out / BASE_SET, run.config.base_samples, bank,
                                         proxies=None, settings_extra={})
    config = run.config.base
    settings = {"train": result_settings(config), "set": digest(set_settings), "init_sha256": run.init_sha256}

    def work() -> dict[str, Any]:
        source = _training_data(run, set_result, set_result["samples"])
        base_recipe = dataclasses.replace(run.recipe, name=f"{run.recipe.name}-base", train=config)
        result = _train_run(run, config, [source], run.out / BASE_RUN, run.init_weights, base_recipe)
        export_network(run.out / result["checkpoint"], run.out / BASE_WEIGHTS)
        return {**result, "weights": str(BASE_WEIGHTS)}

    start = run.init_weights.name if run.init_weights is not None else "a fresh network"
    what = (f"base: train {config.model} from {start} on the {set_result['samples']} base samples for "
            f"{config.num_steps} steps of batch {config.batch_size}")
    run.stage("base", settings, what, work)
    run.base_digest = digest(settings)


def _proxy_settings(run: _Run) -> dict[str, Any]:
    """What the target proxy depends on: its training settings, the base network, the scenes and their scale."""
    return {"train": result_settings(run.config.proxy), "base": run.base_digest,
            "scenes": list(run.config.proxy_scenes), "sintel_scale": run.config.sintel_scale,
            "pairs": len(run.split.proxy)}


def _target_proxy(run: _Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune the base on the proxy scenes and export its network; the stage's settings and result."""
    config, settings = run.config.proxy, _proxy_settings(run)

    def work() -> dict[str, Any]:
        source = DataSource(run.split.proxy, name=run.split.proxy_spec)
        proxy_recipe = dataclasses.replace(run.recipe, name=f"{run.recipe.name}-target-proxy", train=config)
        result = _train_run(run, config, [source], run.out / PROXY_RUN, run.base_weights, proxy_recipe)
        export_network(run.out / result["checkpoint"], run.out / PROXY_WEIGHTS)
        return {**result, "weights": str(PROXY_WEIGHTS)}

    what = (f"target proxy: fine-tune the base on {len(run.split.proxy)} pairs of "
            f"{', '.join(run.config.proxy_scenes)} for {config.num_steps} steps")
    return settings, run.stage("target-proxy", settings, what, work)


def _set_settings(recipe: Recipe, count: int, bank: LayerBank, extra: dict[str, Any]) -> dict[str, Any]:
    """What a set's samples depend on: its recipe's content keys, its size, the layer bank, and ``extra`` (proxies)."""
    return {"recipe": recipe_content(recipe), "num_samples": count, "assets": bank.fingerprint, **extra}


def _row_set(run: _Run, variant: str, bank: LayerBank, proxy_digest: str,
             proxies: Callable[[], Proxies]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set ``variant`` of the rows, in ``OUT/sets/<variant>``; its settings and result."""
    recipe = set_recipe(run.recipe, variant, run.base_weights, run.out / PROXY_WEIGHTS)
    extra = {"base": run.base_digest, "target_proxy": proxy_digest} if is_optimised(variant) else {}
    return _make_set(run, f"set {variant}", recipe, run.out / SETS_FOLDER / variant, run.config.num_samples, bank,
                     proxies if is_optimised(variant) else None, extra, stage=f"set-{variant}")


def _make_set(run: _Run, label: str, recipe: Recipe, folder: Path, count: int, bank: LayerBank,
              proxies: Callable[[], Proxies] | None, settings_extra: dict[str, Any],
              stage: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``count`` samples of ``recipe`` into ``folder`` (resuming its shards); the stage's settings and result."""
    settings = _set_settings(recipe, count, bank, settings_extra)
    optimised = recipe.generate.mode == "dflow"

    def work() -> dict[str, Any]:
        old = existing_header(folder)
        if old is not None:
            differences = header_differences(old, set_header(recipe, count, bank.fingerprint))
            if differences:
                raise DflowgenError(f"{folder} holds a set made with other settings ({differences[0]}); "
                                    "choose another --out")
        generate_set(recipe, count, folder, device=run.device, assets=bank,
                     proxies=proxies() if proxies is not None else None, quiet=run.quiet)
        statistics = set_statistics(folder, bins=HISTOGRAM_BINS).to_dict()
        statistics["folder"] = run.relative(folder)
        return {"folder": run.relative(folder), "samples": statistics["num_samples"],
                "dropped": statistics["dropped"], "statistics": statistics}

    how = "optimise" if optimised else "render"
    what = f"{label}: {how} {count} samples at {recipe.render.width}x{recipe.render.height}"
    return settings, run.stage(stage or label.replace(" ", "-"), settings, what, work)


def _training_data(run: _Run, set_result: dict[str, Any], samples: int) -> DataSource:
    """A set's first ``samples`` samples as a training source."""
    spec = f"shards:{run.out / set_result['folder']}"
    dataset: Dataset = open_spec(spec).dataset
    if samples < len(dataset):
        dataset = Subset(dataset, range(samples))
    return DataSource(dataset, name=spec)


def _train_on_set(run: _Run, variant: str, seed: int, set_settings: dict[str, Any], set_result: dict[str, Any],
                  samples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    recipe = with_overrides(run.recipe, {"train.seed": seed})
    config = recipe.train
    from_base = run.config.rows_start == "base"
    settings = {"train": result_settings(config), "set": digest(set_settings), "samples": samples,
                "start": run.base_digest if from_base else "scratch"}
    run_dir = run.out / RUNS_FOLDER / variant / f"seed-{seed}"

    def work() -> dict[str, Any]:
        source = _training_data(run, set_result, samples)
        return _train_run(run, config, [source], run_dir, run.base_weights if from_base else None, recipe)

    what = (f"train {config.model} from {'the base' if from_base else 'scratch'} on {variant} ({samples} samples), "
            f"seed {seed}: {config.num_steps} steps of batch {config.batch_size}")
    return settings, run.stage(f"train-{variant}-seed{seed}", settings, what, work)


def _evaluate(run: _Run, row: str, name: str, weights: Path, upstream: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``weights`` on every evaluation column; per column, the EvalResult as a dict."""
    columns = eval_columns(run)
    settings = {"model": upstream, "iters": run.config.eval_iters, "sintel_scale": run.config.sintel_scale,
                "columns": {column: scenes for column, (_, scenes) in columns.items()}}

    def work() -> dict[str, Any]:
        model = load_raft(weights).to(run.device)
        return {"columns": {column: evaluate(model, dataset, run.config.eval_iters, all_pixels=True,
                                             device=run.device, progress=not run.quiet,
                                             desc=f"eval {row}").to_dict()
                            for column, (dataset, _) in columns.items()}}

    what = f"evaluate {row} on {', '.join(columns)} ({run.config.eval_iters} iterations)"
    return run.stage(name, settings, what, work)


def eval_columns(run: _Run) -> dict[str, tuple[Dataset, list[str]]]:
    """The evaluation sets, by column name: the held-out scenes, and (optionally) the proxy scenes."""
    columns = {"held-out": (run.split.held_out, list(run.config.eval_scenes))}
    if run.config.eval_proxy_scenes:
        columns["proxy scenes"] = (run.split.proxy, list(run.config.proxy_scenes))
    return columns


def run_reproduction(recipe: Recipe, out: str | Path, *, device: str | torch.device | None = None,
                     quiet: bool = False, echo: Callable[[str], None] | None = None) -> ExperimentSummary:
    """Run (or resume) the reproduction ``recipe`` describes into ``out``, and write its table, JSON and plots.

    Args:
        recipe: a recipe with a ``[reproduce]`` section (``recipes/reproduce-*.toml``).
        out: the results folder; rerunning into it skips every finished stage.
        device: "cpu", "cuda", "cuda:N"; None picks CUDA when available.
        quiet: no progress bars.
        echo: called with one line per stage (e.g. ``print``); None prints nothing.

    Raises DflowgenError for a missing data root, unknown scenes, missing weights, or an ``out``
    whose finished stages were made with other settings.
    """
    started = time.perf_counter()
    out = Path(out)
    check_output_path(out)
    run = _Run(recipe, out, resolve_device(device), quiet, echo or (lambda line: None))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / RECIPE_NAME, recipe_to_toml(recipe).encode())

    bank = load_layer_bank(None, size=recipe.render.canvas_size)
    _base(run, bank)
    proxy_settings, proxy = _target_proxy(run)
    proxy_settings_digest = digest(proxy_settings)
    loaded: list[Proxies] = []

    def proxies() -> Proxies:
        if not loaded:
            optimize = set_recipe(recipe, "dflow", run.base_weights, run.out / PROXY_WEIGHTS).optimize
            loaded.append(load_proxies(optimize, run.device))
        return loaded[0]

    sets = {variant: _row_set(run, variant, bank, proxy_settings_digest, proxies) for variant in run.config.sets}
    sizes = {variant: result["samples"] for variant, (_, result) in sets.items()}
    if min(sizes.values()) < 1:
        empty = ", ".join(variant for variant, size in sizes.items() if size < 1)
        raise DflowgenError(f"set(s) {empty} kept no samples (every one missed optimize.keep_threshold)")
    common = min(sizes.values())

    trained: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}
    for variant, (set_settings, set_result) in sets.items():
        samples = common if run.config.equal_sizes else sizes[variant]
        for seed in run.config.seeds:
            trained[variant, seed] = _train_on_set(run, variant, seed, set_settings, set_result, samples)

    evaluations: dict[str, Any] = {}
    if run.trains_base and run.init_weights is not None:
        evaluations["initialisation"] = _evaluate(run, "the initialisation", "eval-initialisation",
                                                  run.init_weights, {"init_sha256": run.init_sha256})
    evaluations["base"] = _evaluate(run, "the base", "eval-base", run.base_weights, {"base": run.base_digest})
    evaluations["target proxy"] = _evaluate(run, "the target proxy", "eval-target-proxy", out / PROXY_WEIGHTS,
                                            {"target_proxy": proxy_settings_digest})
    for (variant, seed), (settings, result) in trained.items():
        evaluations[f"{variant}/seed-{seed}"] = _evaluate(run, f"{variant} seed {seed}", f"eval-{variant}-seed{seed}",
                                                          out / result["checkpoint"], {"train": digest(settings)})

    columns = eval_columns(run)
    height, width = run.split.held_out[0].img1.shape[:2]
    curves = {"base": read_log(out / BASE_RUN / LOG_NAME), "target proxy": read_log(out / PROXY_RUN / LOG_NAME)}
    curves.update({f"{variant}/seed-{seed}": read_log(out / result["folder"] / LOG_NAME)
                   for (variant, seed), (_, result) in trained.items()})
    report = Report(
        name=recipe.name, config=run.config, train=recipe.train,
        init_name=run.init_weights.name if run.init_weights is not None else "scratch",
        base=run.results.get("base"), base_set=run.results.get("base-set"),
        columns={column: scenes for column, (_, scenes) in columns.items()},
        frame_size=(width, height), proxy=proxy,
        sets={variant: result for variant, (_, result) in sets.items()},
        runs={variant: {seed: trained[variant, seed][1] for seed in run.config.seeds} for variant in sets},
        evaluations=evaluations,
        samples={variant: common if run.config.equal_sizes else sizes[variant] for variant in sets},
        curves=curves,
        target_magnitudes={column: flow_magnitudes(dataset) for column, (dataset, _) in columns.items()},
        seconds={stage: result["seconds"] for stage, result in run.results.items()},
    )
    table, results = write_report(out, report)
    return ExperimentSummary(out, table, results, run.stages_run, run.stages_skipped,
                               time.perf_counter() - started)

