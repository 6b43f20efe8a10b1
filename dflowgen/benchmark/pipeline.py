"""One known-target benchmark, end to end: base → per hidden target: its sets, proxies, searches, rows → report.

``OUT`` (the ``--out`` folder) holds::

    recipe.toml                          the resolved recipe of the last run
    base/set, base/train, base/base.pth  the start of everything: the base trained on default-domain data
    <target>/target/{train,frames,test}  the hidden target's sets (shards; only the evaluation reads test)
    <target>/proxy/                      the base fine-tuned on target-train: DFlow's target proxy
    <target>/proxy-label-free/           the base fine-tuned on target-frames without labels
    <target>/search-supervised/          the search scored by AEPE on target-train (an optuna study folder)
    <target>/search-selfsup/             the search scored by the self-supervised loss on target-frames
    <target>/sets/<row>/                 each method's set
    <target>/runs/<row>/seed-<k>/        each row's network, one run per seed
    stages/<stage>.json                  completion markers; table.md, results.json, plots/

Every stage resumes what an interrupted run left and is skipped once its marker exists.
The methods never read a hidden recipe: only the target sets, the oracle row and the
report's range distances do. The self-supervised search is scored on target-frames without
their labels (its metric reads frames only); their AEPE is recorded beside, for the Spearman
correlation the report shows, and picks nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.benchmark.report import BenchmarkReport, TargetReport, write_report
from dflowgen.data.shard_dataset import ShardDataset
from dflowgen.data.spec import open_spec
from dflowgen.devices import resolve_device
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.files import atomic_write_bytes, file_sha256
from dflowgen.data.statistics import set_statistics
from dflowgen.files import check_output_path
from dflowgen.generate import generate_mix, generate_set, recipe_content
from dflowgen.reproduce.plots import HISTOGRAM_BINS
from dflowgen.models.raft import load_raft
from dflowgen.optimize.proxies import load_proxies
from dflowgen.fields import to_dict
from dflowgen.recipes import Recipe, load_recipe, parse_recipe, recipe_to_toml, with_overrides
from dflowgen.reproduce.stages import ExperimentSummary, StageRunner, digest, finish_training, read_log
from dflowgen.search.report import Candidate, candidates
from dflowgen.search.storage import quiet_optuna
from dflowgen.search.run import StudyHandle, load_study, report_study, run_search
from dflowgen.train.config import TrainConfig, result_settings
from dflowgen.train.data import DataSource
from dflowgen.train.labelfree.target_proxy import make_proxy
from dflowgen.train.trainer import LOG_NAME
from dflowgen.models.registry import export_network
from dflowgen.weights import resolve_weights

TARGET_SETS = ("train", "frames", "test")
SEARCHES = {"supervised": ("search-supervised", "train"), "self-supervised": ("search-selfsup", "frames")}
"""metric → (study folder, the target set it is scored on)."""


class _Run(StageRunner):
    """The state one :func:`run_benchmark` call shares between its stages."""

    def __init__(self, recipe: Recipe, out: Path, device: torch.device, quiet: bool,
                 echo: Callable[[str], None]) -> None:
        self.recipe, self.config, self.device, self.quiet = recipe, recipe.benchmark, device, quiet
        config = self.config
        if not config.targets:
            raise DflowgenError("benchmark.targets names no hidden target recipe")
        self.hidden = {Path(name).stem: load_recipe(name) for name in config.targets}
        if len(self.hidden) != len(config.targets):
            raise DflowgenError(f"benchmark.targets names two recipes with one name: {list(config.targets)}")
        for name, hidden in self.hidden.items():
            if (hidden.render.width, hidden.render.height) != (recipe.render.width, recipe.render.height):
                raise DflowgenError(f"hidden target {name} renders {hidden.render.width}x{hidden.render.height}, "
                                    f"the benchmark {recipe.render.width}x{recipe.render.height}: make them one size")
        seeds = {recipe.generate.seed, config.base_seed, *config.target_seeds}
        if len(seeds) != 5:
            raise DflowgenError(f"generate.seed ({recipe.generate.seed}), benchmark.base_seed and target_seeds must all "
                                "differ: every set must be its own draw")
        models = {recipe.train.model, recipe.optimize.base_model, recipe.optimize.target_model,
                  config.base.model, config.proxy.model, config.label_free_proxy.model, config.search_train.model}
        if len(models) > 1:
            raise DflowgenError(f"the benchmark trains one architecture from one base; the recipe names "
                                f"{', '.join(sorted(models))}")
        self.init_weights = resolve_weights(config.init) if config.init else None
        self.init_sha256 = file_sha256(self.init_weights) if self.init_weights is not None else ""
        self.base_weights = out / "base" / "base.pth"
        self.base_digest = ""
        runs = len(config.rows) * len(config.seeds)
        per_target = len(TARGET_SETS) + 2 + len(SEARCHES) + len(config.rows) + 2 * runs + 1
        super().__init__(out, 2 + len(config.targets) * per_target, echo)


def _make_set(run: _Run, name: str, what: str, recipes: list[Recipe], folder: Path, count: int, bank: LayerBank,
              extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Generate ``count`` samples of one recipe (or a mix of several) into ``folder``; the digest of the stage's
    settings (what the set depends on) and its result."""
    settings = {"recipes": [recipe_content(recipe) for recipe in recipes], "num_samples": count,
                "assets": bank.fingerprint, **extra}
    optimised = recipes[0].generate.mode == "dflow"

    def work() -> dict[str, Any]:
        options = dict(device=run.device, assets=bank, quiet=run.quiet)
        if optimised:
            options["proxies"] = load_proxies(recipes[0].optimize, run.device)
        if len(recipes) == 1:
            generate_set(recipes[0], count, folder, **options)
        else:
            generate_mix(recipes, count, folder, **options)
        parts = [folder] if len(recipes) == 1 else sorted(path for path in folder.iterdir() if path.is_dir())
        statistics = [set_statistics(part, bins=HISTOGRAM_BINS).to_dict() for part in parts]
        return {"folder": run.relative(folder), "samples": sum(s["num_samples"] for s in statistics),
                "statistics": statistics}

    how = "optimise" if optimised else "render"
    return digest(settings), run.stage(name, settings, f"{what}: {how} {count} samples", work)


