"""`dflowgen generate` on the command line: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dflowgen.cli import cli
from dflowgen.data.manifest import read_manifest, verify_shards
from dflowgen.data.shards import shard_name
from dflowgen.recipes import load_recipe

TINY_ARGS = ["--size", "64x48", "--batch-size", "2", "--shard-size", "3", "--device", "cpu", "--quiet"]


@pytest.fixture()
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text("[render]\ncanvas_margin = 8\nnum_layers = [2, 3]\nblur_kernel_size = 9\n")
    return path


def generate(*args: str):
    return CliRunner().invoke(cli, ["generate", "--mode", "random", *args])


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dflowgen: error:"), result.output
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--num-samples", "0"], "--num-samples"),
        (["--num-samples", "-3"], "--num-samples"),
        (["--num-samples", "4", "--size", "12x"], "--size"),
        (["--num-samples", "4", "--size", "0x5"], "--size"),
        (["--num-samples", "4", "--size", "4x4"], "at least 8"),
        (["--num-samples", "4", "--batch-size", "0"], "batch_size"),
        (["--num-samples", "4", "--shard-index", "2", "--num-shards", "2"], "--shard-index"),
        (["--num-samples", "4", "--shard-index", "1"], "--num-shards"),
        (["--num-samples", "4", "--recipe", "no-such-recipe"], "no-such-recipe"),
        (["--num-samples", "4", "--size", "1048576x1048576"], "at most 4096"),
        (["--num-samples", str(10**15)], "'total_samples' must be in"),
        (["--num-samples", "1000001", "--shard-size", "1"], "1000001 shards (at most 1000000)"),
        (["--num-samples", "4", "--seed", str(2**64)], "generate.seed' must fit in 64 bits"),
    ],
)
def test_bad_values_are_one_line_errors_and_write_nothing(tmp_path, args, fragment):
    out = tmp_path / "out"
    assert_one_line_error(generate(*args, "--out", str(out), "--device", "cpu", "--quiet"), fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "text, fragment",
    [("[render]\nwidthh = 64\n", "render.widthh"), ("[render]\nnum_layers = [5, 2]\n", "render.num_layers"),
     ("[render]\nsplat_c = nan\n", "render.splat_c' must be a finite number"),
     ("[render]\nlayer_translation = [-inf, inf]\n", "render.layer_translation[0]' must be a finite number"),
     ("[optimize]\nalpha = [nan]\n", "optimize.alpha[0]' must be a finite number"),
     ("[train]\nlr = nan\n", "train.lr' must be a finite number"),
     ("[generate]\nseed = 99999999999999999999999\n", "generate.seed' must fit in 64 bits"),
     (b"[render]\n# caf\xe9\n", "is not UTF-8 text")],
)
def test_bad_recipes_are_one_line_errors_and_write_nothing(tmp_path, text, fragment):
    recipe, out = tmp_path / "bad.toml", tmp_path / "out"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_one_line_error(generate("--num-samples", "4", "--recipe", str(recipe), "--out", str(out)), fragment)
    assert not out.exists()


def test_unwritable_output_folder_is_a_one_line_error(tmp_path, tiny_recipe):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = generate("--num-samples", "2", "--recipe", str(tiny_recipe), "--out", str(blocker / "sub"), *TINY_ARGS)
    assert_one_line_error(result, f"{blocker} is not a folder")
    result = generate("--num-samples", "2", "--recipe", str(tiny_recipe), "--out", str(blocker), *TINY_ARGS)
    assert_one_line_error(result, "not a folder")
    assert blocker.read_text() == "not a folder"


def test_different_seed_is_refused_then_overwritten(tmp_path, tiny_recipe):
    out = tmp_path / "set"
    base = ["--recipe", str(tiny_recipe), "--out", str(out), *TINY_ARGS]
    result = generate("--num-samples", "7", "--seed", "1", "--preview", *base)
    assert result.exit_code == 0, result.output
    before = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in out.iterdir() if path.is_file()}

    assert_one_line_error(generate("--num-samples", "4", "--seed", "2", *base), "generate.seed: 1 -> 2")
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in out.iterdir() if path.is_file()} == before

    result = generate("--num-samples", "4", "--seed", "2", "--overwrite", *base)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert (manifest.header.seed, manifest.header.total_samples) == (2, 4)
    assert sorted(path.name for path in out.glob("shard-*.h5")) == [shard_name(0), shard_name(1)]
    assert not (out / "previews").exists()
    assert verify_shards(out) == []


def test_summary_line_and_inspect_after_generate(tmp_path, tiny_recipe):
    out = tmp_path / "set"
    result = CliRunner().invoke(cli, ["generate", "--mode", "random", "--num-samples", "3", "--recipe", str(tiny_recipe),
                                      "--out", str(out), "--size", "64x48", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "set complete" in result.output and "3 samples" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(out), "--no-plot"])
    assert result.exit_code == 0 and "3 in 1 of 1 shards" in result.output and "64x48" in result.output


def _damage_middle(path: Path) -> None:
    """Zero a stretch in the middle of a file, keeping its size (so only a checksum can tell)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 512] = bytes(512)
    path.write_bytes(bytes(data))


