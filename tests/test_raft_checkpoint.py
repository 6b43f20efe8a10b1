"""Checkpoint compatibility: parameter names and shapes of the released weights, and load_raft."""

from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dflowgen.errors import DflowgenError
from dflowgen.models.raft import MODEL_NAMES, build_raft, infer_model_name, load_raft

REFERENCE_KEYS = {"raft": "keys_full.txt", "raft-small": "keys_small.txt"}


def _reference_keys(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    keys = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape, dtype = line.split("\t")
            keys[name] = (ast.literal_eval(shape), dtype)
    return keys


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_state_dict_matches_the_official_key_list(model_name: str, shared_data: Path) -> None:
    reference = _reference_keys(shared_data.parent / "reference" / REFERENCE_KEYS[model_name])
    ours = {
        name: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for name, value in build_raft(model_name).state_dict().items()
    }
    assert sorted(ours) == sorted(reference)
    assert ours == reference


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    return build_raft("raft-small").state_dict()


def _save(path: Path, content: object, legacy: bool = False) -> Path:
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    return path


def _assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("legacy", [False, True])
def test_loads_bare_state_dicts_with_or_without_prefix(tmp_path: Path, small_state, prefix: str, legacy: bool) -> None:
    content = OrderedDict((prefix + key, value) for key, value in small_state.items())
    model = load_raft(_save(tmp_path / "weights.pth", content, legacy))
    assert model.model_name == "raft-small" and not model.training
    _assert_same_weights(model, small_state)


def test_loads_dflowgen_checkpoints_with_their_model_name(tmp_path: Path, small_state) -> None:
    path = _save(tmp_path / "ckpt.pth", {"model": small_state, "model_name": "raft-small", "step": 10})
    _assert_same_weights(load_raft(path), small_state)
    _assert_same_weights(load_raft(path, model_name="raft-small", corr="on-demand"), small_state)


def test_infers_the_architecture_from_the_keys(small_state) -> None:
    assert infer_model_name(small_state) == "raft-small"
    assert infer_model_name(build_raft("raft").state_dict()) == "raft"


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path: Path, small_state) -> None:
    path = _save(tmp_path / "small.pth", small_state)
    pattern = r"does not fit raft: \d+ missing keys \(.*\), \d+ unexpected keys"
    with pytest.raises(DflowgenError, match=pattern) as error:
        load_raft(path, model_name="raft")
    full_keys = set(build_raft("raft").state_dict())
    missing, unexpected = sorted(full_keys - set(small_state)), sorted(set(small_state) - full_keys)
    message = str(error.value)
    assert f"{len(missing)} missing keys ({missing[0]}, " in message
    assert f"{len(unexpected)} unexpected keys ({unexpected[0]}, " in message
    assert "\n" not in message


def test_wrong_shapes_are_reported(tmp_path: Path, small_state) -> None:
    state = dict(small_state)
    state["update_block.flow_head.conv2.bias"] = torch.zeros(3)
    pattern = r"1 keys with wrong shapes \(update_block.flow_head.conv2.bias \(3,\) vs \(2,\)\)"
    with pytest.raises(DflowgenError, match=pattern):
        load_raft(_save(tmp_path / "bad.pth", state))


def test_unreadable_files_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DflowgenError, match="not found"):
        load_raft(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DflowgenError, match="cannot read"):
        load_raft(garbage)
    with pytest.raises(DflowgenError, match="not a RAFT checkpoint"):
        load_raft(_save(tmp_path / "list.pth", [torch.zeros(2)]))
    with pytest.raises(DflowgenError, match="unknown model name"):
        load_raft(garbage, model_name="raft-large")


class _Payload:
    """Not a tensor container: ``weights_only`` loading must refuse to build it."""


def test_refuses_to_unpickle_arbitrary_objects(tmp_path: Path) -> None:
    with pytest.raises(DflowgenError, match="cannot read .*objects other than tensors") as error:
        load_raft(_save(tmp_path / "object.pth", {"model": _Payload()}))
    assert "\n" not in str(error.value)


def test_loads_the_released_legacy_small_checkpoint(shared_data: Path) -> None:
    path = shared_data / "weights" / "raft-small.pth"
    with path.open("rb") as handle:
        assert handle.read(2) != b"PK"  # legacy pickle, not a zip archive
    model = load_raft(path)
    assert model.model_name == "raft-small"
    released = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.fnet.conv1.weight, released["module.fnet.conv1.weight"], rtol=0, atol=0)