def _train(run: _Run, name: str, what: str, config: TrainConfig, source: DataSource, run_dir: Path,
           init: Path | None, settings: dict[str, Any], export: Path | None = None) -> str:
    """Train (or finish) ``run_dir`` as stage ``name``, then export its network to ``export``; the settings' digest."""
    recipe = dataclasses.replace(run.recipe, train=config)
    settings = {"train": result_settings(config), **settings}

    def work() -> dict[str, Any]:
        result = finish_training(run, config, [source], run_dir, init, device=str(run.device), quiet=run.quiet,
                                 recipe_text=recipe_to_toml(recipe))
        if export is not None:
            export_network(run.out / result["checkpoint"], export)
        return result

    run.stage(name, settings, what, work)
    return digest(settings)


def _base(run: _Run, bank: LayerBank) -> None:
    """The base every target shares: ``init`` trained on the default domain's random data."""
    config = run.config
    recipe = with_overrides(run.recipe, {"generate.mode": "random", "generate.seed": config.base_seed})
    folder = run.out / "base" / "set"
    set_digest, _ = _make_set(run, "base-set", "base set (the default domain)", [recipe], folder,
                              config.base_samples, bank, {})
    source = DataSource(ShardDataset(folder), name=f"shards:{folder}")
    start = run.init_weights.name if run.init_weights is not None else "a fresh network"
    run.base_digest = _train(run, "base", f"base: train {config.base.model} from {start} for {config.base.num_steps} "
                             "steps", config.base, source, run.out / "base" / "train", run.init_weights,
                             {"set": set_digest, "init_sha256": run.init_sha256}, export=run.base_weights)


def _hidden_recipe(run: _Run, target: str, seed: int) -> Recipe:
    """The benchmark recipe with the hidden target's ``[render]`` and ``seed``: what the target sets are drawn from."""
    return with_overrides(dataclasses.replace(run.recipe, render=run.hidden[target].render),
                          {"name": target, "generate.mode": "random", "generate.seed": seed})


def _target_sets(run: _Run, target: str, bank: LayerBank) -> tuple[dict[str, Path], dict[str, str]]:
    """Target-train, -frames and -test of a hidden target: their folders and the digests of what made them."""
    counts = {"train": run.config.train_pairs, "frames": run.config.frames_pairs, "test": run.config.test_pairs}
    folders, digests = {}, {}
    for (kind, count), seed in zip(counts.items(), run.config.target_seeds):
        folders[kind] = run.out / target / "target" / kind
        digests[kind], _ = _make_set(run, f"{target}-target-{kind}", f"{target}: target-{kind}",
                                     [_hidden_recipe(run, target, seed)], folders[kind], count, bank, {})
    return folders, digests


