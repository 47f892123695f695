"""Optuna's RDB storage on a database server (PostgreSQL), made to outlast a server restart.

A restart drops every connection for a few seconds. ``pool_pre_ping`` replaces a dropped pooled
connection before it is used; a call that fails because the server is away is tried again after
growing waits (``RETRY_WAITS_S``, 15.5 s in all), and only then does the error reach the run,
which stops (:class:`hpo.runner.StorageFailure`).

Tried again: every read, and every write that means the same when done twice (attrs,
intermediate values, parameters, heartbeats, a trial's end). Creating a trial is tried again only
after looking for the trial a lost answer may have hidden (it is taken, not made twice); creating
a study is never tried again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
_LAST_TRIAL = sqlalchemy.text("SELECT MAX(trial_id) FROM trials WHERE study_id = :study_id")

# What the server, the driver or SQLAlchemy say when the connection is gone or cannot be made.
_DISCONNECT_SIGNS = (
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "could not connect",
    "connection to server",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "ssl connection has been closed",
    "connection already closed",
    "connection is closed",
    # A connection that went away inside a transaction, until its session is rolled back
    # (Optuna's session scope does that before it raises): the next try reconnects.
    "can't reconnect until invalid transaction is rolled back",
)

T = TypeVar("T")


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` means the database server was out of reach (worth another try)."""
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(
        error, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
    ):
        return False
    text = f"{getattr(error, 'orig', None) or error} {error.__cause__ or ''}".lower()
    return any(sign in text for sign in _DISCONNECT_SIGNS)


def with_retries(call: Callable[[], T], what: str) -> T:
    """``call()``, tried again after each wait of ``RETRY_WAITS_S`` while the server is away.

    Once a call has used up its waits, the next ones in this process fail at once, until one
    succeeds: a run whose server is gone stops in seconds, not a wait per call.
    """
    global _given_up
    for wait in (*RETRY_WAITS_S, None):
        try:
            result = call()
        except Exception as e:
            if not is_disconnect(e):
                raise
            if wait is None or _given_up:
                _given_up = True
                raise
            logger.debug(
                "The database server is out of reach (%s); trying again in %g s.", what, wait
            )
        else:
            _given_up = False
            return result
        time.sleep(wait)
    raise AssertionError("unreachable")


_given_up = False  # the server stayed away through a call's waits, and no call worked since


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args: Any, **kwargs: Any) -> Any:
        return with_retries(lambda: method(self, *args, **kwargs), name)

    return call


class ServerStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose calls outlast a restart of the database server."""

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # A new trial's commit may go through with its answer lost. hpo creates trials only
        # under the study's admission lock (hpo/admission.py), so a RUNNING trial with nothing
        # in it that appeared since this call began is the one it made: taken, not made twice.
        last = with_retries(lambda: self._last_trial_id(study_id), "reading the last trial")
        try:
            return super()._create_new_trial(study_id, template_trial)
        except Exception as e:
            if template_trial is not None or not is_disconnect(e):
                raise
        return with_retries(lambda: self._made_or_new(study_id, last), "creating a trial")

    def _last_trial_id(self, study_id: int) -> int:
        with self.engine.connect() as con:
            found = con.execute(_LAST_TRIAL, {"study_id": study_id}).scalar()
        return -1 if found is None else found

    def _made_or_new(self, study_id: int, last: int) -> FrozenTrial:
        since = super()._get_trials(study_id, (TrialState.RUNNING,), set(), last)
        made = [t for t in since if not (t.params or t.user_attrs or t.system_attrs)]
        if made:
            return made[-1]
        return super()._create_new_trial(study_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = 0

        def end() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return super(ServerStorage, self).set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A first attempt whose commit went through before its answer was lost.
                if attempts > 1 and super(ServerStorage, self).get_trial(trial_id).state == state:
                    return True
                raise

        return with_retries(end, "set_trial_state_values")


for _name in (
    "get_all_studies",
    "get_best_trial",
    "get_study_directions",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_system_attrs",
    "get_study_user_attrs",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_param",
    "get_trial_system_attrs",
    "get_trial_user_attrs",
    "record_heartbeat",
    "set_study_system_attr",
    "set_study_user_attr",
    "set_trial_intermediate_value",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "_get_stale_trial_ids",
    "_get_trials",  # what get_all_trials and the cached storage's reads call
    "_set_trial_param",  # what set_trial_param and a trial's suggestions call
):
    setattr(ServerStorage, _name, _retried(_name))
