"""Trial writes to an Optuna SQLite database in plain SQL (the write path of ``_SQLiteStorage``).

Optuna's ``RDBStorage`` writes through its ORM: a session, the trial loaded to check its state,
the row looked up, the change flushed and committed, and a short trial makes some 25 such writes
(its reports, ask, params, attrs, heartbeats, the stale check, tell). The functions here make the
same rows with one to four statements in one transaction on the pooled ``sqlite3`` connection
(tests compare the tables both paths leave, row by row). Numbers are bound as SQLAlchemy binds
them to Optuna's Float columns: a NumPy number as a Python float.

They write only to a RUNNING trial, and return False (None) where Optuna's own path should act
instead: no such trial or study, a trial in another state (Optuna raises the right error, or
handles a WAITING trial), a trial made from a template. A write that reads first takes the write
lock first (``BEGIN IMMEDIATE``): in WAL mode a read transaction that then writes fails at once
with "database is locked" when another worker wrote in between, instead of waiting its turn.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages._rdb.models import TrialIntermediateValueModel, TrialValueModel
from optuna.trial import FrozenTrial, TrialState

from hpo._sqlite_reads import stored_datetime

_IF_RUNNING = "WHERE EXISTS (SELECT 1 FROM trials WHERE trial_id = ? AND state = 'RUNNING')"
_UPSERT_INTERMEDIATE_VALUE = (
    "INSERT INTO trial_intermediate_values"
    " (trial_id, step, intermediate_value, intermediate_value_type)"
    f" SELECT ?, ?, ?, ? {_IF_RUNNING}"
    " ON CONFLICT (trial_id, step) DO UPDATE SET"
    " intermediate_value = excluded.intermediate_value,"
    " intermediate_value_type = excluded.intermediate_value_type"
)
_UPSERT_ATTR = (
    "INSERT INTO {table} (trial_id, key, value_json)"
    f" SELECT ?, ?, ? {_IF_RUNNING}"
    " ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"
)
_ATTR_TABLES = {"user": "trial_user_attributes", "system": "trial_system_attributes"}
_UPSERT_VALUE = (
    "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (trial_id, objective) DO UPDATE SET"
    " value = excluded.value, value_type = excluded.value_type"
)
# The database's clock, in UTC and whole seconds, as Optuna's heartbeats use it.
_UPSERT_HEARTBEAT = (
    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, CURRENT_TIMESTAMP)"
    " ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat"
)


@contextmanager
def _write_transaction(con: sqlite3.Connection) -> Iterator[None]:
    """A transaction that holds the write lock from its start; rolled back on any exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


class _NotHere(Exception):
    """Leave the transaction without writing: Optuna's own path handles this case."""


def _one_statement(con: sqlite3.Connection, statement: str, args: tuple) -> bool:
    written = con.execute(statement, args).rowcount
    con.commit()
    return written == 1


def _integer(value: int) -> int:
    """A NumPy integer as a Python int: sqlite3 would bind it as a BLOB of its bytes. (Optuna
    stores such a step as that BLOB, which then reads back as bytes; here it is the number.)"""
    return int(value) if isinstance(value, np.integer) else value


def set_intermediate_value(con: sqlite3.Connection, trial_id: int, step: int, value: float) -> bool:
    # float(): the column is a SQLAlchemy Float, which stores a NumPy number as a REAL; sqlite3
    # itself would bind np.float32 as a BLOB of its bytes.
    stored, kind = TrialIntermediateValueModel.intermediate_value_to_stored_repr(float(value))
    args = (trial_id, _integer(step), stored, kind.name, trial_id)
    return _one_statement(con, _UPSERT_INTERMEDIATE_VALUE, args)


def set_attr(con: sqlite3.Connection, kind: str, trial_id: int, key: str, value: Any) -> bool:
    """A user or system attr (``kind``) of a running trial, as JSON."""
    statement = _UPSERT_ATTR.format(table=_ATTR_TABLES[kind])
    return _one_statement(con, statement, (trial_id, key, json.dumps(value), trial_id))


