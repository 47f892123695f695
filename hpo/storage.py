"""Optuna RDB storage, checked before use and configured for many writers on one SQLite file.

SQLite serialises writers. With its default rollback journal and ``synchronous=FULL``, every
``trial.report`` is a transaction with several fsyncs, and readers block writers. Write-ahead
logging lets the dashboard read while workers write, ``synchronous=NORMAL`` drops the per-commit
fsync (WAL stays consistent after a crash; the last commits may be lost on power failure), and a
generous busy timeout makes a writer wait its turn instead of failing with "database is locked".
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import warnings
from collections.abc import Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb.models import TrialIntermediateValueModel
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Connection, make_url

from hpo._sqlite_reads import read_trial, read_trials

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///studies/hpo.db"
SQLITE_BUSY_TIMEOUT_S = 60.0
HEARTBEAT_INTERVAL_S = 2  # a running trial writes a heartbeat this often ...
GRACE_PERIOD_S = 6  # ... and counts as dead (failed and retried) after this long without one
MAX_RETRY = 3  # retries of a trial whose worker died


def display_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other back ends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_storage(url: str, *, create: bool) -> bool:
    """Fail early, and without touching anything, if ``url`` cannot be an Optuna storage.

    Args:
        url: An SQLAlchemy URL.
        create: Whether a missing SQLite file may be created; otherwise it must exist.

    Returns:
        Whether there is a database to read (a non-empty SQLite file, or a database on a server
        that holds Optuna's tables).

    Raises:
        ValueError: If the URL is malformed, the file is missing (and ``create`` is False), its
            folder is missing, it is not an SQLite database, the server cannot be reached or its
            driver is not installed, or it is a database of something other than Optuna.
    """
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as e:
        raise ValueError(f"Storage URL {url!r} is not a database URL: {e}.") from e
    path = sqlite_path(url)
    if path is None:
        if parsed.get_backend_name() == "sqlite":
            raise ValueError("An in-memory SQLite storage cannot be shared; use a file.")
        # Looked at, never written: Optuna's storage would create its tables in any database.
        tables = _server_tables(url)
        if tables and "studies" not in tables:
            raise ValueError(
                f"Storage {display_url(url)} is a database of something else "
                f"(tables {sorted(tables)[:5]}), not an Optuna storage."
            )
        return bool(tables)
    if not path.exists():
        if not create:
            raise ValueError(f"Storage {display_url(url)} does not exist.")
        if not path.parent.is_dir() and url != DEFAULT_STORAGE:
            raise ValueError(f"Storage folder {str(path.parent)!r} does not exist.")
        return False
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise ValueError(f"Storage file {str(path)!r} is not an SQLite database.")
    # Read-only, so that a foreign database is never changed by a look at it.
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {
            row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    except sqlite3.DatabaseError as e:
        raise ValueError(
            f"Storage file {str(path)!r} is not a readable SQLite database: {e}."
        ) from e
    finally:
        con.close()
    if tables and "studies" not in tables:
        raise ValueError(
            f"Storage file {str(path)!r} is a database of something else "
            f"(tables {sorted(tables)[:5]}), not an Optuna storage."
        )
    return bool(tables)


def _server_tables(url: str) -> set[str]:
    """The tables of a database on a server, listed without writing anything."""
    with _opening(url):
        engine = sqlalchemy.create_engine(url)
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()


class _SQLiteConnect:
    """Opens connections to one SQLite file with the pragmas above (picklable, unlike a closure)."""

    def __init__(self, path: Path, read_only: bool) -> None:
        self.path = str(path)
        self.read_only = read_only

    def __call__(self) -> sqlite3.Connection:
        if self.read_only:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con


# One statement per ``trial.report`` and per trial user attr: Optuna's ORM path (load the trial,
# check its state, look up the row, insert, commit) costs 0.7-1.5 ms a call here, and the 50
# reports of a trial alone came to over 10% of its time. Only a running trial is written to.
_UPSERT_INTERMEDIATE_VALUE = (
    "INSERT INTO trial_intermediate_values"
    " (trial_id, step, intermediate_value, intermediate_value_type)"
    " SELECT ?, ?, ?, ? WHERE EXISTS"
    " (SELECT 1 FROM trials WHERE trial_id = ? AND state = 'RUNNING')"
    " ON CONFLICT (trial_id, step) DO UPDATE SET"
    " intermediate_value = excluded.intermediate_value,"
    " intermediate_value_type = excluded.intermediate_value_type"
)
_UPSERT_USER_ATTR = (
    "INSERT INTO trial_user_attributes (trial_id, key, value_json)"
    " SELECT ?, ?, ? WHERE EXISTS"
    " (SELECT 1 FROM trials WHERE trial_id = ? AND state = 'RUNNING')"
    " ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"
)


class _SQLiteStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` with one-statement writes of reports and user attrs, plain-SQL reads."""

    def _write(self, statement: str, parameters: tuple) -> int:
        """Run one statement in its own transaction on a pooled sqlite3 connection; the rows
        written. The DB-API connection directly: SQLAlchemy's Connection and transaction
        objects cost twice the statement itself here."""
        con = self.engine.raw_connection()
        try:
            written = con.cursor().execute(statement, parameters).rowcount
            con.commit()
        finally:
            con.close()  # back to the pool
        return written

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        written = self._write(_UPSERT_USER_ATTR, (trial_id, key, json.dumps(value), trial_id))
        if written != 1:
            # No such trial, or it is not running: Optuna's own path raises the right error.
            super().set_trial_user_attr(trial_id, key, value)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        stored, kind = TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            intermediate_value
        )
        written = self._write(
            _UPSERT_INTERMEDIATE_VALUE, (trial_id, step, stored, kind.name, trial_id)
        )
        if written != 1:
            # No such trial, or it is not running: Optuna's own path raises the right error.
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    # Reads: Optuna's ORM reads trials with 7 queries and an ORM object per row, and its cached
    # storage re-reads the unfinished trials at every ask, pruning check and tell; the same rows
    # read with plain SQL cost a fraction of that (hpo/_sqlite_reads.py).
    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._reading() as con:
            trial = read_trial(con, trial_id)
        if trial is None:
            # No such trial: Optuna's own path raises the right error.
            return super().get_trial(trial_id)
        return trial

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        with self._reading() as con:
            trials = read_trials(con, study_id, states, included_trial_ids, trial_id_greater_than)
        if trials is None:
            # No such study (Optuna raises the right error), or too many ids to bind in SQL.
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        return trials

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A pooled connection in a read transaction that ends when the block does.

        Inside the transaction every read sees one snapshot (WAL mode), so a trial is never
        half-updated by another worker's commit; ending it (nothing was written: a rollback)
        before the connection goes back to the pool means the next read starts a new snapshot
        and sees everything committed since.
        """
        with self.engine.connect() as con:
            con.exec_driver_sql("BEGIN")
            try:
                yield con
            finally:
                con.rollback()


def open_storage(
    url: str, *, heartbeat: bool = True, read_only: bool = False
) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` on ``url``; for SQLite, in WAL mode with a busy timeout.

    Args:
        url: An SQLAlchemy URL.
        heartbeat: Running trials record a heartbeat, and a trial whose worker died is failed
            and queued again (at most ``MAX_RETRY`` times) before the next trial starts.
        read_only: Open an existing SQLite file read-only, so that looking changes nothing.

    Raises:
        ValueError: If the database cannot be reached or its driver is not installed.
    """
    with _opening(url):
        return _open(url, heartbeat, read_only)


