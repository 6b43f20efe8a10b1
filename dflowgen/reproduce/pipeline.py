"""One reproduction, end to end: target proxy → equal-sized sets → a network trained on each → evaluation → report.

``OUT`` (the ``--out`` folder) holds::

    recipe.toml                   the resolved recipe of the last run
    proxy/train/                  the target proxy's training run (log.jsonl, checkpoints)
    proxy/target-proxy.pth        its network alone (dflowgen.weights.export_weights)
    sets/<set>/                   each set's shards (dflowgen generate's own format and resume)
    runs/<set>/seed-<s>/          each network's training run
    stages/<stage>.json           completion markers (dflowgen.reproduce.stages)
    table.md, results.json, plots/*.png

Every stage resumes what an interrupted run left (generate keeps complete shards, training
continues from ``last.pth``) and is skipped once its marker exists.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from dflowgen.assets import LayerBank, load_layer_bank
from dflowgen.data.spec import open_spec
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import evaluate
from dflowgen.files import atomic_write_bytes, file_sha256
from dflowgen.generate import check_output_path, existing_header, generate_set, header_differences, set_header
from dflowgen.inspect import set_statistics
from dflowgen.models.raft import load_raft
from dflowgen.optimize.proxies import Proxies, load_proxies
from dflowgen.recipes import Recipe, flatten_keys, recipe_to_toml, to_dict, with_overrides
from dflowgen.reproduce.data import SintelSplit, data_root, find_weights, flow_magnitudes
from dflowgen.reproduce.report import HISTOGRAM_BINS, Report, write_report
from dflowgen.reproduce.stages import StageMarkers, digest
from dflowgen.train.checkpoint import LAST_NAME, load_checkpoint
from dflowgen.train.config import TrainConfig
from dflowgen.train.data import DataSource
from dflowgen.train.trainer import LOG_NAME, train
from dflowgen.weights import export_weights

PROXY_RUN = Path("proxy") / "train"
PROXY_WEIGHTS = Path("proxy") / "target-proxy.pth"
SETS_FOLDER = "sets"
RUNS_FOLDER = "runs"
RECIPE_NAME = "recipe.toml"

_EFFECT_PROBABILITIES = ("white_balance_prob", "noise_prob", "fog_prob", "blur_prob")
# Keys of a set's recipe that do not change its samples (how it is run, or other stages' settings);
# the proxies' paths are replaced by their files' hashes.
_NOT_CONTENT = ("name", "generate.batch_size", "generate.preview_count", "train.", "search.", "reproduce.",
                "optimize.base_weights", "optimize.target_weights")


@dataclasses.dataclass(frozen=True)
class ReproductionSummary:
    """What a reproduction produced: the table (markdown), every figure, and which stages ran or were skipped."""

    out: Path
    table: str
    results: dict[str, Any]
    stages_run: list[str]
    stages_skipped: list[str]
    seconds: float


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


class _Run:
    """The state one :func:`run_reproduction` call shares between its stages."""

    def __init__(self, recipe: Recipe, out: Path, device: torch.device, quiet: bool,
                 echo: Callable[[str], None]) -> None:
        self.recipe, self.config, self.out, self.device, self.quiet = recipe, recipe.reproduce, out, device, quiet
        self.echo = echo
        self.markers = StageMarkers(out)
        self.root = data_root(self.config)
        self.split = SintelSplit.from_config(self.config, self.root)
        self.base_weights = find_weights(recipe.optimize.base_weights, self.root)
        self.init_weights = find_weights(self.config.init, self.root) if self.config.init else None
        self.hashes = {path: file_sha256(path) for path in (self.base_weights, self.init_weights) if path is not None}
        self.stages_run: list[str] = []
        self.stages_skipped: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.total_stages = 1 + len(self.config.sets) * (1 + 2 * len(self.config.seeds)) + 1 + bool(self.init_weights)

    def stage(self, name: str, settings: dict[str, Any], what: str,
              work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run stage ``name`` (described by ``what``) unless its marker says it is done; its result either way."""
        number = len(self.stages_run) + len(self.stages_skipped) + 1
        done = self.markers.result(name, settings)
        if done is not None:
            self.stages_skipped.append(name)
            self.echo(f"[{number}/{self.total_stages}] {what}: done earlier, skipped")
        else:
            self.echo(f"[{number}/{self.total_stages}] {what}")
            started = time.perf_counter()
            result = work()
            result["seconds"] = round(time.perf_counter() - started, 1)
            self.stages_run.append(name)
            done = self.markers.finish(name, settings, result)
        self.results[name] = done
        return done

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DflowgenError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DflowgenError(f"--device {device}: CUDA is not available on this machine")
    return resolved