def create_trial(con: sqlite3.Connection, study_id: int) -> FrozenTrial | None:
    """A new RUNNING trial numbered after the study's trials; None if there is no such study."""
    start = datetime.datetime.now()
    try:
        with _write_transaction(con):
            if (
                con.execute("SELECT 1 FROM studies WHERE study_id = ?", (study_id,)).fetchone()
                is None
            ):
                raise _NotHere
            trial_id = con.execute(
                "INSERT INTO trials (number, study_id, state, datetime_start)"
                " VALUES (NULL, ?, 'RUNNING', ?)",
                (study_id, stored_datetime(start)),
            ).lastrowid
            # The number as Optuna counts it: the study's trials made before this one.
            (number,) = con.execute(
                "SELECT COUNT(*) FROM trials WHERE study_id = ? AND trial_id < ?",
                (study_id, trial_id),
            ).fetchone()
            con.execute("UPDATE trials SET number = ? WHERE trial_id = ?", (number, trial_id))
    except _NotHere:
        return None
    return FrozenTrial(
        number=number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=start,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def set_param(
    con: sqlite3.Connection,
    trial_id: int,
    name: str,
    internal_value: float,
    distribution: BaseDistribution,
    previous_distribution: BaseDistribution | None,
) -> bool:
    """A param of a running trial, after checking its distribution against the study's.

    Raises:
        ValueError: If the study has this param with an incompatible distribution.
    """
    try:
        with _write_transaction(con):
            row = con.execute(
                "SELECT study_id FROM trials WHERE trial_id = ? AND state = 'RUNNING'", (trial_id,)
            ).fetchone()
            if row is None:
                raise _NotHere
            if previous_distribution is None:
                # Any earlier trial's distribution of this param, as Optuna looks one up.
                previous = con.execute(
                    "SELECT p.distribution_json FROM trial_params p"
                    " JOIN trials t ON t.trial_id = p.trial_id"
                    " WHERE t.study_id = ? AND p.param_name = ? LIMIT 1",
                    (row[0], name),
                ).fetchone()
                if previous is not None:
                    previous_distribution = json_to_distribution(previous[0])
            if previous_distribution is not None:
                check_distribution_compatibility(previous_distribution, distribution)
            try:
                con.execute(
                    "INSERT INTO trial_params"
                    " (trial_id, param_name, param_value, distribution_json) VALUES (?, ?, ?, ?)",
                    (trial_id, name, float(internal_value), distribution_to_json(distribution)),
                )
            except sqlite3.IntegrityError:  # set already: Optuna logs and ignores it
                raise _NotHere from None
    except _NotHere:
        return False
    return True


def finish_trial(
    con: sqlite3.Connection, trial_id: int, state: TrialState, values: Sequence[float] | None
) -> bool:
    """End a running trial in a finished ``state``, with its objective values."""
    assert state.is_finished()
    complete = datetime.datetime.now()
    try:
        with _write_transaction(con):
            ended = con.execute(
                "UPDATE trials SET state = ?, datetime_complete = ?"
                " WHERE trial_id = ? AND state = 'RUNNING'",
                (state.name, stored_datetime(complete), trial_id),
            ).rowcount
            if ended != 1:
                raise _NotHere
            for objective, value in enumerate(values or ()):
                stored, kind = TrialValueModel.value_to_stored_repr(float(value))
                con.execute(_UPSERT_VALUE, (trial_id, objective, stored, kind.name))
    except _NotHere:
        return False
    return True


def record_heartbeat(con: sqlite3.Connection, trial_id: int) -> None:
    con.execute(_UPSERT_HEARTBEAT, (trial_id,))
    con.commit()


def stale_trial_ids(con: sqlite3.Connection, study_id: int, grace_period: float) -> list[int]:
    """The study's RUNNING trials whose last heartbeat is more than ``grace_period`` s old."""
    rows = con.execute(
        "SELECT t.trial_id, h.heartbeat, CURRENT_TIMESTAMP FROM trials t"
        " JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
        " WHERE t.study_id = ? AND t.state = 'RUNNING' ORDER BY t.trial_id",
        (study_id,),
    ).fetchall()
    grace = datetime.timedelta(seconds=grace_period)
    parse = datetime.datetime.fromisoformat
    return [trial_id for trial_id, beat, now in rows if parse(now) - parse(beat) > grace]
