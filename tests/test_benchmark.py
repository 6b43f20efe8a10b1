"""`dflowgen benchmark`: the whole known-target pipeline at a tiny size, its resume, and its one-line errors.

Everything is made here: a 64×48 default domain, one hidden target with fast motion under fog,
a base trained for a few steps from scratch. The test checks what the benchmark must be able to
show: the oracle's data is closer to the target than random data, and DFlow lowers the target
proxy's loss.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner
from test_generate_dflow import TINY_RENDER

import dflowgen.benchmark.pipeline as pipeline
from dflowgen.recipes.benchmark import ROWS
from dflowgen.benchmark.pipeline import run_benchmark
from dflowgen.benchmark.report import magnitude_distance
from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import parse_recipe, with_overrides

HIDDEN = 'name = "hidden-fast"\n' + TINY_RENDER.replace("translation = [-6.0, 6.0]", "translation = [-14.0, 14.0]") \
    .replace("layer_translation = [-4.0, 4.0]", "layer_translation = [-9.0, 9.0]\nfog_prob = 1.0")

TRAIN = textwrap.dedent(
    """
    model = "raft-small"
    num_steps = 2
    batch_size = 2
    crop_size = [48, 64]
    iters = 2
    log_every = 1
    checkpoint_every = 2
    num_workers = 0
    """
)
MICRO = 'name = "known-target-micro"\n' + TINY_RENDER + textwrap.dedent(
    """
    [generate]
    seed = 3
    batch_size = 4
    shard_size = 4
    preview_count = 0
    store_params = false
    [optimize]
    base_model = "raft-small"
    target_model = "raft-small"
    proxy_iters = 2
    updates = 3
    decay_updates = 3
    copies = 1
    keep_threshold = 1e9
    [search]
    population = 3
    generations = 1
    num_samples = 4
    spread = 1.0
    eval_iters = 2
    heartbeat_interval = 2
    grace_period = 6
    [benchmark]
    targets = ["HIDDEN"]
    train_pairs = 4
    frames_pairs = 4
    test_pairs = 8
    num_samples = 8
    base_samples = 8
    seeds = [0]
    eval_iters = 2
    [train]
    """
) + TRAIN + "[benchmark.base]\n" + TRAIN.replace("num_steps = 2", "num_steps = 6") + "[benchmark.proxy]\n" + TRAIN \
    + "[benchmark.search_train]\n" + TRAIN + '[benchmark.label_free_proxy]\nmode = "pseudo-label"\n' + TRAIN \
    + "[benchmark.label_free_proxy.pseudo]\nlabel_iters = 2\n"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    (folder / "hidden-fast.toml").write_text(HIDDEN)
    return parse_recipe(MICRO.replace("HIDDEN", str(folder / "hidden-fast.toml")))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, micro):
    out = tmp_path_factory.mktemp("results") / "micro"
    lines: list[str] = []
    summary = run_benchmark(micro, out, device="cpu", quiet=True, echo=lines.append)
    return out, summary, lines


def test_the_whole_pipeline_writes_every_row_table_and_plots(finished):
    out, summary, lines = finished
    # base set and base; per target: 3 sets, 2 proxies, 2 searches, 9 sets, 9 runs, 9 evaluations, the base's
    assert len(lines) == 2 + 3 + 2 + 2 + 3 * len(ROWS) + 1 and not summary.stages_skipped
    table = (out / "table.md").read_text()
    assert table == summary.table and "## Target `hidden-fast`" in table
    results = json.loads((out / "results.json").read_text())
    rows = results["targets"]["hidden-fast"]["rows"]
    assert list(rows) == list(ROWS)
    for row in ROWS:
        assert (out / "hidden-fast" / "runs" / row / "seed-0" / "last.pth").is_file(), row
    assert "oracle_share" in rows["dflow"] and "against_random" in rows["oracle"]
    searches = results["targets"]["hidden-fast"]["searches"]
    assert searches["supervised"]["candidates"] == searches["self-supervised"]["candidates"] == 3
    assert searches["supervised"]["spearman"] is not None
    assert 0 <= searches["default recipe"]["range_distance"]["mean"] <= 1
    for plot in ("hidden-fast-correlation.png", "hidden-fast-flow-magnitude.png"):
        assert (out / "plots" / plot).stat().st_size > 1000


def test_the_oracle_is_closer_to_the_target_than_random_data(finished):
    out, summary, _ = finished
    rows = summary.results["targets"]["hidden-fast"]["rows"]
    assert rows["oracle"]["magnitude_distance"] < rows["random"]["magnitude_distance"]
    test = json.loads((out / "stages" / "hidden-fast-target-test.json").read_text())["result"]["statistics"]
    oracle = json.loads((out / "stages" / "hidden-fast-set-oracle.json").read_text())["result"]["statistics"]
    assert magnitude_distance(oracle, test[0]) == pytest.approx(rows["oracle"]["magnitude_distance"])


def test_dflow_lowers_the_target_proxys_loss(finished):
    out, _, _ = finished
    for row in ("dflow", "dflow-label-free", "search-dflow"):
        losses = json.loads((out / "stages" / f"hidden-fast-set-{row}.json").read_text())["result"]["statistics"][0][
            "losses"]
        assert losses["target_loss_final"] < losses["target_loss_initial"], row


def test_a_second_run_skips_every_stage(finished, micro, monkeypatch):
    out, first, _ = finished
    for name in ("generate_set", "generate_mix", "evaluate", "run_search", "make_proxy"):
        monkeypatch.setattr(pipeline, name, lambda *args, **kwargs: pytest.fail("a finished stage ran again"))
    again = run_benchmark(micro, out, device="cpu", quiet=True)
    assert again.stages_run == [] and again.table == first.table


@pytest.mark.parametrize(("override", "message"), [
    ({"benchmark.targets": ["no-such-target"]}, r"^no recipe named 'no-such-target'"),
    ({"benchmark.base_seed": 3}, r"generate\.seed \(3\), benchmark\.base_seed and target_seeds must all differ"),
    ({"benchmark.base.model": "raft"}, r"one architecture from one base; the recipe names raft, raft-small"),
])
def test_bad_inputs_are_one_line_errors(micro, tmp_path, override, message):
    with pytest.raises(DflowgenError, match=message) as caught:
        run_benchmark(with_overrides(micro, override), tmp_path / "out", quiet=True)
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_a_hidden_target_of_another_size_is_refused(micro, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(HIDDEN.replace("width = 64", "width = 80"))
    with pytest.raises(DflowgenError, match=r"renders 80x48, the benchmark 64x48"):
        run_benchmark(with_overrides(micro, {"benchmark.targets": [str(other)]}), tmp_path / "out", quiet=True)


def test_cli_without_a_benchmark_table_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["benchmark", "--recipe", "demo", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output == ("dflowgen: error: recipe 'demo' has no [benchmark] table "
                                                       "(bundled: known-target-mini, known-target-paper)\n")


def test_bundled_recipes_hide_targets_inside_the_search_bounds():
    from dflowgen.fields import flatten_keys, to_dict
    from dflowgen.recipes import load_recipe
    from dflowgen.search.space import derive_space

    recipe = load_recipe("known-target-mini")
    space = derive_space(recipe.render, recipe.search.spread, recipe.search.fixed)
    default = flatten_keys(to_dict(recipe.render))
    for name in recipe.benchmark.targets:
        hidden = flatten_keys(to_dict(load_recipe(name).render))
        searched = {key.key.removeprefix("render.") for key in space.keys}
        assert {key: value for key, value in hidden.items() if key not in searched} == \
            {key: value for key, value in default.items() if key not in searched}, name
        for key in space.keys:
            value = hidden[key.key.removeprefix("render.")]
            for end in value if isinstance(value, list) else [value]:
                assert key.low - 1e-9 <= end <= key.high + 1e-9, (name, key.key)