def test_damaged_shards_of_an_existing_set_are_written_again(tmp_path, tiny_recipe, monkeypatch):
    out = tmp_path / "set"
    args = ["--num-samples", "7", "--recipe", str(tiny_recipe), "--out", str(out), *TINY_ARGS]
    assert generate(*args).exit_code == 0
    whole = {path.name: path.read_bytes() for path in out.glob("shard-*.h5")}
    truncated, zeroed = out / shard_name(0), out / shard_name(2)
    truncated.write_bytes(whole[truncated.name][:1000])
    _damage_middle(zeroed)
    result = CliRunner().invoke(cli, ["generate", "--mode", "random", *args[:-1]])
    assert result.exit_code == 0, result.output
    assert "(2 damaged shards written again)" in result.output
    assert {path.name: path.read_bytes() for path in out.glob("shard-*.h5")} == whole
    assert verify_shards(out) == []

    # A large set keeps a shard of the right size and header unless asked to hash it.
    monkeypatch.setattr("dflowgen.data.manifest.FULL_HASH_BYTES", 0)
    _damage_middle(zeroed)
    assert generate(*args).exit_code == 0
    assert [problem.file for problem in verify_shards(out)] == [zeroed.name]
    assert generate(*args, "--verify-existing").exit_code == 0
    assert verify_shards(out) == []


def test_a_rerun_keeps_the_set_previews_every_sample_and_reports_samples(tmp_path, tiny_recipe):
    out = tmp_path / "set"
    tiny_recipe.write_text(tiny_recipe.read_text() + "[generate]\npreview_count = 5\n")
    args = ["generate", "--mode", "random", "--num-samples", "5", "--recipe", str(tiny_recipe), "--out", str(out),
            "--size", "64x48", "--shard-size", "3", "--device", "cpu", "--preview"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert (f"{out}: set complete with 5 samples; this run rendered 5 samples" in first.output
            and "kept 0 samples from an earlier run" in first.output)
    shards = {path: path.stat().st_mtime_ns for path in out.glob("*.h5")}
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "this run rendered 0 samples" in second.output and "kept 5 samples from an earlier run" in second.output
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.h5")} == shards and len(shards) == 2
    assert len(list((out / "previews").glob("*.png"))) == 5


def test_make_demo_resumes_and_previews_every_sample():
    """`make demo` is rerun-safe (no --overwrite) and the demo recipe previews all the samples it makes."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:"):].split("\n\n")[0]
    assert "dflowgen generate --target demo" in demo and "--preview" in demo and "--overwrite" not in demo
    samples = int(re.search(r"^DEMO_SAMPLES := (\d+)$", makefile, re.MULTILINE).group(1))
    assert load_recipe("demo").generate.preview_count >= samples
