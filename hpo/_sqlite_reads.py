"""Trials read from an Optuna SQLite database with plain SQL (the read path of ``_SQLiteStorage``).

Optuna's ``RDBStorage.get_trial`` and ``_get_trials`` go through its ORM: a query for the study,
one for the trials, five ``selectinload`` queries for their params, values, user and system
attrs and intermediate values, an ORM object per row, then a ``FrozenTrial`` per trial. Optuna's
cached storage calls ``_get_trials`` at every ``ask``, ``should_prune`` and ``tell`` to re-read
the trials still unfinished, so on the book's workload a search made ~6 ``_get_trials`` and 3
``get_trial`` calls per trial, and they were most of its storage time. The functions here read
the same rows of the same tables with plain SQL and build the same ``FrozenTrial`` objects,
converted exactly as ``RDBStorage._build_frozen_trial_from_trial_model`` converts them (tests
compare both readers on real studies, field by field), in a fraction of the ORM's time.

They take an open connection and return None where Optuna's own path should answer instead: an
unknown trial or study (it raises the right ``KeyError``), or too many trial ids to bind.
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Collection, Container, Iterable
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.storages._rdb.models import TrialIntermediateValueModel, TrialModel, TrialValueModel
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Connection

# Optuna 5 stores trial times as naive UTC and gives them as naive local time; Optuna 4 stored
# and gave naive local time.
STORED_AS_UTC = hasattr(TrialModel, "_datetime_start_utc")

# Each statement binds the included trial ids once, and SQLite limits the number of bound
# variables (999 before SQLite 3.32); above this many, Optuna's own path does the reading.
MAX_INCLUDED_TRIAL_IDS = 900

_TRIALS = "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials"
# The rows of the other tables, for the trials a WHERE clause on ``trials`` selects, each in
# the order of Optuna's reads: params by param_id (Optuna sorts them), the rest in the order of
# the (trial_id, ...) unique index that SQLite reads them by, so no sorting is needed.
_PARAMS = "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params"
_VALUES = "SELECT trial_id, objective, value, value_type FROM trial_values"
_USER_ATTRS = "SELECT trial_id, key, value_json FROM trial_user_attributes"
_SYSTEM_ATTRS = "SELECT trial_id, key, value_json FROM trial_system_attributes"
_INTERMEDIATE_VALUES = (
    "SELECT trial_id, step, intermediate_value, intermediate_value_type"
    " FROM trial_intermediate_values"
)
_ORDERS = {
    _PARAMS: "param_id",
    _VALUES: "trial_id, objective",
    _USER_ATTRS: "trial_id, key",
    _SYSTEM_ATTRS: "trial_id, key",
    _INTERMEDIATE_VALUES: "trial_id, step",
}


def read_trial(con: Connection, trial_id: int) -> FrozenTrial | None:
    """The trial with this id, or None if there is none."""
    trials = _frozen_trials(con, "trial_id = ?", (trial_id,))
    return trials[0] if trials else None


def read_trials(
    con: Connection,
    study_id: int,
    states: Container[TrialState] | None,
    included_trial_ids: Collection[int],
    trial_id_greater_than: int,
) -> list[FrozenTrial] | None:
    """The trials of ``RDBStorage._get_trials`` with the same arguments, ordered by trial id.

    That is: the study's trials in ``states`` (all if None) whose id is greater than
    ``trial_id_greater_than`` or, if at most that, in ``included_trial_ids`` (Optuna's cached
    storage passes the unfinished trials it has seen and the last finished trial id, so that
    finished trials are read once). None if there is no such study, or if there are too many
    included ids to bind.
    """
    included = [i for i in included_trial_ids if i <= trial_id_greater_than]
    if len(included) > MAX_INCLUDED_TRIAL_IDS:
        return None
    if con.exec_driver_sql("SELECT 1 FROM studies WHERE study_id = ?", (study_id,)).first() is None:
        return None
    where, args = "study_id = ?", [study_id]
    if states is not None:
        assert isinstance(states, Iterable)  # as Optuna asserts: a Container to type checkers
        names = [state.name for state in states]
        where += f" AND state IN ({_marks(names)})"
        args += names
    if trial_id_greater_than > -1:
        # Optuna: ids greater than the last finished one, or in the (filtered) included set.
        where += f" AND (trial_id > ? OR trial_id IN ({_marks(included)}))"
        args += [trial_id_greater_than, *included]
    return _frozen_trials(con, where, tuple(args))


def _marks(items: list[Any]) -> str:
    """``?, ?, ?`` for the items; ``NULL`` for none (``x IN (NULL)`` holds for no row)."""
    return ", ".join(["?"] * len(items)) or "NULL"


def _frozen_trials(con: Connection, where: str, args: tuple) -> list[FrozenTrial]:
    """The trials a WHERE clause on ``trials`` selects, ordered by trial id.

    All reads of one call happen in the caller's transaction, so they see one snapshot: a trial
    and its values are never read from two sides of another worker's ``tell``.
    """
    rows = con.exec_driver_sql(f"{_TRIALS} WHERE {where} ORDER BY trial_id", args).fetchall()
    if not rows:
        return []
    # Every other table read in one statement for all the trials, as ``selectinload`` does.
    selected = f"trial_id IN (SELECT trial_id FROM trials WHERE {where})"
    rest: dict[str, dict[int, list[tuple]]] = {}
    for select, order in _ORDERS.items():
        grouped = rest[select] = defaultdict(list)
        for trial_id, *columns in con.exec_driver_sql(
            f"{select} WHERE {selected} ORDER BY {order}", args
        ):
            grouped[trial_id].append(columns)

    trials = []
    for trial_id, number, state, start, complete in rows:
        distributions, params = {}, {}
        for name, internal, distribution_json in rest[_PARAMS][trial_id]:
            distribution = json_to_distribution(distribution_json)
            distributions[name] = distribution
            params[name] = distribution.to_external_repr(internal)
        trials.append(
            FrozenTrial(
                number=number,
                state=TrialState[state],  # stored by name, as SQLAlchemy stores an Enum
                value=None,
                values=_values(rest[_VALUES][trial_id]),
                datetime_start=_datetime(start),
                datetime_complete=_datetime(complete),
                params=params,
                distributions=distributions,
                user_attrs={key: json.loads(value) for key, value in rest[_USER_ATTRS][trial_id]},
                system_attrs={
                    key: json.loads(value) for key, value in rest[_SYSTEM_ATTRS][trial_id]
                },
                intermediate_values={
                    step: TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                        value, TrialIntermediateValueModel.TrialIntermediateValueType[kind]
                    )
                    for step, value, kind in rest[_INTERMEDIATE_VALUES][trial_id]
                },
                trial_id=trial_id,
            )
        )
    return trials


def _values(rows: list[tuple]) -> list[float] | None:
    """Objective values by objective index; None before the trial is told (no rows)."""
    if not rows:
        return None
    values: list[float] = [0.0] * len(rows)
    for objective, value, kind in rows:
        # inf and -inf are stored as NULL and a type, as Optuna stores them.
        values[objective] = TrialValueModel.stored_repr_to_value(
            value, TrialValueModel.TrialValueType[kind]
        )
    return values


def _datetime(stored: str | None) -> datetime.datetime | None:
    # SQLAlchemy keeps an SQLite DATETIME as ISO text, "2024-05-01 12:34:56.789012".
    if stored is None:
        return None
    value = datetime.datetime.fromisoformat(stored)
    if STORED_AS_UTC:
        value = value.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)
    return value


def stored_datetime(value: datetime.datetime) -> str:
    """A naive local time as Optuna's ``TrialModel`` stores it: the inverse of the reading."""
    if STORED_AS_UTC:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")