def _proxies(run: _Run, target: str, folders: dict[str, Path], digests: dict[str, str]) -> dict[str, Path]:
    """DFlow's target proxy from target-train, and the label-free one from target-frames; their files."""
    config = run.config
    proxy_dir = run.out / target / "proxy"
    supervised = proxy_dir / "proxy.pth"
    source = DataSource(ShardDataset(folders["train"]), name=f"shards:{folders['train']}")
    _train(run, f"{target}-proxy", f"{target}: target proxy, the base fine-tuned on target-train", config.proxy,
           source, proxy_dir / "train", run.base_weights, {"base": run.base_digest, "data": digests["train"]},
           export=supervised)

    label_free = run.out / target / "proxy-label-free" / "proxy.pth"
    frames = DataSource(ShardDataset(folders["frames"]), name=f"frames of shards:{folders['frames']}")

    def work() -> dict[str, Any]:
        label_free.parent.mkdir(parents=True, exist_ok=True)
        recipe = dataclasses.replace(run.recipe, train=config.label_free_proxy)
        made = make_proxy(config.label_free_proxy, [frames], run.base_weights, label_free,
                          run_dir=label_free.parent / "train", device=str(run.device), quiet=run.quiet,
                          recipe_text=recipe_to_toml(recipe))
        return {"weights": run.relative(made.path), "steps": made.step}

    run.stage(f"{target}-proxy-label-free", {"train": result_settings(config.label_free_proxy), "base": run.base_digest,
                                             "data": digests["frames"]},
              f"{target}: label-free proxy ({config.label_free_proxy.mode}) from target-frames", work)
    return {"supervised": supervised, "label-free": label_free}


def _searches(run: _Run, target: str, folders: dict[str, Path], digests: dict[str, str]) -> dict[str, Path]:
    """Both searches of the target; their study folders (``top-1.toml`` … inside)."""
    studies = {}
    for metric, (folder_name, scored_on) in SEARCHES.items():
        folder = run.out / target / folder_name
        recipe = with_overrides(dataclasses.replace(run.recipe, name=f"{target}-{folder_name}",
                                                    train=run.config.search_train), {"search.metric": metric})
        spec = f"shards:{folders[scored_on]}"

        def work(recipe: Recipe = recipe, spec: str = spec, folder: Path = folder) -> dict[str, Any]:
            run_search(recipe, spec, folder, init=str(run.base_weights), device=run.device, quiet=run.quiet)
            report, _ = report_study(folder)
            return {"folder": run.relative(folder), "spearman": report.spearman,
                    "candidates": [{"trial": c.trial, "metric": c.metric, "aepe": c.aepe,
                                    "selfsup": c.selfsup.get("total"), "lambda": c.lam}
                                   for c in candidates_of(folder)]}

        settings = {"render": to_dict(recipe.render), "generate": to_dict(recipe.generate),
                    "search": to_dict(recipe.search), "train": result_settings(recipe.train), "base": run.base_digest,
                    "scored_on": digests[scored_on]}
        run.stage(f"{target}-{folder_name}", settings,
                  f"{target}: search scored by the {metric} metric on target-{scored_on} "
                  f"({recipe.search.budget} candidates)", work)
        studies[metric] = folder
    return studies


def candidates_of(folder: Path) -> list[Candidate]:
    """The complete candidates of the study in ``folder``, by trial."""
    with quiet_optuna():
        study = load_study(StudyHandle.resolve(folder))
        return [c for c in candidates(study) if c.complete]


def _top(folder: Path, rank: int) -> Recipe:
    path = folder / f"top-{rank}.toml"
    if not path.is_file():
        raise DflowgenError(f"{folder} has no {path.name}: the search kept fewer than {rank} candidates")
    return parse_recipe(path.read_text(), source=str(path))


def row_recipes(run: _Run, target: str, row: str, studies: dict[str, Path],
                proxies: dict[str, Path]) -> list[Recipe]:
    """The recipe(s) that make row ``row``'s set (several for a top-3 mix)."""
    seed, base = run.recipe.generate.seed, str(run.base_weights)

    def dflow(recipe: Recipe, proxy: Path) -> Recipe:
        return with_overrides(recipe, {"generate.mode": "dflow", "optimize.base_weights": base,
                                       "optimize.target_weights": str(proxy)})

    def searched(metric: str, rank: int) -> Recipe:
        found = _top(studies[metric], rank)
        return dataclasses.replace(run.recipe, render=found.render, name=f"{target}-{row}-{rank}")

    random = with_overrides(run.recipe, {"generate.mode": "random"})
    if row == "random":
        return [random]
    if row == "dflow":
        return [dflow(random, proxies["supervised"])]
    if row == "dflow-label-free":
        return [dflow(random, proxies["label-free"])]
    if row == "oracle":
        return [_hidden_recipe(run, target, seed)]
    metric = "supervised" if row.startswith("search-supervised") or row == "search-dflow" else "self-supervised"
    if row == "search-dflow":
        return [dflow(searched(metric, 1), proxies["supervised"])]
    ranks = (1,) if row.endswith("top1") else (1, 2, 3)
    return [with_overrides(searched(metric, rank), {"generate.mode": "random"}) for rank in ranks]


