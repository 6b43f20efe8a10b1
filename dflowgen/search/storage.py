"""The study's storage: an optuna database (SQLite file or server URL) opened safely by many workers."""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError

from dflowgen.errors import DflowgenError


SCHEMA_ATTEMPTS = 5


def shown_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and files)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines and experimental-feature warnings off; dflowgen reports progress itself."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def with_installed_driver(url: str) -> str:
    """``url``, naming an installed driver where it names none for PostgreSQL.

    SQLAlchemy reads a plain ``postgresql://`` with psycopg 3 (2.1 and later) or with psycopg2
    (2.0); either driver serves, so the one installed is used whatever SQLAlchemy's default.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.drivername != "postgresql":
        return url
    for driver in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(driver) is not None:
            return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    raise DflowgenError(f"cannot open search storage {shown_url(url)}: no PostgreSQL driver is installed "
                        "(pip install psycopg2-binary)")


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """Optuna RDB storage with heartbeats; a trial whose heartbeat stops is failed and queued again.

    A SQLite file is switched to write-ahead logging (a commit costs a third: each of λ's
    parameters is one) and waits up to two minutes for another process's lock. WAL needs
    every process on one machine; workers on several machines share a database server URL.
    Workers that start together on an empty database race to create its tables; the loser
    tries again, and then finds them.
    """
    engine_kwargs = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
        path = url.removeprefix("sqlite:///")
        if path != url and path and path != ":memory:" and Path(path).parent.is_dir():
            with contextlib.closing(sqlite3.connect(path, timeout=120)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
    driver_url = with_installed_driver(url)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(driver_url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (IntegrityError, ProgrammingError) as error:  # another process created the same table meanwhile
            failure = error
            time.sleep(0.5 * (attempt + 1))
        except Exception as error:  # sqlalchemy and driver errors have no common base worth naming
            failure = error
            break
    # The first line only: sqlalchemy appends the SQL statement and a link.
    reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
    raise DflowgenError(f"cannot open search storage {shown_url(url)}: {reason}")
