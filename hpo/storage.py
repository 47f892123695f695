"""Optuna RDB storage, checked before use and configured for many writers on one SQLite file
(the SQLite specifics: ``hpo/_sqlite_storage.py``)."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpo._server_storage import ServerStorage, with_retries
from hpo._sqlite_checks import check_sqlite_file, check_writable
from hpo._sqlite_storage import (  # noqa: F401 - re-exported: hpo.storage's names, as before
    FAST_PATH_OPTUNA,
    FAST_PATH_SCHEMA,
    SQLITE_BUSY_TIMEOUT_S,
    _SQLiteConnect,
    _SQLiteStorage,
    fast_path_refusal,
)

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///studies/hpo.db"
HEARTBEAT_INTERVAL_S = 2  # a running trial writes a heartbeat this often ...
GRACE_PERIOD_S = 6  # ... and counts as dead (failed and retried) after this long without one
MAX_RETRY = 3  # retries of a trial whose worker died


def display_url(url: str) -> str:
    """The URL with any password masked, for messages and logs: the one of ``user:password@``
    and query parameters such as ``?password=...`` (libpq reads it there too)."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        # Not a URL SQLAlchemy reads: mask what looks like a password anyway.
        return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))
    masked = {
        key: "***" if key.lower() in _PASSWORD_KEYS else value
        for key, value in parsed.query.items()
    }
    shown = parsed.update_query_dict(masked).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")


_PASSWORD_KEYS = {"password", "passwd", "pwd"}
_USERINFO_PASSWORD = re.compile(r"([^\s/@:]+:)[^\s/@]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?i:password|passwd|pwd)=)[^&]*")


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
        create: The command writes: a missing SQLite file may be created (otherwise it must
            exist), and the file and its folder must be writable by this user.

    Returns:
        Whether there is a database to read (a non-empty SQLite file, or a database on a server
        that holds Optuna's tables).

    Raises:
        ValueError: If the URL is malformed, the server cannot be reached or its driver is not
            installed, the SQLite file cannot be used (``hpo._sqlite_checks``: a folder, missing,
            not writable for a command that writes, not SQLite, damaged), or it is a database of
            something other than Optuna.
    """
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as e:
        shown = display_url(url)
        reason = str(e).replace(url, shown)  # SQLAlchemy's message may quote the URL
        raise ValueError(f"Storage URL {shown!r} is not a database URL: {reason}.") from e
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
    return check_sqlite_file(
        path, create=create, make_folder=url == DEFAULT_STORAGE, shown_url=display_url(url)
    )


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


def open_storage(
    url: str, *, heartbeat: bool = True, read_only: bool = False, in_run: bool = False
) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` on ``url``; for SQLite, in WAL mode with a busy timeout.

    Args:
        url: An SQLAlchemy URL.
        heartbeat: Running trials record a heartbeat, and a trial whose worker died is failed
            and queued again (at most ``MAX_RETRY`` times) before the next trial starts.
        read_only: Open an existing SQLite file read-only, so that looking changes nothing.
        in_run: For a worker of a run whose storage was reached before: a database server that
            is away (restarting) is waited for, as every call of the run waits for it
            (hpo/_server_storage.py), instead of ending the run.

    Raises:
        ValueError: If the database cannot be reached or its driver is not installed, or (not
            ``read_only``) an SQLite file or its folder is not writable by this user.
    """
    with _opening(url):
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                if in_run and sqlite_path(url) is None:
                    return with_retries(lambda: _open(url, heartbeat, read_only), "opening")
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
    url: str, *, heartbeat: bool = True, read_only: bool = False, in_run: bool = False
) -> Iterator[optuna.storages.RDBStorage]:
    """``open_storage`` for the block. Its connections close when the block ends, not whenever
    the garbage collector gets to them; the last one to close a SQLite file folds the WAL back
    into it, so that the ``.db`` file alone holds everything."""
    storage = open_storage(url, heartbeat=heartbeat, read_only=read_only, in_run=in_run)
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
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error) as e:
        # sqlite3's own: from making a new file's tables (hpo/_sqlite_storage.py).
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ValueError(f"Cannot open storage {display_url(url)}: {reason}") from e


def _open(url: str, heartbeat: bool, read_only: bool) -> optuna.storages.RDBStorage:
    path = sqlite_path(url)
    storage_class = optuna.storages.RDBStorage
    if path is not None:
        if not read_only:
            check_writable(path)  # a one-line refusal, not SQLite's error halfway through a write
        engine_kwargs: dict = {"creator": _SQLiteConnect(path, read_only)}
        refusal = fast_path_refusal(path)
        if refusal is None:
            storage_class = _SQLiteStorage
        else:
            logger.info("Optuna's own SQL for %s: hpo's plain-SQL path is off, %s.", path, refusal)
    else:
        engine_kwargs = {"pool_pre_ping": True}
        storage_class = ServerStorage
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


def quiet_storage_fallbacks() -> None:
    """Silence Optuna's warning that a query failed and it falls back to a slower one: on a
    server that restarts, the call is tried again here (hpo/_server_storage.py), and the error,
    if it stays, ends the run with one line."""
    logging.getLogger("optuna.storages._rdb.storage").setLevel(logging.ERROR)


def ensure_parent(url: str) -> None:
    """Create the folder of the default SQLite file (``studies/``) when it is missing."""
    path = sqlite_path(url)
    if path is not None and url == DEFAULT_STORAGE:
        try:
            os.makedirs(path.parent, exist_ok=True)
        except OSError as e:
            raise ValueError(f"Cannot make the storage folder {str(path.parent)!r}: {e}.") from e
