"""Search workers as OS processes on a real PostgreSQL server, one killed with kill -9; database drivers and URLs.

A throwaway server is made with ``initdb``/``pg_ctl`` in a temporary folder; the test skips,
saying why, where the server tools or the ``psycopg2`` driver (``pip install -e .[dev]``) are absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dflowgen.cli import cli
from dflowgen.errors import DflowgenError
from dflowgen.recipes import load_recipe, recipe_to_toml, with_overrides
from dflowgen.search.storage import open_storage, quiet_optuna, with_installed_driver
from test_search import write_moving_frames

SERVER_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian/Ubuntu, newest first
SERVER_USER = "postgres"


def _server_tool(name: str) -> str | None:
    return shutil.which(name) or next((str(folder / name) for folder in SERVER_BIN_DIRS if (folder / name).is_file()),
                                      None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL server on 127.0.0.1 (trust authentication), stopped and deleted afterwards."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is not installed (pip install -e .[dev])")
    initdb, pg_ctl = _server_tool("initdb"), _server_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server tools initdb and pg_ctl not found (on PATH or /usr/lib/postgresql/*/bin)")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the server as the postgres account where there is one.
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam(SERVER_USER).pw_uid
        except KeyError:
            runuser = None
        if runuser is None:
            pytest.skip(f"running as root, and no '{SERVER_USER}' account with runuser to run initdb as")
        as_user = [runuser, "-u", SERVER_USER, "--"]
    # Not under tmp_path: the server's account must reach the folder, and pytest's are private to this user.
    folder = Path(tempfile.mkdtemp(prefix="dflowgen-postgres-"))
    if owner is not None:
        os.chown(folder, owner, -1)
    data, port = folder / "data", _free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=60)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w",
                        "start"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _trials(storage: RDBStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    with quiet_optuna():
        return optuna.load_study(study_name=name, storage=storage).trials


def test_two_worker_processes_on_postgresql_score_the_budget_once_though_one_is_killed(tmp_path, postgres_url):
    # search-tiny with a dead worker noticed after 2 s rather than 6.
    recipe = with_overrides(load_recipe("search-tiny"), {"search.heartbeat_interval": 1, "search.grace_period": 2})
    (tmp_path / "recipe.toml").write_text(recipe_to_toml(recipe))
    budget = recipe.search.budget
    frames = write_moving_frames(tmp_path / "frames")
    command = [sys.executable, "-m", "dflowgen", "search", "--recipe", str(tmp_path / "recipe.toml"), "--quiet",
               "--device", "cpu", "--target", f"frames:{frames}", "--storage", postgres_url, "--study-name", "shared"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("victim", "survivor")}  # noqa: SIM115
    # Two "machines": each worker has its own output folder; they meet only in the database.
    victim = subprocess.Popen([*command, "--out", str(tmp_path / "machine-a")], env=env, stdout=logs["victim"],
                              stderr=subprocess.STDOUT)
    survivor = subprocess.Popen([*command, "--out", str(tmp_path / "machine-b")], env=env, stdout=logs["survivor"],
                                stderr=subprocess.STDOUT)
    studies = [tmp_path / machine / "study.json" for machine in ("machine-a", "machine-b")]
    try:
        # The database is left alone until both workers have made or joined the study, so that they race for its
        # tables as workers on several machines would. Then the victim is killed in the middle of a candidate,
        # once the search is under way.
        deadline, killed, storage = time.monotonic() + 90, None, None
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            if storage is None:
                if all(path.is_file() for path in studies):
                    with quiet_optuna():
                        storage = open_storage(postgres_url, 60, 120)
                time.sleep(0.2)
                continue
            trials = _trials(storage, "shared")
            running = [t for t in trials if t.state == TrialState.RUNNING
                       and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            if running and any(t.state == TrialState.COMPLETE for t in trials):
                os.kill(victim.pid, signal.SIGKILL)
                killed = running[0].number
            time.sleep(0.2)
        victim.wait(timeout=30)
        survivor.wait(timeout=120)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
        for log in logs.values():
            log.close()
    output = {name: (tmp_path / f"{name}.log").read_text() for name in logs}
    assert killed is not None, f"the victim never ran a candidate while another was complete: {output}"
    assert victim.returncode == -signal.SIGKILL
    assert survivor.returncode == 0, output["survivor"]

    trials = {t.number: t for t in _trials(storage, "shared")}
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == budget, [(t.number, t.state.name) for t in trials.values()]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == budget  # no λ scored twice
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The killed candidate was failed for its silence and run again, with its λ, by the survivor.
    assert trials[killed].state == TrialState.FAIL
    [retry] = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == trials[killed].params
    assert retry.user_attrs["worker"].endswith(f":{survivor.pid}")
    rows = (tmp_path / "machine-b" / "candidates.csv").read_text().splitlines()
    assert sum(",COMPLETE," in row for row in rows) == budget


def test_a_plain_postgresql_url_uses_whichever_driver_is_installed(monkeypatch):
    installed = {"psycopg2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert with_installed_driver("postgresql://me:s%40cret@db:5432/search") == \
        "postgresql+psycopg2://me:s%40cret@db:5432/search"
    installed.add("psycopg")
    assert with_installed_driver("postgresql://me@db/search") == "postgresql+psycopg://me@db/search"
    for url in ("postgresql+psycopg2://me@db/search", "mysql://me@db/search", "sqlite:///study.db"):
        assert with_installed_driver(url) == url
    installed.clear()
    with pytest.raises(DflowgenError, match=r"^cannot open search storage postgresql://me:\*\*\*@db/search: "
                                            r"no PostgreSQL driver is installed \(pip install psycopg2-binary\)$"):
        with_installed_driver("postgresql://me:secret@db/search")


def test_an_unreachable_database_server_is_one_line_from_the_cli(tmp_path):
    port = _free_port()  # nothing listens there
    result = CliRunner().invoke(cli, ["search", "--recipe", "search-tiny", "--device", "cpu",
                                      "--target", f"frames:{write_moving_frames(tmp_path / 'frames')}",
                                      "--out", str(tmp_path / "study"),
                                      "--storage", f"postgresql://me:secret@127.0.0.1:{port}/search"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"dflowgen: error: cannot open search storage postgresql://me:***@127.0.0.1:{port}/search: "), result.output
    assert "secret" not in result.output
