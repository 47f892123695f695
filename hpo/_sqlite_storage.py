"""The fast SQLite path of ``hpo.storage``: connections with the pragmas for many writers, and an
``RDBStorage`` whose hot trial writes and reads are plain SQL, on only for the Optuna releases and
table schema it is written for.

SQLite serialises writers. With its default rollback journal and ``synchronous=FULL``, every
``trial.report`` is a transaction with several fsyncs, and readers block writers. Write-ahead
logging lets the dashboard read while workers write, ``synchronous=NORMAL`` drops the per-commit
fsync (WAL stays consistent after a crash; the last commits may be lost on power failure), and a
generous busy timeout makes a writer wait its turn instead of failing with "database is locked".
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import sqlalchemy
import sqlalchemy.dialects.sqlite
import sqlalchemy.orm
from optuna.distributions import BaseDistribution
from optuna.storages._rdb.storage import _VersionManager
from optuna.trial import FrozenTrial, TrialState
from packaging.version import Version
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from hpo import _sqlite_writes as writes
from hpo._sqlite_reads import read_trial, read_trials

SQLITE_BUSY_TIMEOUT_S = 60.0


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection to an existing SQLite file that cannot write to it and leaves nothing beside it.

    A WAL-mode file needs its ``-shm`` index to be read, and a connection opened with
    ``mode=ro`` creates ``-wal`` and ``-shm`` but, being read-only, never removes them. So:

    - file and folder writable by us: a read-write opening (``mode=rw``: never creates the file)
      with ``query_only``, so SQL cannot write; the last connection to close removes ``-wal`` and
      ``-shm`` as every SQLite connection does;
    - else, with ``-wal`` or ``-shm`` beside it (someone who can write is using it, or left a log):
      ``mode=ro``, which reads the log;
    - else ``immutable=1``: no locks and no ``-shm``, which is what a read-only folder or mount
      needs. Safe because nobody writes: we cannot, and a writer would have made the ``-wal``.
    """
    folder = path.parent
    uri = f"file:{quote(str(path))}"
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK):
        con = sqlite3.connect(
            f"{uri}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )
        con.execute("PRAGMA query_only=ON")
        return con
    logs = [folder / f"{path.name}{suffix}" for suffix in ("-wal", "-shm")]
    mode = "mode=ro" if any(log.exists() for log in logs) else "mode=ro&immutable=1"
    return sqlite3.connect(
        f"{uri}?{mode}", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
    )


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
            return connect_read_only(Path(self.path))
        con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con


class _SQLiteStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` with plain-SQL trial writes and reads: see ``hpo/_sqlite_writes.py`` and
    ``hpo/_sqlite_reads.py``. Where those decline (a trial that is not running, an unknown id),
    Optuna's own path acts and raises the right error.

    A file that already has the schema this path is written for is opened without Optuna's
    table creation and schema check: the schema was just read (``fast_path_refusal``), and the
    check would import alembic and parse its migration scripts, 0.2 s in every process that
    opens the study. Optuna's version manager is made the first time something asks for it
    (``optuna storage upgrade``, say). A new file gets the schema first (:func:`_create_schema`).
    """

    def __init__(
        self,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        path = Path(sqlalchemy.engine.make_url(url).database or "")
        creator = (engine_kwargs or {}).get("creator")
        schema = _stored_schema(path)
        if schema is None and not getattr(creator, "read_only", False):
            _create_schema(path)
            schema = _stored_schema(path)
        if schema != FAST_PATH_SCHEMA:
            super().__init__(
                url,
                engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
            )
            return
        # Optuna's own RDBStorage.__init__ (the same in 4.9 and 5.0), but the two steps above.
        # Tests check that both ways open storages that read, write and pickle alike.
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("The value of `heartbeat_interval` should be a positive integer.")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("The value of `grace_period` should be a positive integer.")
        self.engine_kwargs = engine_kwargs or {}
        self.url = self._fill_storage_url_template(url)
        self.skip_compatibility_check = True
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
        self.failed_trial_callback = heartbeat_stale_trial_callback
        self.engine = sqlalchemy.engine.create_engine(self.url, **self.engine_kwargs)
        self.scoped_session = sqlalchemy.orm.scoped_session(
            sqlalchemy.orm.sessionmaker(bind=self.engine)
        )

    @functools.cached_property
    def _version_manager(self) -> Any:
        return _VersionManager(self.url, self.engine, self.scoped_session)

    def __getstate__(self) -> dict[Any, Any]:
        state = self.__dict__.copy()
        for unpicklable in ("scoped_session", "engine", "_version_manager"):
            state.pop(unpicklable, None)
        return state

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


def _create_schema(path: Path) -> None:
    """Optuna's tables, its version row and alembic's stamp in a file without tables, as
    Optuna's ``RDBStorage`` makes them (a test compares the two files), in one transaction and
    without importing alembic (0.2 s). Commands creating the same new file at once take turns
    (``BEGIN IMMEDIATE``); the ones after the first find the tables and leave them."""
    from optuna.storages._rdb import models

    dialect = sqlalchemy.dialects.sqlite.dialect()
    statements = []
    for table in models.BaseModel.metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    existed = path.exists()
    try:
        _write_schema(path, statements)
    except BaseException:
        # A full disk, say: a file this made stays behind only if it holds something.
        if not existed and path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise


def _write_schema(path: Path, statements: list[str]) -> None:
    from optuna.storages._rdb import models

    with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for statement in statements:
                    con.execute(statement)
                con.execute(
                    "INSERT INTO version_info (version_info_id, schema_version, library_version) "
                    "VALUES (1, ?, ?)",
                    (models.SCHEMA_VERSION, optuna.__version__),
                )
                con.execute(_ALEMBIC_TABLE)
                con.execute(
                    "INSERT INTO alembic_version (version_num) VALUES (?)", (FAST_PATH_SCHEMA[1],)
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


# The table alembic's stamp makes (alembic.runtime.migration.MigrationContext), as SQLite keeps it.
_ALEMBIC_TABLE = (
    "CREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n\t"
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)"
)


def _stored_schema(path: Path) -> tuple[int | None, str | None] | None:
    """``(schema_version, alembic version)`` of a file with Optuna's tables, else None (also
    for a file that cannot be read: opening it, Optuna raises the error to show)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with closing(connect_read_only(path)) as con:
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
