"""Running a search: the optuna study, the candidate objective, and the worker loop shared by many processes.

A study lives in optuna storage — by default ``STUDY/study.db`` (SQLite), or any database
URL that several machines reach. Every ``dflowgen search`` process pointed at it is a
worker: it asks the study for the next candidate, scores it and records the result, until
``population × generations`` candidates are complete. So a killed search resumes by
running the command again (complete candidates are kept; the one that was running, silent
for ``search.grace_period`` seconds, is failed and queued again with the same λ), and
processes started together share the work. A worker whose remaining candidates are all
running elsewhere waits for them (and takes over any whose process died) before it writes
the outputs and exits.

The study records the resolved search recipe, target and initial weights; a process with
different settings is refused rather than mixing incomparable candidates.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from tqdm import tqdm

from dflowgen import __version__
from dflowgen.assets import load_layer_bank
from dflowgen.devices import resolve_device
from dflowgen.errors import DflowgenError, option
from dflowgen.files import atomic_write_bytes, removed_on_error
from dflowgen.models.registry import load_model
from dflowgen.recipes import Recipe, parse_recipe, recipe_to_toml
from dflowgen.search.candidate import score_candidate
from dflowgen.search.evolution import EvolutionSampler
from dflowgen.search.report import Report, make_report, write_outputs
from dflowgen.search.space import LambdaSpace, derive_space
from dflowgen.search.storage import open_storage, quiet_optuna, shown_url
from dflowgen.search.target import TargetSet, load_target
from dflowgen.weights import resolve_weights

STUDY_DB = "study.db"
STUDY_FILE = "study.json"
# Workers starting together on an empty database race to create its tables; how often a loser tries again.
# A worker gives up after this many candidates in a row failed (a systematic problem, not a bad λ).
MAX_CONSECUTIVE_FAILURES = 5


class CandidateFailed(Exception):
    """A candidate λ could not be scored (training diverged, invalid recipe): its trial fails, the search goes on."""


@dataclass(frozen=True)
class StudyHandle:
    """Where a study is: its folder (outputs), storage URL and name."""

    folder: Path
    storage_url: str
    name: str

    @classmethod
    def resolve(cls, folder: str | Path, storage: str | None = None, name: str | None = None) -> StudyHandle:
        """The study of ``folder``: explicit ``storage``/``name``, else those recorded in ``folder/study.json``,
        else ``sqlite:///folder/study.db`` and the folder's name."""
        folder = Path(folder)
        recorded: dict[str, Any] = {}
        if (folder / STUDY_FILE).is_file():
            try:
                recorded = json.loads((folder / STUDY_FILE).read_text())
            except (OSError, ValueError) as error:
                raise DflowgenError(f"cannot read {folder / STUDY_FILE}: {error}") from None
        url = storage or recorded.get("storage") or f"sqlite:///{(folder / STUDY_DB).resolve()}"
        if storage is None and recorded.get("password_hidden"):
            raise DflowgenError(f"the storage of {folder} ({url}) needs a password that is not recorded: "
                                f"give {option('storage', 'URL')}")
        return cls(folder, url, name or recorded.get("study_name") or folder.resolve().name)

    def record(self) -> None:
        """Write ``study.json`` so ``--report`` and later runs find the storage and name (never a password)."""
        text = json.dumps({"storage": shown_url(self.storage_url),
                           "password_hidden": make_url(self.storage_url).password is not None, "study_name": self.name,
                           "dflowgen_version": __version__}, indent=2)
        atomic_write_bytes(self.folder / STUDY_FILE, (text + "\n").encode())


def load_study(handle: StudyHandle, storage: RDBStorage | None = None) -> optuna.Study:
    """The existing study ``handle`` names (for reports); an error when there is none."""
    storage = storage or open_storage(handle.storage_url, 60, 120)
    try:
        return optuna.load_study(study_name=handle.name, storage=storage)
    except KeyError:
        raise DflowgenError(f"no search study named '{handle.name}' in {shown_url(handle.storage_url)}") from None


def search_settings(recipe: Recipe, target_spec: str, init: str | None) -> dict[str, str]:
    """What makes candidates comparable: the resolved search recipe, the target, the initial weights."""
    return {"recipe": recipe_to_toml(recipe), "target": target_spec, "init": init or ""}


