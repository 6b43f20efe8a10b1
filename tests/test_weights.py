import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dflowgen import weights as store_lib
from dflowgen.models.registry import register_weights
from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.models.raft import build_raft


@pytest.fixture()
def store(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv("DFLOWGEN_WEIGHTS_DIR", str(folder))
    return folder


def test_add_checks_official_sha256_and_resolves(store, shared_data, tmp_path):
    released = shared_data / "weights" / "raft-small.pth"
    entry = store_lib.add_weights("raft-small", released)
    assert entry.model == "raft-small" and entry.sha256 == store_lib.OFFICIAL_RELEASES["raft-small"].sha256
    assert store_lib.resolve_weights("raft-small") == store / "raft-small.pth"
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"not raft")
    with pytest.raises(DflowgenError, match="not the official raft-sintel"):
        store_lib.add_weights("raft-sintel", fake)
    with pytest.raises(DflowgenError, match="as a flow-network checkpoint"):
        register_weights("mine", fake, "raft")
    assert register_weights("mine", released).model == "raft-small"
    assert [e.name for e in store_lib.list_weights()] == ["mine", "raft-small"]


def test_missing_release_says_how_to_get_it(store):
    with pytest.raises(DflowgenError, match="dflowgen weights fetch raft-chairs"):
        store_lib.resolve_weights("raft-chairs")
    with pytest.raises(DflowgenError, match="neither a file nor a name"):
        store_lib.resolve_weights("nothing-here")


def _release_archive(path, member_bytes):
    with zipfile.ZipFile(path, "w") as bundle:
        for member, data in member_bytes.items():
            bundle.writestr(member, data)
    return path


def test_fetch_from_local_archive_checks_members(store, shared_data, tmp_path):
    good = _release_archive(tmp_path / "good.zip", {"models/raft-small.pth": (shared_data / "weights" / "raft-small.pth").read_bytes()})
    fetched = store_lib.fetch_weights(["raft-small"], url=good.as_uri(), archive_sha256=None, quiet=True)
    assert fetched[0].path.read_bytes() == (shared_data / "weights" / "raft-small.pth").read_bytes()

    bad = _release_archive(tmp_path / "bad.zip", {"models/raft-kitti.pth": b"tampered"})
    with pytest.raises(DflowgenError, match="not the official raft-kitti"):
        store_lib.fetch_weights(["raft-kitti"], url=bad.as_uri(), archive_sha256=None, quiet=True)
    assert "raft-kitti" not in {e.name for e in store_lib.list_weights()}
    with pytest.raises(DflowgenError, match="sha256 check"):
        store_lib.fetch_weights(["raft-small"], url=good.as_uri(), archive_sha256="0" * 64, quiet=True)
    with pytest.raises(DflowgenError, match="cannot download"):
        store_lib.fetch_weights(["raft-small"], url=(tmp_path / "absent.zip").as_uri(), quiet=True)
    assert not list(store.glob(".fetch-*")), "scratch folders are removed"


def test_cli_weights_list_add_and_errors(store, shared_data):
    runner = CliRunner()
    result = runner.invoke(cli, ["weights", "add", "raft-small", str(shared_data / "weights" / "raft-small.pth")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["weights", "list"])
    assert result.exit_code == 0
    assert any(line.startswith("raft-small") and "present" in line for line in result.output.splitlines())
    assert any(line.startswith("raft-chairs") and "absent" in line for line in result.output.splitlines())
    result = runner.invoke(cli, ["weights", "fetch", "raft-huge"])
    assert result.exit_code == 2 and "no official release named raft-huge" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_packaged_demo_proxies_resolve_without_the_store_and_match_their_records(store):
    for name, packaged in store_lib.PACKAGED.items():
        path = store_lib.resolve_weights(name)
        assert path == store_lib.PACKAGED_DIR / packaged.member
        assert store_lib.file_sha256(path) == packaged.sha256, name
    assert (store_lib.PACKAGED_DIR / "NOTICE").read_text().count("BSD 3-Clause License") == 1
    listed = CliRunner().invoke(cli, ["weights", "list"])
    assert listed.exit_code == 0 and "demo-target" in listed.output and "packaged" in listed.output


def test_export_keeps_only_the_network(store, tmp_path):
    import torch

    from dflowgen.models.raft import build_raft, load_raft

    model = build_raft("raft-small")
    checkpoint = tmp_path / "train.pth"
    torch.save({"model": model.state_dict(), "model_name": "raft-small", "optimizer": {"junk": torch.zeros(50_000)}},
               checkpoint)
    out = tmp_path / "net.pth"
    result = CliRunner().invoke(cli, ["weights", "export", str(checkpoint), str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < checkpoint.stat().st_size
    reloaded = load_raft(out)
    assert reloaded.model_name == "raft-small"
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    missing = CliRunner().invoke(cli, ["weights", "export", str(tmp_path / "none.pth"), str(out)])
    assert missing.exit_code == 2 and missing.output.startswith("dflowgen: error:")


class _RunsCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_add_loads_safely_and_checks_the_architecture(store, tmp_path):
    """Only files that load as weights alone into the named architecture are registered."""
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": _RunsCode()}, pickled)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    full = tmp_path / "raft.pth"
    torch.save(build_raft("raft").state_dict(), full)
    runner = CliRunner()
    for args, fragment in ((["mine", str(pickled)], "not loaded, for safety"),
                           (["mine", str(noise)], "as a flow-network checkpoint"),
                           (["mine", str(full), "--model", "raft-small"], "does not fit raft-small")):
        result = runner.invoke(cli, ["weights", "add", *args])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
        assert "pickled code ran" not in result.output
    assert store_lib.list_weights() == []
    assert register_weights("mine", full).model == "raft"


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[1, 2]", b'{"a": 3}',
                                     b'{"a": {"file": "../x.pth", "sha256": "0"}}',
                                     b'{"a": {"file": "a.pth", "sha256": "0", "model": 3}}'])
def test_bad_index_is_a_one_line_error(store, content):
    store.mkdir()
    (store / "index.json").write_bytes(content)
    result = CliRunner().invoke(cli, ["weights", "list"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "weights index" in lines[0], result.output
