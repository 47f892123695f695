"""Optuna RDB storage, checked before use and configured for many writers on one SQLite file.

SQLite serialises writers. With its default rollback journal and ``synchronous=FULL``, every
``trial.report`` is a transaction with several fsyncs, and readers block writers. Write-ahead
logging lets the dashboard read while workers write, ``synchronous=NORMAL`` drops the per-commit
fsync (WAL stays consistent after a crash; the last commits may be lost on power failure), and a
generous busy timeout makes a writer wait its turn instead of failing with "database is locked".
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
import warnings
from collections.abc import Container, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from packaging.version import Version
from sqlalchemy.engine import Connection, make_url

from hpo import _sqlite_writes as writes
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


def has_study(url: str, name: str) -> bool:
    """Whether the storage at ``url`` holds a study ``name``, looked up without writing.

    Optuna's storage is not opened for this: opening it writes its version row into a database
    whose tables another command is creating at this moment. A study row comes after that row.
    """
    path = sqlite_path(url)
    kwargs = {"creator": _SQLiteConnect(path, read_only=True)} if path is not None else {}
    with _opening(url):
        engine = sqlalchemy.create_engine(url, **kwargs)
        try:
            with engine.connect() as con:
                found = con.execute(_FIND_STUDY, {"name": name}).first()
        finally:
            engine.dispose()
    return found is not None


_FIND_STUDY = sqlalchemy.text("SELECT study_id FROM studies WHERE study_name = :name")


def _server_tables(url: str) -> set[str]:
    """The tables of a database on a server, listed without writing anything."""
    with _opening(url):
        engine = sqlalchemy.create_engine(url)
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()


class _SQLiteConnect:
    """Opens connections to one SQLite file with the pragmas above (picklable, unlike a closure;
    equal to its unpickled copy, so that a storage sent to a worker compares equal)."""

    def __init__(self, path: Path, read_only: bool) -> None:
        self.path = str(path)
        self.read_only = read_only

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _SQLiteConnect):
            return NotImplemented
        return (self.path, self.read_only) == (other.path, other.read_only)

    def __hash__(self) -> int:
        return hash((_SQLiteConnect, self.path, self.read_only))

    def __call__(self) -> sqlite3.Connection:
        if self.read_only:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con


class _SQLiteStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` with plain-SQL trial writes and reads: see ``hpo/_sqlite_writes.py`` and
    ``hpo/_sqlite_reads.py``. Where those decline (a trial that is not running, an unknown id),
    Optuna's own path acts and raises the right error."""

    @contextmanager
    def _sqlite3(self) -> Iterator[sqlite3.Connection]:
        """A pooled sqlite3 connection. The DB-API connection directly: SQLAlchemy's Connection
        and transaction objects cost more than a one-statement write itself."""
        pooled = self.engine.raw_connection()
        try:
            yield pooled.dbapi_connection
        finally:
            pooled.close()  # back to the pool

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._sqlite3() as con:
            done = writes.set_intermediate_value(con, trial_id, step, intermediate_value)
        if not done:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._sqlite3() as con:
            done = writes.set_attr(con, "user", trial_id, key, value)
        if not done:
            super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._sqlite3() as con:
            done = writes.set_attr(con, "system", trial_id, key, value)
        if not done:
            super().set_trial_system_attr(trial_id, key, value)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        if template_trial is None:
            with self._sqlite3() as con:
                trial = writes.create_trial(con, study_id)
            if trial is not None:
                return trial
        return super()._create_new_trial(study_id, template_trial)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        args = (trial_id, param_name, param_value_internal, distribution, previous_distribution)
        with self._sqlite3() as con:
            done = writes.set_param(con, *args)
        if not done:
            super()._set_trial_param(*args)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state.is_finished():
            with self._sqlite3() as con:
                if writes.finish_trial(con, trial_id, state, values):
                    return True
        return super().set_trial_state_values(trial_id, state, values)

    def record_heartbeat(self, trial_id: int) -> None:
        with self._sqlite3() as con:
            writes.record_heartbeat(con, trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = 2 * self.heartbeat_interval if self.grace_period is None else self.grace_period
        with self._sqlite3() as con:
            return writes.stale_trial_ids(con, study_id, grace)

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
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                return _open(url, heartbeat, read_only)
            except (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError) as e:
                if attempt + 1 == _CREATE_ATTEMPTS or not _lost_creation_race(e):
                    raise
            # Another command is creating Optuna's tables in this new database right now: its
            # tables are there once it commits, and the next attempt uses them.
            time.sleep(random.uniform(0.05, 0.2))
    raise AssertionError("unreachable")


_CREATE_ATTEMPTS = 5


def _lost_creation_race(error: Exception) -> bool:
    """Whether ``error`` says another process created the same tables or version row first."""
    text = f"{error} {error.__cause__}"
    return any(
        sign in text
        for sign in ("already exists", "UNIQUE constraint failed", "duplicate key value")
    )


@contextmanager
def opened_storage(
    url: str, *, heartbeat: bool = True, read_only: bool = False
) -> Iterator[optuna.storages.RDBStorage]:
    """``open_storage`` for the block. Its connections close when the block ends, not whenever
    the garbage collector gets to them; the last one to close a SQLite file folds the WAL back
    into it, so that the ``.db`` file alone holds everything."""
    storage = open_storage(url, heartbeat=heartbeat, read_only=read_only)
    try:
        yield storage
    finally:
        storage.engine.dispose()


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


# The plain-SQL path (hpo/_sqlite_writes.py, hpo/_sqlite_reads.py) reads and writes Optuna's
# tables directly, so it is used only with the Optuna releases and the table schema it was
# written and tested against (.ci/run tests the oldest, 4.9, and the newest). Both are checked:
# Optuna 5 kept schema 12 (alembic "v3.2.0.a") of Optuna 4 but changed how trial times are
# stored (UTC instead of local time; hpo/_sqlite_reads.py's STORED_AS_UTC).
FAST_PATH_OPTUNA = ((4, 9), (5, 0))  # (major, minor) releases
FAST_PATH_SCHEMA = (12, "v3.2.0.a")  # version_info.schema_version, alembic_version.version_num


def fast_path_refusal(path: Path) -> str | None:
    """Why the plain-SQL path must not be used on this SQLite file; None if it may.

    The file's own schema is read (read-only) when it has Optuna's tables; a new file gets the
    schema of the installed Optuna.
    """
    release = Version(optuna.__version__).release[:2]
    if release not in FAST_PATH_OPTUNA:
        written_for = ", ".join(f"{major}.{minor}" for major, minor in FAST_PATH_OPTUNA)
        return (
            f"it is written for Optuna {written_for}, but Optuna {optuna.__version__} is installed"
        )
    schema = _stored_schema(path)
    if schema is None:
        from optuna.storages._rdb.models import SCHEMA_VERSION

        schema = (SCHEMA_VERSION, FAST_PATH_SCHEMA[1])
    if schema != FAST_PATH_SCHEMA:
        return f"it is written for table schema {FAST_PATH_SCHEMA}, but {path} has {schema}"
    return None


def _stored_schema(path: Path) -> tuple[int | None, str | None] | None:
    """``(schema_version, alembic version)`` of a file with Optuna's tables, else None (also
    for a file that cannot be read: opening it, Optuna raises the error to show)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not {"version_info", "alembic_version"} <= tables:
                return None
            schema = con.execute("SELECT schema_version FROM version_info").fetchone()
            alembic = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return (schema and schema[0], alembic and alembic[0])


def _open(url: str, heartbeat: bool, read_only: bool) -> optuna.storages.RDBStorage:
    path = sqlite_path(url)
    storage_class = optuna.storages.RDBStorage
    if path is not None:
        engine_kwargs: dict = {"creator": _SQLiteConnect(path, read_only)}
        refusal = fast_path_refusal(path)
        if refusal is None:
            storage_class = _SQLiteStorage
        else:
            logger.info("Optuna's own SQL for %s: hpo's plain-SQL path is off, %s.", path, refusal)
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
