"""`dflowgen search` end to end on tiny data: finishes, resumes, shares work, reports, writes recipes generate takes."""

from __future__ import annotations

import csv
import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState
from PIL import Image

from dflowgen.cli import cli
from dflowgen.data.manifest import read_manifest
from dflowgen.generate import generate_set
from dflowgen.recipes import load_recipe, with_overrides
from dflowgen.search.evolution import EvolutionSampler
from dflowgen.search.storage import open_storage, quiet_optuna
from dflowgen.search.run import StudyHandle, load_study, run_search, work
from dflowgen.search.space import derive_space
from dflowgen.search.target import TargetPair, TargetSet, score_model
from dflowgen.fields import flatten_keys, to_dict


@pytest.fixture(autouse=True)
def _one_thread():
    """32×32 tensors gain nothing from a second thread, and on a shared machine its barriers cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict[str, str]:
    """A labelled target (2 rendered pairs in shards) and an unlabelled one (4 PNG frames of a moving texture)."""
    root = tmp_path_factory.mktemp("targets")
    recipe = with_overrides(load_recipe(), {"render.width": 32, "render.height": 32, "render.canvas_margin": 8,
                                            "render.num_layers": [1, 2], "render.blur_kernel_size": 5,
                                            "generate.seed": 99})
    generate_set(recipe, 2, root / "labelled", device="cpu", quiet=True)
    return {"labelled": f"shards:{root / 'labelled'}", "frames": f"frames:{write_moving_frames(root / 'frames')}"}


def write_moving_frames(folder: Path) -> Path:
    """4 PNG frames (32×32) of a smooth texture, the view panning 2 px a frame, written into ``folder`` (made)."""
    folder.mkdir(parents=True)
    texture = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(texture).resize((64, 64), Image.BICUBIC))
    for index in range(4):
        Image.fromarray(big[8:40, 8 + 2 * index: 40 + 2 * index]).save(folder / f"{index:03d}.png")
    return folder


def search(*args: str):
    return CliRunner().invoke(cli, ["search", "--recipe", "search-tiny", "--device", "cpu", *args])


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error:"), result.output
    assert fragment in lines[0], lines[0]


def complete_trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    with quiet_optuna():
        study = load_study(StudyHandle.resolve(folder))
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_tiny_search_finishes_resumes_reports_and_writes_recipes_generate_accepts(tmp_path, targets):
    out = tmp_path / "study"
    first = search("--target", targets["labelled"], "--out", str(out), "--candidates", "2")
    assert first.exit_code == 0, first.output
    assert "2/6 candidates (2 here)" in first.output and "incomplete" in first.output
    before = {t.number: (t.value, t.datetime_complete) for t in complete_trials(out)}
    assert sorted(before) == [0, 1]

    resumed = search("--target", targets["labelled"], "--out", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert "6/6 candidates (4 here), search complete" in resumed.output
    trials = complete_trials(out)
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.number: (t.value, t.datetime_complete) for t in trials if t.number < 2} == before
    assert sorted(EvolutionSampler.generation_of(t) for t in trials) == [0, 0, 0, 1, 1, 1]

    with open(out / "candidates.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6 and all(row["state"] == "COMPLETE" and float(row["aepe"]) > 0 for row in rows)
    assert all(float(row["seconds"]) >= float(row["train_s"]) > 0 for row in rows)
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == min(float(row["metric"]) for row in rows)
    assert all((out / f"top-{rank}.toml").is_file() for rank in (1, 2, 3))
    top = load_recipe(out / "top-1.toml")
    assert [top.render.num_layers[0], top.render.num_layers[1]] == best["lambda"]["render.num_layers"]

    report = search("--report", str(out))
    assert report.exit_code == 0, report.output
    assert "6/6 candidates complete" in report.output and "Spearman" in report.output
    assert (out / "selfsup-vs-aepe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    generated = CliRunner().invoke(cli, ["generate", "--mode", "random", "--recipe", str(out / "top-1.toml"),
                                         "--num-samples", "2", "--out", str(tmp_path / "set"), "--device", "cpu",
                                         "--quiet"])
    assert generated.exit_code == 0, generated.output
    assert read_manifest(tmp_path / "set").complete
    top3 = [arg for rank in (1, 2, 3) for arg in ("--recipe", str(out / f"top-{rank}.toml"))]
    mixed = CliRunner().invoke(cli, ["generate", "--mode", "random", *top3, "--num-samples", "3", "--out",
                                     str(tmp_path / "mix"), "--device", "cpu", "--quiet"])
    assert mixed.exit_code == 0, mixed.output

    changed = search("--target", targets["labelled"], "--out", str(out), "--steps", "4")
    assert_one_line_error(changed, "other settings")


def test_supervised_metric_is_the_aepe(tmp_path, targets):
    one = with_overrides(load_recipe("search-tiny"),
                                {"search.population": 1, "search.generations": 1, "search.metric": "supervised"})
    summary = run_search(one, targets["labelled"], tmp_path / "study", device="cpu", quiet=True)
    assert (summary.complete, summary.evaluated_here) == (1, 1)
    [trial] = complete_trials(tmp_path / "study")
    assert trial.value == trial.user_attrs["aepe"] > 0


def test_a_killed_workers_candidate_is_run_again_with_its_lambda(tmp_path, targets):
    settings = {"search.population": 1, "search.generations": 1, "search.heartbeat_interval": 1,
                "search.grace_period": 2}
    recipe = with_overrides(load_recipe("search-tiny"), settings)
    out = tmp_path / "study"
    run_search(recipe, targets["frames"], out, device="cpu", quiet=True, max_candidates=0)

    # A worker that started candidate 0 and was killed: a running trial whose heartbeat stops.
    handle = StudyHandle.resolve(out)
    with quiet_optuna(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        study = load_study(handle, storage=open_storage(handle.storage_url, 1, 2))
        space = derive_space(recipe.render, recipe.search.spread)
        orphan = study.ask(space.distributions())
        study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)

    summary = run_search(recipe, targets["frames"], out, device="cpu", quiet=True, poll_seconds=0.2)
    assert (summary.complete, summary.evaluated_here) == (1, 1)
    with quiet_optuna():
        trials = load_study(handle).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].user_attrs["aepe"] is None and trials[1].value == trials[1].user_attrs["selfsup"]["total"] > 0


def test_workers_sharing_a_storage_split_the_budget_exactly(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    distributions = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0)}
    with quiet_optuna():
        optuna.create_study(study_name="shared", storage=open_storage(url, 1, 3), direction="minimize")
    done: dict[str, int] = {}

    def worker(name: str) -> None:
        with quiet_optuna():
            study = optuna.load_study(study_name="shared", storage=open_storage(url, 1, 3),
                                      sampler=EvolutionSampler(distributions, 3, seed=0))

            def objective(trial: optuna.Trial) -> float:
                x = trial.suggest_float("x", -1.0, 1.0)
                time.sleep(0.3)
                return x * x

            done[name] = work(study, objective, budget=7, poll_seconds=0.1, quiet=True).evaluated_here

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with quiet_optuna():
        trials = optuna.load_study(study_name="shared", storage=url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 7 and done["a"] >= 1 and done["b"] >= 1 and done["a"] + done["b"] == 7
    assert len({t.params["x"] for t in complete}) == 7


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--target", "frames:/no/such/folder"], "/no/such/folder"),
        (["--target", "{frames}", "--metric", "supervised"], "ground-truth"),
        (["--target", "{frames}", "--init", "no-such-weights"], "no-such-weights"),
        (["--target", "{frames}", "--population", "0"], "--population"),
        (["--target", "{frames}", "--recipe", "no-such-recipe"], "no-such-recipe"),
        (["--target", "{frames}", "--size", "4x4"], "at least 8"),
        (["--out", "x"], "--target"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, targets, args, fragment):
    out = tmp_path / "study"
    args = [arg.format(frames=targets["frames"]) for arg in args]
    result = search(*args, *(["--out", str(out)] if "--out" not in args else []))
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_report_of_a_folder_without_a_search_is_an_error(tmp_path):
    assert_one_line_error(search("--report", str(tmp_path)), "holds no search")
    assert_one_line_error(search("--report", str(tmp_path / "missing")), "does not exist")


class _ConstantFlow(torch.nn.Module):
    """A stand-in network that predicts the same flow everywhere (forward for the first half of the batch)."""

    def __init__(self, dx: float) -> None:
        super().__init__()
        self.dx = dx

    def forward(self, image1, image2, iters, final_only=False):
        flow = torch.zeros(image1.shape[0], 2, *image1.shape[2:])
        half = image1.shape[0] // 2
        flow[:half, 0], flow[half:, 0] = self.dx, -self.dx
        return [flow]


def test_a_network_that_sends_every_pixel_out_of_view_does_not_top_the_self_supervised_metric():
    """With the masked census, flows that leave the frame score 0 (they topped real searches); not any more."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 8, 10, generator=generator)
    image1 = torch.nn.functional.interpolate(coarse, size=(48, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    image2 = torch.roll(image1, shifts=2, dims=3)
    pair = TargetPair("p", image1 * 255, image2 * 255, None, None)
    target = TargetSet("mem", (pair,), sparse=False)
    config = load_recipe("search-tiny").search.selfsup
    away = score_model(_ConstantFlow(500.0), target, 2, config, torch.device("cpu")).selfsup
    right = score_model(_ConstantFlow(2.0), target, 2, config, torch.device("cpu")).selfsup
    assert away["unscored"] == 1.0 and away["census"] > 4.0
    assert right["total"] < away["total"]


def test_the_first_candidate_is_the_base_recipe_and_the_others_are_drawn():
    """A search starts from the recipe it widens, so its top-1 is never worse by its own metric than that recipe."""
    recipe = load_recipe("search-tiny")
    space = derive_space(recipe.render, recipe.search.spread, recipe.search.fixed)
    own = {key.key: flatten_keys(to_dict(recipe))[key.key] for key in space.keys}
    with quiet_optuna():
        study = optuna.create_study(sampler=EvolutionSampler(space.distributions(), 3, first=space.params_of(recipe)))
        drawn = []
        for value in (2.0, 1.0):
            trial = study.ask()
            drawn.append(space.suggest(trial))
            study.tell(trial, value)
    assert drawn[0] == own
    assert drawn[1] != own
