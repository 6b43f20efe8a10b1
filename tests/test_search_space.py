"""λ space (derived from the render config), search recipes, and the evolution sampler."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
import torch

from dflowgen.assets import load_layer_bank
from dflowgen.errors import DflowgenError
from dflowgen.data.batches import render_batch
from dflowgen.recipes import Recipe, load_recipe, parse_recipe, recipe_to_toml, with_overrides
from dflowgen.render.config import RenderConfig, WarpRanges
from dflowgen.search.evolution import EvolutionSampler
from dflowgen.search.report import spearman
from dflowgen.search.storage import quiet_optuna
from dflowgen.search.space import DOMAINS, derive_space, searchable_keys


def test_lambda_holds_every_range_and_probability_of_the_render_config():
    keys = set(searchable_keys(RenderConfig()))
    for warp in ("layer_warp", "anchor_warp"):
        for field in dataclasses.fields(WarpRanges):
            assert f"render.{warp}.{field.name}" in keys
    for name in ("num_layers", "object_size", "layer_translation", "fog_density", "blur_sigma_y", "fog_prob",
                 "blur_layer_prob", "white_balance_prob"):
        assert f"render.{name}" in keys
    for name in ("width", "height", "canvas_margin", "grid_size", "composition", "splat_c", "visible_min_weight",
                 "fog_octaves", "blur_kernel_size", "fog_color_grid"):
        assert f"render.{name}" not in keys


def test_domains_name_real_fields():
    names = {f.name for f in dataclasses.fields(RenderConfig)} | {f.name for f in dataclasses.fields(WarpRanges)}
    assert set(DOMAINS) <= names


def test_bounds_widen_the_base_and_stay_meaningful():
    render = RenderConfig()
    space = derive_space(render, spread=0.5)
    by_key = {key.key: key for key in space.keys}
    translation = by_key["render.layer_warp.translation"]
    assert (translation.low, translation.high) == (-160.0, 160.0)
    scale = by_key["render.anchor_warp.scale"]
    assert scale.low == pytest.approx(0.75 - 0.5 * 1.13) and scale.high == pytest.approx(1.13 + 0.5 * 1.13)
    assert by_key["render.object_size"].low == DOMAINS["object_size"][0]
    assert (by_key["render.fog_prob"].low, by_key["render.fog_prob"].high) == (0.0, 1.0)
    layers = by_key["render.num_layers"]
    assert layers.integer and (layers.low, layers.high) == (2, 18)
    assert isinstance(space.distributions()["render.num_layers[0]"], optuna.distributions.IntDistribution)
    assert {key for key, _ in space.held} == {"render.layer_warp.grid_offset", "render.anchor_warp.grid_offset"}
    narrow = {key.key: key for key in derive_space(render, spread=0.0).keys}["render.layer_warp.translation"]
    assert (narrow.low, narrow.high) == (-80.0, 80.0)


def test_fixed_keys_are_held_and_unknown_ones_refused():
    space = derive_space(RenderConfig(), 0.5, fixed=("render.fog_prob", "render.num_layers"))
    assert "render.fog_prob" not in {key.key for key in space.keys}
    assert ("render.num_layers", "search.fixed") in space.held
    with pytest.raises(DflowgenError, match="render.width"):
        derive_space(RenderConfig(), 0.5, fixed=("render.width",))


def test_lambda_sorts_range_ends_rounds_and_makes_a_valid_recipe():
    space = derive_space(RenderConfig(), 0.5)
    params = {name: (d.high if name.endswith("[0]") else d.low) for name, d in space.distributions().items()}
    params["render.fog_prob"] = 0.123456789
    lam = space.to_lambda(params)
    lo, hi = lam["render.layer_warp.translation"]
    assert lo < hi and lam["render.num_layers"] == [2, 18]
    assert lam["render.fog_prob"] == 0.1235
    recipe = space.apply(Recipe(), lam, name="candidate")
    assert recipe.name == "candidate" and recipe.render.fog_prob == 0.1235
    assert parse_recipe(recipe_to_toml(recipe)) == recipe


@pytest.mark.parametrize("corner", ["low", "high"])
def test_every_corner_of_the_space_renders(corner):
    recipe = load_recipe("search-tiny")
    space = derive_space(recipe.render, recipe.search.spread)
    params = {name: getattr(d, corner) for name, d in space.distributions().items()}
    recipe = space.apply(recipe, space.to_lambda(params))
    bank = load_layer_bank(None, size=recipe.render.canvas_size)
    batch = render_batch(recipe.render, bank, 0, [0, 1], torch.device("cpu"), store_params=False)
    assert batch.img1.shape == (2, 32, 32, 3)


def test_recipe_round_trips_and_takes_overrides():
    recipe = load_recipe("search-tiny")
    assert recipe.search.budget == 6 and recipe.train.iters == 2
    assert parse_recipe(recipe_to_toml(recipe)) == recipe
    changed = with_overrides(recipe, {"search.population": 5, "search.selfsup.occlusion": "none",
                                      "train.num_steps": 7})
    assert changed.search.population == 5 and changed.search.selfsup.occlusion == "none"
    assert changed.train.num_steps == 7


def test_recipe_errors_name_the_key():
    with pytest.raises(DflowgenError, match="search.populatoin"):
        parse_recipe("[search]\npopulatoin = 3\n", source="x.toml")
    with pytest.raises(DflowgenError, match="grace_period"):
        parse_recipe("[search]\nheartbeat_interval = 10\ngrace_period = 5\n")
    with pytest.raises(DflowgenError, match="search.selfsup.occlusion"):
        with_overrides(load_recipe("search-tiny"), {"search.selfsup.occlusion": "magic"})


def _toy_study(seed: int, population: int = 4) -> tuple[optuna.Study, dict]:
    distributions = {"x": optuna.distributions.FloatDistribution(-4.0, 4.0),
                     "n": optuna.distributions.IntDistribution(0, 10)}
    sampler = EvolutionSampler(distributions, population, seed=seed)
    with quiet_optuna():
        study = optuna.create_study(storage=optuna.storages.RDBStorage("sqlite:///:memory:"), sampler=sampler)
    return study, distributions


def _optimize(study: optuna.Study, trials: int) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -4.0, 4.0)
        n = trial.suggest_int("n", 0, 10)
        return (x - 1.0) ** 2 + (n - 7) ** 2

    with quiet_optuna():
        study.optimize(objective, n_trials=trials)


def test_evolution_is_a_function_of_the_seed_and_improves():
    first, _ = _toy_study(seed=3)
    second, _ = _toy_study(seed=3)
    _optimize(first, 16)
    _optimize(second, 16)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    generations = [EvolutionSampler.generation_of(t) for t in first.trials]
    assert generations == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    best_of = [min(t.value for t in first.trials if EvolutionSampler.generation_of(t) == g) for g in range(4)]
    assert best_of[3] < best_of[0]


def test_parents_are_elitist_and_children_differ_from_them():
    study, distributions = _toy_study(seed=0)
    _optimize(study, 12)
    sampler = study.sampler
    for generation in (1, 2):
        parents = sampler.get_parent_population(study, generation)
        pool = sampler.get_population(study, generation - 1) + sampler.get_parent_population(study, generation - 1)
        assert sorted(t.value for t in parents) == sorted(t.value for t in pool)[:4]
        children = sampler.get_population(study, generation)
        for child in children:
            assert all(distributions[k].low <= v <= distributions[k].high for k, v in child.params.items())
            assert all(child.params != parent.params for parent in parents)
    best_so_far = min(t.value for t in study.trials[:8])
    assert min(t.value for t in sampler.get_parent_population(study, 2)) == best_so_far


def test_a_resumed_sampler_draws_what_an_uninterrupted_one_would():
    whole, _ = _toy_study(seed=7)
    _optimize(whole, 10)
    interrupted, distributions = _toy_study(seed=7)
    _optimize(interrupted, 5)
    interrupted.sampler = EvolutionSampler(distributions, 4, seed=7)
    _optimize(interrupted, 5)
    assert [t.params for t in interrupted.trials] == [t.params for t in whole.trials]
    assert not math.isclose(whole.trials[0].params["x"], whole.trials[4].params["x"])


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