@contextmanager
def _opening(url: str) -> Iterator[None]:
    """Turns a missing driver or a database that cannot be reached into a one-line ValueError."""
    try:
        yield
    except ImportError as e:
        # Optuna replaces the ImportError by a generic one; the cause names the missing module
        # (postgresql:// means psycopg2 under SQLAlchemy 2.0 but psycopg 3 from 2.1 on).
        parsed = make_url(url)
        raise ValueError(
            f"Storage {display_url(url)} needs the {parsed.get_backend_name()} driver "
            f"{parsed.get_driver_name()!r} (for PostgreSQL: pip install -e '.[postgresql]'): "
            f"{e.__cause__ or e}"
        ) from e
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ValueError(f"Cannot open storage {display_url(url)}: {reason}") from e


def _open(url: str, heartbeat: bool, read_only: bool) -> optuna.storages.RDBStorage:
    path = sqlite_path(url)
    storage_class = optuna.storages.RDBStorage
    if path is not None:
        engine_kwargs: dict = {"creator": _SQLiteConnect(path, read_only)}
        storage_class = _SQLiteStorage
    else:
        engine_kwargs = {"pool_pre_ping": True}
    if not heartbeat or read_only:
        return storage_class(url, engine_kwargs=engine_kwargs)
    with warnings.catch_warnings():
        # Heartbeats and retries are experimental in Optuna since 2.8 and stable in use.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return storage_class(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY
            ),
        )


def ensure_parent(url: str) -> None:
    """Create the folder of the default SQLite file (``studies/``) when it is missing."""
    path = sqlite_path(url)
    if path is not None and url == DEFAULT_STORAGE:
        os.makedirs(path.parent, exist_ok=True)