def _train_run(run: _Run, config: TrainConfig, sources: list[DataSource], run_dir: Path, init: Path | None,
               recipe: Recipe) -> dict[str, Any]:
    """Train (or finish training) the run in ``run_dir``; its checkpoint and last log record."""
    last = run_dir / LAST_NAME
    finished = last.is_file() and int(load_checkpoint(last)["step"]) >= config.num_steps
    if not finished:
        train(config, sources, run_dir, init=None if last.is_file() else init, resume=last.is_file(),
              device=str(run.device), quiet=run.quiet, recipe_text=recipe_to_toml(recipe))
    records = read_log(run_dir / LOG_NAME)
    return {"folder": run.relative(run_dir), "checkpoint": run.relative(last), "steps": config.num_steps,
            "batch_size": config.batch_size, "last_record": records[-1] if records else None}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The step records of a training log (events left out); empty when there is none."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if "event" not in record]


def _proxy_settings(run: _Run) -> dict[str, Any]:
    """What the target proxy depends on: its training settings, the base network, the scenes and their scale."""
    return {"train": to_dict(run.config.proxy), "base_sha256": run.hashes[run.base_weights],
            "scenes": list(run.config.proxy_scenes), "sintel_scale": run.config.sintel_scale,
            "pairs": len(run.split.proxy)}