def _differences(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    differences = [f"{key}: {stored.get(key)!r} -> {current[key]!r}" for key in ("target", "init")
                   if stored.get(key) != current[key]]
    old_lines = set(stored.get("recipe", "").splitlines())
    new_lines = set(current["recipe"].splitlines())
    differences += [f"recipe: {line}" for line in sorted(new_lines - old_lines) if line.strip()]
    return differences


def open_search_study(handle: StudyHandle, recipe: Recipe, settings: dict[str, str],
                      space: LambdaSpace) -> optuna.Study:
    """Create the study, or join it when it exists with the same settings."""
    search = recipe.search
    storage = open_storage(handle.storage_url, search.heartbeat_interval, search.grace_period)
    sampler = EvolutionSampler(space.distributions(), search.population, crossover_prob=search.crossover_prob,
                               swap_prob=search.swap_prob, mutation_prob=search.mutation_prob,
                               mutation_scale=search.mutation_scale, seed=search.seed,
                               first=space.params_of(recipe))
    study = optuna.create_study(study_name=handle.name, storage=storage, sampler=sampler, direction="minimize",
                                load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        shown = "; ".join(_differences(stored, settings)[:4])
        raise DflowgenError(f"study '{handle.name}' in {shown_url(handle.storage_url)} was started with other settings "
                            f"({shown or 'recipe text differs'}); use another {option('out')} or {option('study_name')}")
    return study


def stored_recipe(study: optuna.Study) -> Recipe:
    """The search recipe a study was started with."""
    return parse_recipe(study.user_attrs["settings"]["recipe"], source=f"study '{study.study_name}'")


@dataclass(frozen=True)
class SearchSummary:
    """How a worker's run ended: candidates complete in the study, evaluated by this process, the best so far."""

    complete: int
    budget: int
    evaluated_here: int
    best_value: float | None
    best_trial: int | None


def _over_budget(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether ``budget`` candidates numbered before trial ``number`` are complete or running already.

    Workers can start the last candidates at the same moment; this check (against trial
    numbers, which the storage hands out in order) lets exactly ``budget`` of them run.
    """
    ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return sum(trial.number < number for trial in ahead) >= budget


def worker_id() -> str:
    """``host:pid`` of this process: which worker, on which machine, ran a candidate."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_objective(study: optuna.Study, recipe: Recipe, space: LambdaSpace, target: TargetSet,
                   init: str | Path | None, device: torch.device,
                   assets: str | Path | None) -> Callable[[optuna.Trial], float]:
    """The optuna objective: λ from the sampler, the candidate's score (user attributes keep the details)."""
    search = recipe.search
    bank = load_layer_bank(assets, size=recipe.render.canvas_size)

    def objective(trial: optuna.Trial) -> float:
        lam = space.suggest(trial)
        trial.set_user_attr("lambda", lam)
        trial.set_user_attr("worker", worker_id())
        try:
            candidate = space.apply(recipe, lam, name=f"{study.study_name}-trial-{trial.number}")
            score = score_candidate(candidate, search, target, bank, init, device)
        except DflowgenError as error:
            trial.set_user_attr("error", str(error))
            raise CandidateFailed(str(error)) from None
        trial.set_user_attr("selfsup", score.selfsup)
        trial.set_user_attr("aepe", score.aepe)
        trial.set_user_attr("seconds", score.seconds)
        if not math.isfinite(score.metric):  # the network diverged without the trainer noticing
            trial.set_user_attr("error", f"the metric is {score.metric}")
            raise CandidateFailed(f"the metric is {score.metric}")
        return score.metric

    return objective


def _state_counts(study: optuna.Study) -> Counter:
    return Counter(trial.state for trial in study.get_trials(deepcopy=False))


def _best(study: optuna.Study) -> tuple[float | None, int | None]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, None
    best = min(complete, key=lambda trial: (trial.value, trial.number))
    return best.value, best.number


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: int, *,
         max_candidates: int | None = None, poll_seconds: float = 5.0, quiet: bool = False,
         on_candidate: Callable[[], None] | None = None) -> SearchSummary:
    """Evaluate candidates of ``study`` until ``budget`` are complete (or ``max_candidates`` ran here).

    While every remaining candidate is running in other processes, polls every
    ``poll_seconds`` (failing any whose heartbeat stopped, which queues it again here). A
    trial started beyond the budget by a race between workers is pruned before it does
    any work. ``objective`` may raise :class:`CandidateFailed` to fail its trial.
    """

    def within_budget(trial: optuna.Trial) -> float:
        if _over_budget(study, trial.number, budget):
            trial.set_user_attr("over_budget", True)
            raise optuna.TrialPruned()
        return objective(trial)

    evaluated, failures = 0, 0
    counts = _state_counts(study)
    bar = tqdm(total=budget, initial=min(counts[TrialState.COMPLETE], budget), desc="search", unit="candidate",
               dynamic_ncols=True, disable=quiet or not sys.stderr.isatty())
    try:
        while True:
            fail_stale_trials(study)
            counts = _state_counts(study)
            bar.update(min(counts[TrialState.COMPLETE], budget) - bar.n)
            best_value, best_trial = _best(study)
            if best_value is not None:
                bar.set_postfix(best=f"{best_value:.4g}", trial=best_trial)
            if counts[TrialState.COMPLETE] >= budget or (max_candidates is not None and evaluated >= max_candidates):
                break
            if counts[TrialState.WAITING] == 0 and counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] >= budget:
                bar.set_postfix(waiting_for=f"{counts[TrialState.RUNNING]} running elsewhere")
                time.sleep(poll_seconds)
                continue
            finished: list[optuna.trial.FrozenTrial] = []
            study.optimize(within_budget, n_trials=1, catch=(CandidateFailed,), gc_after_trial=False,
                           callbacks=[lambda _, trial: finished.append(trial)])
            last = finished[-1]
            if last.state == TrialState.PRUNED:
                continue
            evaluated += 1
            if last.state == TrialState.FAIL:
                failures += 1
                tqdm.write(f"dflowgen: candidate {last.number} failed: {last.user_attrs.get('error', 'unknown error')}",
                           file=sys.stderr)
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise DflowgenError(f"{failures} candidates in a row failed; the last: "
                                        f"{last.user_attrs.get('error', 'unknown error')}")
            else:
                failures = 0
            if on_candidate is not None:
                on_candidate()
    finally:
        bar.close()
    best_value, best_trial = _best(study)
    return SearchSummary(counts[TrialState.COMPLETE], budget, evaluated, best_value, best_trial)