def _rows(run: _Run, target: str, bank: LayerBank, studies: dict[str, Path], proxies: dict[str, Path],
          test_digest: str) -> dict[str, dict[str, Any]]:
    """Every row's set, cut to a common size, trained once per seed and evaluated on target-test."""
    sets = {}
    proxy_hashes = {kind: file_sha256(path) for kind, path in proxies.items()}
    for row in run.config.rows:
        recipes = row_recipes(run, target, row, studies, proxies)
        extra = {"base": run.base_digest, "proxies": proxy_hashes} if recipes[0].generate.mode == "dflow" else {}
        sets[row] = _make_set(run, f"{target}-set-{row}", f"{target}: set {row}", recipes,
                              run.out / target / "sets" / row, run.config.num_samples, bank, extra)
    common = min(result["samples"] for _, result in sets.values())
    if common < 1:
        raise DflowgenError(f"{target}: a set kept no samples (every one missed optimize.keep_threshold)")
    test = ShardDataset(run.out / target / "target" / "test")
    rows: dict[str, dict[str, Any]] = {}
    for row, (set_digest, set_result) in sets.items():
        folder = run.out / set_result["folder"]
        runs, evaluations = {}, {}
        for seed in run.config.seeds:
            config = dataclasses.replace(run.recipe.train, seed=seed)
            source = DataSource(Subset(open_spec(f"shards:{folder}").dataset, range(common)), name=f"shards:{folder}")
            run_dir = run.out / target / "runs" / row / f"seed-{seed}"
            settings = {"set": set_digest, "samples": common, "start": run.base_digest}
            name = f"{target}-train-{row}-seed{seed}"
            trained = _train(run, name, f"{target}: train {row} ({common} samples), seed {seed}", config, source,
                             run_dir, run.base_weights, settings)
            runs[seed] = run.results[name]
            evaluations[seed] = _evaluate(run, f"{target}-eval-{row}-seed{seed}", f"{target}: evaluate {row} seed {seed}",
                                          run.out / runs[seed]["checkpoint"], test, test_digest, {"train": trained})
        rows[row] = {"set": set_result, "samples": common, "runs": runs, "evaluations": evaluations}
    return rows


def _evaluate(run: _Run, name: str, what: str, weights: Path, test: ShardDataset, test_digest: str,
              upstream: dict[str, Any]) -> dict[str, Any]:
    """AEPE of ``weights`` on target-test (every pixel), as stage ``name``."""
    settings = {"model": upstream, "iters": run.config.eval_iters, "test": test_digest}

    def work() -> dict[str, Any]:
        model = load_raft(weights).to(run.device)
        result = evaluate(model, test, run.config.eval_iters, all_pixels=True, device=run.device,
                          progress=not run.quiet, desc=name)
        return {"aggregate": result.aggregate}

    return run.stage(name, settings, what, work)


def run_benchmark(recipe: Recipe, out: str | Path, *, device: str | torch.device | None = None, quiet: bool = False,
                  echo: Callable[[str], None] | None = None) -> ExperimentSummary:
    """Run (or resume) the benchmark ``recipe`` describes into ``out``, and write its table, JSON and plots.

    Raises DflowgenError for an unknown hidden target, a size mismatch, clashing seeds, missing
    weights, or an ``out`` whose finished stages were made with other settings.
    """
    started = time.perf_counter()
    out = Path(out)
    check_output_path(out)
    run = _Run(recipe, out, resolve_device(device), quiet, echo or (lambda line: None))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "recipe.toml", recipe_to_toml(recipe).encode())
    bank = load_layer_bank(None, size=recipe.render.canvas_size)
    _base(run, bank)
    targets = {}
    for target in run.hidden:
        folders, digests = _target_sets(run, target, bank)
        proxies = _proxies(run, target, folders, digests)
        studies = _searches(run, target, folders, digests)
        rows = _rows(run, target, bank, studies, proxies, digests["test"])
        base = _evaluate(run, f"{target}-eval-base", f"{target}: evaluate the base", run.base_weights,
                         ShardDataset(folders["test"]), digests["test"], {"base": run.base_digest})
        targets[target] = TargetReport(
            name=target, hidden=run.hidden[target], rows=rows, base=base,
            searches={metric: run.results[f"{target}-{folder}"] for metric, (folder, _) in SEARCHES.items()},
            test_statistics=set_statistics(folders["test"], bins=HISTOGRAM_BINS).to_dict(),
            curves={f"{row}/seed-{seed}": read_log(out / result["runs"][seed]["folder"] / LOG_NAME)
                    for row, result in rows.items() for seed in result["runs"]},
        )
    report = BenchmarkReport(name=recipe.name, recipe=recipe, targets=targets,
                             seconds={stage: result["seconds"] for stage, result in run.results.items()})
    table, results = write_report(out, report)
    return ExperimentSummary(out, table, results, run.stages_run, run.stages_skipped, time.perf_counter() - started)
