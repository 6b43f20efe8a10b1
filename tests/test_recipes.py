import dataclasses

import pytest

from dflowgen.errors import DflowgenError
from dflowgen.recipes import Recipe, load_recipe, parse_recipe, recipe_to_toml, with_overrides


def test_defaults_roundtrip_through_toml():
    recipe = Recipe()
    assert parse_recipe(recipe_to_toml(recipe)) == recipe


def test_partial_recipe_keeps_other_defaults():
    recipe = parse_recipe("[render]\nwidth = 64\nheight = 48\n[render.layer_warp]\nscale = [0.9, 1.1]\n")
    assert (recipe.render.width, recipe.render.height) == (64, 48)
    assert recipe.render.layer_warp.scale == (0.9, 1.1)
    assert recipe.render.anchor_warp == Recipe().render.anchor_warp


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[render]\nwdth = 3\n", "render.wdth"),
        ("[rendr]\nwidth = 3\n", "rendr"),
        ("[render.layer_warp]\nscale = [2.0, 1.0]\n", "lo > hi"),
        ("[render]\nwidth = 'wide'\n", "render.width"),
        ("[render]\nwidth = 4\n", "at least 8"),
        ("[render]\ncomposition = 'max'\n", "softmax"),
        ("[render]\nnum_layers = [1, 2, 3]\n", "2 values"),
        ("[render\n", "not valid TOML"),
    ],
)
def test_bad_recipes_name_the_problem(text, fragment):
    with pytest.raises(DflowgenError, match=fragment.replace("[", r"\[")):
        parse_recipe(text)


def test_unknown_named_recipe_lists_bundled(tmp_path):
    with pytest.raises(DflowgenError, match="no recipe named 'nope'"):
        load_recipe("nope")
    with pytest.raises(DflowgenError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_recipe_file_path_loads(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[generate]\nseed = 7\n")
    assert load_recipe(path).generate.seed == 7


def test_recipes_are_frozen_and_overrides_copy_and_validate():
    recipe = Recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.render.width = 3
    changed = with_overrides(recipe, {"render.layer_warp.translation": [-1.0, 1.0], "generate.seed": 5})
    assert changed.render.layer_warp.translation == (-1.0, 1.0) and changed.generate.seed == 5
    assert recipe.render.layer_warp.translation == (-80.0, 80.0)
    with pytest.raises(DflowgenError, match="lo > hi"):
        with_overrides(recipe, {"render.layer_warp.translation": [1.0, -1.0]})
    with pytest.raises(DflowgenError, match="render.nope"):
        with_overrides(recipe, {"render.nope": 1})
    with pytest.raises(DflowgenError, match="unknown recipe key 'nope.x'"):
        with_overrides(recipe, {"nope.x": 1})