def _prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DflowgenError(f"study folder {folder} cannot be created: a file is in the way") from None
    except OSError as error:
        raise DflowgenError(f"cannot create study folder {folder}: {error.strerror or error}") from None
    if not folder.is_dir():
        raise DflowgenError(f"study folder {folder} exists and is not a folder")


def run_search(recipe: Recipe, target_spec: str, out: str | Path, *, storage: str | None = None,
               study_name: str | None = None, init: str | None = None, device: str | torch.device | None = None,
               assets: str | Path | None = None, max_candidates: int | None = None, quiet: bool = False,
               poll_seconds: float = 5.0) -> SearchSummary:
    """Work on the search of ``recipe`` against ``target_spec`` whose outputs go to folder ``out``.

    Args:
        recipe: base recipe and ``[search]`` settings.
        target_spec: data spec of the target (``frames:DIR``, ``sintel:ROOT:clean``, ...); the
            ``supervised`` metric needs labels.
        out: the study folder (outputs; ``study.db`` unless ``storage`` is given).
        storage: an optuna storage URL shared by workers (default: SQLite in ``out``).
        study_name: the study's name in the storage (default: the folder's name).
        init: weights every candidate's network starts from (path or weights-store name); None: scratch.
        device: where to render, train and score (default: CUDA when available).
        assets: layer images folder (default: the bundled bank).
        max_candidates: evaluate at most this many candidates in this process.
        quiet: no progress bar.
        poll_seconds: how often to look again while the last candidates run elsewhere.

    Every input is checked before the first candidate: a bad target, weights, key or
    storage is a :class:`DflowgenError` with nothing written.
    """
    search = recipe.search
    torch_device = resolve_device(device)
    space = derive_space(recipe.render, search.spread, search.fixed)
    target = load_target(target_spec, search.target_pairs, search.target_scale)
    if search.metric == "supervised" and not target.labelled:
        raise DflowgenError(f"metric 'supervised' needs ground-truth flow, and target '{target_spec}' has none; "
                            "use the self-supervised metric or a labelled spec")
    if init is not None:
        load_model(init, model_name=recipe.train.model)
    folder = Path(out)
    with removed_on_error(folder), quiet_optuna():  # a refused storage or layer bank leaves no study folder
        _prepare_folder(folder)
        handle = StudyHandle.resolve(folder, storage, study_name)
        study = open_search_study(handle, recipe, search_settings(recipe, target_spec, init), space)
        handle.record()
        init_path = resolve_weights(init) if init is not None else None
        objective = make_objective(study, recipe, space, target, init_path, torch_device, assets)
    with quiet_optuna():
        def write() -> None:
            write_outputs(folder, study, recipe, search.top_k)

        summary = work(study, objective, search.budget, max_candidates=max_candidates, poll_seconds=poll_seconds,
                       quiet=quiet, on_candidate=write)
        write()
    return summary


def report_study(folder: str | Path, storage: str | None = None,
                 study_name: str | None = None) -> tuple[Report, Recipe]:
    """Rewrite a study's outputs and report it (see :mod:`dflowgen.search.report`); also its base recipe."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DflowgenError(f"study folder {folder} does not exist")
    handle = StudyHandle.resolve(folder, storage, study_name)
    database = handle.storage_url.removeprefix("sqlite:///")
    if database != handle.storage_url and not Path(database).is_file():
        raise DflowgenError(f"{folder} holds no search: {database} does not exist")
    with quiet_optuna():
        study = load_study(handle)
        recipe = stored_recipe(study)
        settings = study.user_attrs["settings"]
        report = make_report(folder, study, recipe, recipe.search.metric, settings["target"],
                             recipe.search.budget, recipe.search.top_k)
    return report, recipe
