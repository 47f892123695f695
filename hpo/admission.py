"""Admission of new trials, coordinated through the study's own database.

A run adds exactly the trials it was asked for only if "count this run's trials, then ask for
one" is a single step for all of its workers, wherever they run. A file lock holds only on one
host, so the step holds a lock that lives in the database every worker already shares: a row of
Optuna's ``study_system_attributes`` table under the key ``hpo:admission``, which the table's
unique (study_id, key) constraint lets one holder insert at a time.

The row is a lease: it names its holder and a time after which any worker may take it over, so
a holder killed while it holds the lock (a few milliseconds per trial) delays the others by at
most ``LEASE_S`` and never blocks them for good. Only the admission step is under the lock; the
sampler draws a trial's parameters after it, at the trial's first suggestion (Optuna samples
lazily), so the workers' sampling is never serialised.

On PostgreSQL the workers wait for the row in the server's queue of an advisory lock of the
study (``pg_advisory_xact_lock``), which costs nothing while it waits, instead of trying the row
again and again: at 16 workers the tries had doubled the CPU of a trial (benchmarks/
bench_scale.py, table 4). The row stays the lock: an advisory lock ends with its transaction
and its connection, a row outlasts a server restart. Elsewhere a waiting worker reads the row
and writes it only when it is free (or its lease ran out): on SQLite a write waits for the
file's one writer, with the trials of every worker.

What the lock holds up is one count and one new trial: :meth:`AdmissionLock.places_taken` counts a
run's trials in one query, where reading the study's trials took 7 queries and grew with the
running trials (benchmarks/bench_scale.py, table 4).
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.engine import Connection, Engine

from hpo._server_storage import is_disconnect, with_retries
from hpo.record import FINISHED, RUN_ATTR

ADMISSION_KEY = "hpo:admission"
LEASE_S = 30.0  # far longer than an admission takes (milliseconds), short enough to recover
_FIRST_WAIT_S, _LONGEST_WAIT_S = 0.001, 0.05

_TABLE = "study_system_attributes"
_INSERT = sqlalchemy.text(
    f"INSERT INTO {_TABLE} (study_id, key, value_json) VALUES (:study_id, :key, :value)"
)
# SQLite and PostgreSQL both take the upsert clause; a conflict then inserts nothing.
_INSERT_IF_FREE = sqlalchemy.text(f"{_INSERT.text} ON CONFLICT (study_id, key) DO NOTHING")
_READ = sqlalchemy.text(
    f"SELECT value_json FROM {_TABLE} WHERE study_id = :study_id AND key = :key"
)
_TAKE_OVER = sqlalchemy.text(
    f"UPDATE {_TABLE} SET value_json = :value "
    "WHERE study_id = :study_id AND key = :key AND value_json = :old"
)
_RELEASE = sqlalchemy.text(
    f"DELETE FROM {_TABLE} WHERE study_id = :study_id AND key = :key AND value_json = :value"
)
# PostgreSQL's queue for the row: the advisory lock (b"hpo", study id) of a transaction, which
# ends with it (also behind a pooler that hands out server connections per transaction).
_QUEUE_KEY = int.from_bytes(b"hpo", "big")
_JOIN_QUEUE = sqlalchemy.text("SELECT pg_advisory_xact_lock(:key, :study_id)")


class AdmissionLock:
    """The admission lock of one study, held through ``engine``'s database.

    Args:
        engine: The SQLAlchemy engine of the study's Optuna storage.
        study_id: The study's id in that storage.
        lease: Seconds after which a lock that was not released may be taken over.
    """

    def __init__(self, engine: Engine, study_id: int, lease: float = LEASE_S) -> None:
        if not lease > 0:
            raise ValueError(f"`lease > 0` must hold, but got ({lease=}).")
        self.engine = engine
        self.study_id = study_id
        self.lease = lease
        self._upsert = engine.dialect.name in ("sqlite", "postgresql")

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock while the block runs; wait for it first if another worker holds it."""
        queue = self._join_queue()
        try:
            value = self._acquire()
            try:
                yield
            finally:
                with_retries(lambda: self._release(value), "releasing the admission lock")
        finally:
            if queue is not None:
                self._leave_queue(queue)

    def _join_queue(self) -> Connection | None:
        """On PostgreSQL, a connection in a transaction that waited for the study's advisory
        lock and holds it; None elsewhere, and if the server is away (the row's own tries wait
        for it)."""
        if self.engine.dialect.name != "postgresql":
            return None
        con = None
        try:
            con = self.engine.connect()
            con.execute(_JOIN_QUEUE, {"key": _QUEUE_KEY, "study_id": self.study_id})
            return con
        except BaseException as e:
            if con is not None:
                con.close()
            if isinstance(e, Exception) and is_disconnect(e):
                return None
            raise

    def _leave_queue(self, con: Connection) -> None:
        """End the queue's transaction, and with it the advisory lock."""
        try:
            con.rollback()  # it wrote nothing
        except Exception as e:
            if not is_disconnect(e):
                raise
            # The connection is gone, and with it the advisory lock.
        finally:
            con.close()

    def places_taken(self, run_id: str) -> int:
        """The trials of the run ``run_id`` that count against its target: running or finished
        (a failed trial gives its place back: it is queued again), counted in the database."""
        from optuna.storages._rdb import models

        trial, attr = models.TrialModel, models.TrialSystemAttributeModel
        query = (
            sqlalchemy.select(sqlalchemy.func.count())
            .select_from(trial)
            .join(attr, attr.trial_id == trial.trial_id)
            .where(
                trial.study_id == self.study_id,
                trial.state.in_((*FINISHED, TrialState.RUNNING)),
                attr.key == RUN_ATTR,
                attr.value_json == json.dumps(run_id),  # as Optuna stores the attr's value
            )
        )

        def count() -> int:
            with self.engine.connect() as con:
                return int(con.execute(query).scalar())

        return with_retries(count, "counting the run's trials")

    def queued(self) -> bool:
        """Whether the study has a queued (WAITING) trial, such as a dead worker's, retried.

        One query: Optuna's look for one (``Study._pop_waiting_trial_id``) reads every unfinished
        trial of the study first, which grows with the workers.
        """
        from optuna.storages._rdb import models

        trial = models.TrialModel
        query = sqlalchemy.select(trial.trial_id).where(
            trial.study_id == self.study_id, trial.state == TrialState.WAITING
        )

        def look() -> bool:
            with self.engine.connect() as con:
                return con.execute(query.limit(1)).first() is not None

        return with_retries(look, "looking for a queued trial")

    def _release(self, value: str) -> None:
        with self.engine.begin() as con:
            con.execute(_RELEASE, self._row(value))

    def _row(self, value: str, **extra: str) -> dict[str, object]:
        return {"study_id": self.study_id, "key": ADMISSION_KEY, "value": value, **extra}

    def _acquire(self) -> str:
        wait = _FIRST_WAIT_S
        while True:
            value = json.dumps({"holder": uuid.uuid4().hex, "until": time.time() + self.lease})
            # A server that restarts is waited for (hpo/_server_storage.py); after an insert
            # whose answer was lost, the row found is this worker's own.
            if with_retries(functools.partial(self._try_to_take, value), "admission"):
                return value
            # Jittered, growing waits: workers that collide once do not collide again in step.
            time.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(2 * wait, _LONGEST_WAIT_S)

    def _try_to_take(self, value: str) -> bool:
        # The row is read first: one that another worker holds is waited for without a write,
        # where a write would queue for SQLite's one writer with every worker's trials.
        with self.engine.connect() as con:
            old = con.execute(_READ, self._row(value)).scalar()
        if old is None:
            return self._try_insert(value)
        if old == value:
            return True  # this worker's own insert, whose answer was lost
        return json.loads(old)["until"] <= time.time() and self._try_take_over(value)

    def _try_insert(self, value: str) -> bool:
        try:
            with self.engine.begin() as con:
                return (
                    con.execute(
                        _INSERT_IF_FREE if self._upsert else _INSERT, self._row(value)
                    ).rowcount
                    == 1
                )
        except sqlalchemy.exc.IntegrityError:
            return False  # back ends without the upsert clause: the row is there

    def _try_take_over(self, value: str) -> bool:
        """Take the lock from a holder whose lease ran out (it died holding it)."""
        with self.engine.begin() as con:
            old = con.execute(_READ, self._row(value)).scalar()
            if old == value:
                return True
            if old is None or json.loads(old)["until"] > time.time():
                return False
            # Compare and swap: of two workers that find the same expired lease, one wins.
            return con.execute(_TAKE_OVER, self._row(value, old=old)).rowcount == 1