def _target_proxy(run: _Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune the base proxy on the proxy scenes and export its network; the stage's settings and result."""
    config, settings = run.config.proxy, _proxy_settings(run)

    def work() -> dict[str, Any]:
        source = DataSource(run.split.proxy, name=run.split.proxy_spec)
        proxy_recipe = dataclasses.replace(run.recipe, name=f"{run.recipe.name}-target-proxy", train=config)
        result = _train_run(run, config, [source], run.out / PROXY_RUN, run.base_weights, proxy_recipe)
        export_weights(run.out / result["checkpoint"], run.out / PROXY_WEIGHTS)
        return {**result, "weights": str(PROXY_WEIGHTS)}

    what = (f"target proxy: fine-tune {run.base_weights.name} on {len(run.split.proxy)} pairs of "
            f"{', '.join(run.config.proxy_scenes)} for {config.num_steps} steps")
    return settings, run.stage("target-proxy", settings, what, work)


def _set_settings(recipe: Recipe, variant: str, run: _Run, bank: LayerBank, proxy_digest: str) -> dict[str, Any]:
    ignored = _NOT_CONTENT if is_optimised(variant) else (*_NOT_CONTENT, "optimize.")
    content = {key: value for key, value in flatten_keys(to_dict(recipe)).items() if not key.startswith(ignored)}
    settings = {"recipe": content, "num_samples": run.config.num_samples, "assets": bank.fingerprint}
    if is_optimised(variant):
        settings.update(base_sha256=run.hashes[run.base_weights], target_proxy=proxy_digest)
    return settings


def _make_set(run: _Run, variant: str, bank: LayerBank, proxy_digest: str,
              proxies: Callable[[], Proxies]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate set ``variant`` into ``OUT/sets/<variant>`` (resuming its shards); its settings and result."""
    recipe = set_recipe(run.recipe, variant, run.base_weights, run.out / PROXY_WEIGHTS)
    folder = run.out / SETS_FOLDER / variant
    settings = _set_settings(recipe, variant, run, bank, proxy_digest)
    count = run.config.num_samples

    def work() -> dict[str, Any]:
        old = existing_header(folder)
        if old is not None:
            differences = header_differences(old, set_header(recipe, count, bank.fingerprint))
            if differences:
                raise DflowgenError(f"{folder} holds a set made with other settings ({differences[0]}); "
                                    "choose another --out")
        generate_set(recipe, count, folder, device=run.device, assets=bank,
                     proxies=proxies() if is_optimised(variant) else None, quiet=run.quiet)
        statistics = set_statistics(folder, bins=HISTOGRAM_BINS).to_dict()
        statistics["folder"] = run.relative(folder)
        return {"folder": run.relative(folder), "samples": statistics["num_samples"],
                "dropped": statistics["dropped"], "statistics": statistics}

    how = "optimise" if is_optimised(variant) else "render"
    what = f"set {variant}: {how} {count} samples at {recipe.render.width}x{recipe.render.height}"
    return settings, run.stage(f"set-{variant}", settings, what, work)


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
    settings = {"train": to_dict(config), "set": digest(set_settings), "samples": samples,
                "init_sha256": run.hashes[run.init_weights] if run.init_weights is not None else ""}
    run_dir = run.out / RUNS_FOLDER / variant / f"seed-{seed}"

    def work() -> dict[str, Any]:
        source = _training_data(run, set_result, samples)
        return _train_run(run, config, [source], run_dir, run.init_weights, recipe)

    what = (f"train {config.model} on {variant} ({samples} samples), seed {seed}: "
            f"{config.num_steps} steps of batch {config.batch_size}")
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
                     quiet: bool = False, echo: Callable[[str], None] | None = None) -> ReproductionSummary:
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
    run = _Run(recipe, out, _device(device), quiet, echo or (lambda line: None))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / RECIPE_NAME, recipe_to_toml(recipe).encode())

    proxy_settings, proxy = _target_proxy(run)
    proxy_settings_digest = digest(proxy_settings)
    bank = load_layer_bank(None, size=recipe.render.canvas_size)
    loaded: list[Proxies] = []

    def proxies() -> Proxies:
        if not loaded:
            optimize = set_recipe(recipe, "dflow", run.base_weights, run.out / PROXY_WEIGHTS).optimize
            loaded.append(load_proxies(optimize, run.device))
        return loaded[0]

    sets = {variant: _make_set(run, variant, bank, proxy_settings_digest, proxies) for variant in run.config.sets}
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
    if run.init_weights is not None:
        evaluations["initialisation"] = _evaluate(run, "the initialisation", "eval-initialisation",
                                                  run.init_weights, {"init_sha256": run.hashes[run.init_weights]})
    evaluations["target proxy"] = _evaluate(run, "the target proxy", "eval-target-proxy", out / PROXY_WEIGHTS,
                                            {"target_proxy": proxy_settings_digest})
    for (variant, seed), (settings, result) in trained.items():
        evaluations[f"{variant}/seed-{seed}"] = _evaluate(run, f"{variant} seed {seed}", f"eval-{variant}-seed{seed}",
                                                          out / result["checkpoint"], {"train": digest(settings)})

    columns = eval_columns(run)
    height, width = run.split.held_out[0].img1.shape[:2]
    curves = {"target proxy": read_log(out / PROXY_RUN / LOG_NAME)}
    curves.update({f"{variant}/seed-{seed}": read_log(out / result["folder"] / LOG_NAME)
                   for (variant, seed), (_, result) in trained.items()})
    report = Report(
        name=recipe.name, config=run.config, train=recipe.train,
        init_name=run.init_weights.name if run.init_weights is not None else "scratch",
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
    return ReproductionSummary(out, table, results, run.stages_run, run.stages_skipped,
                               time.perf_counter() - started)

