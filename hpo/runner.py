"""Running a study in parallel worker processes, with exactly the requested number of trials.

Each worker is a process with one BLAS thread, its own sampler seed, its own pruner and the data
loaded once: this process is worker 0, the others are processes forked from it, or where it cannot
fork (a notebook's kernel, not Linux) joblib's loky processes (:mod:`hpo.workers`); with a Dask
cluster (:mod:`hpo.cluster`) every worker is a task there and this process only waits.

A run counts the trials its own workers finish. Each trial a worker asks for is tagged with the
run's id (system attr ``hpo:run``); before starting a trial, a worker fails trials whose worker
died (heartbeat), then, holding the study's admission lock (:mod:`hpo.admission`, kept in the
database), asks for a trial only while fewer than the run's ``n_trials`` of its own trials have
finished or are running. So every run ends with exactly its requested number of finished trials,
whatever other runs do on the same study, on this host or another. A dead worker's trial is
failed and queued again, and counts for the run that finishes it.

Workers end with their run: each one is killed by the kernel when the command dies
(``PR_SET_PDEATHSIG`` on Linux; elsewhere a thread watches the parent; a cluster's tasks watch
the run's beat), and the command treats SIGTERM and SIGHUP as Ctrl-C (:mod:`hpo.lifetime`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import threadpool_limits

from hpo import cluster, workers
from hpo.admission import AdmissionLock
from hpo.config import SearchConfig
from hpo.lifetime import every, interrupts_as_ctrl_c, interrupts_held
from hpo.objective import Objective, load_split
from hpo.record import RUN_ATTR, count_finished
from hpo.storage import HEARTBEAT_INTERVAL_S, opened_storage, quiet_storage_fallbacks
from hpo.study import make_pruner, make_sampler
from models.trainer import COMPILED_FROM_STEPS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What every worker of one run needs, in a picklable form."""

    config: dict
    storage_url: str
    study_name: str
    n_trials: int  # finished trials of its own the run adds
    deadline: float | None  # time.time() after which no trial starts
    data_dir: str | None
    run_id: str  # tags the trials this run's workers ask for (system attr RUN_ATTR)
    cluster: str | None = None  # a Dask scheduler's address: the workers are its tasks


def _ask_if_wanted(
    study: optuna.Study, plan: RunPlan, admission: AdmissionLock
) -> optuna.Trial | None:
    """A new (or queued) trial, unless the run's finished and running trials reach its target."""
    with warnings.catch_warnings():
        # fail_stale_trials is experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage = study._storage
    with admission.held():
        if admission.places_taken(plan.run_id) >= plan.n_trials:
            return None
        # Study.ask's first half: a queued trial (a dead worker's, retried) or a new one. Its
        # second half, reading the trial back as an optuna.Trial, needs no lock: done below.
        trial_id = study._pop_waiting_trial_id() if admission.queued() else None
        if trial_id is None:
            trial_id = storage.create_new_trial(study._study_id)
        # Beat at once: a trial that never beat is never found stale, so a worker killed
        # before its heartbeat thread's first beat would leave the trial RUNNING for ever.
        storage.record_heartbeat(trial_id)
        # The tag is written under the lock, so that the next admission counts this trial.
        storage.set_trial_system_attr(trial_id, RUN_ATTR, plan.run_id)
    study._thread_local.cached_all_trials = None  # as Study.ask: samplers read the trials anew
    return optuna.Trial(study, trial_id)


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> None:
    """Run one trial as ``study.optimize`` would: heartbeat, objective, tell."""
    state, value = TrialState.FAIL, None  # unless the objective ends normally or prunes
    try:
        # The first beat was recorded when the trial was asked for; the next one is due later.
        with every(HEARTBEAT_INTERVAL_S, lambda: study._storage.record_heartbeat(trial._trial_id)):
            result = objective(trial)
        state, value = TrialState.COMPLETE, result
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    finally:
        # Interrupted, broken or done, the trial never stays RUNNING: not even when Ctrl-C
        # comes while it is being told.
        with interrupts_held() as interrupted:
            study.tell(trial, value, state=state)
        if interrupted:
            raise KeyboardInterrupt


_SPLITS: dict[tuple, object] = {}


def cached_split(config: SearchConfig, data_dir: str | None):
    """The run's data split, loaded once per process and kept for the runs that follow (a Dask
    worker process runs many tasks; a command, several rounds)."""
    key = (config.dataset, config.train_size, config.val_rate, config.seed, config.dtype, data_dir)
    if key not in _SPLITS:
        _SPLITS.clear()  # one data set at a time: a full-size one is large
        _SPLITS[key] = load_split(config, data_dir)
    return _SPLITS[key]


def work(
    plan: RunPlan,
    worker: int,
    stop: threading.Event | workers.ForkedWorkers | workers.LokyWorkers | None = None,
) -> None:
    """One worker: run trials until the run's own finished and running trials reach its target.

    ``stop``, when set, ends the loop before the next trial (another worker of the run failed).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_storage_fallbacks()
    config = SearchConfig.from_dict(plan.config)
    # One BLAS thread per process: two OpenBLAS threads make these small products much slower.
    with threadpool_limits(limits=1), opened_storage(plan.storage_url, in_run=True) as storage:
        split = cached_split(config, plan.data_dir)
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
        # A seed per worker and per run, so that workers and resumed runs never repeat points.
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(
            config.sampler, config.seed * 100_003 + n_existing * 97 + worker
        )
        study.pruner = make_pruner(config.pruner, config.epochs)
        objective = Objective(config, split)
        admission = AdmissionLock(storage.engine, study._study_id)
        while plan.deadline is None or time.time() < plan.deadline:
            if stop is not None and stop.is_set():
                return
            if plan.cluster is not None and not cluster.run_alive(study, plan.run_id):
                return  # the command is gone: a task on a cluster cannot be killed from outside
            with interrupts_held() as interrupted:
                trial = _ask_if_wanted(study, plan, admission)
            if interrupted:
                if trial is not None:
                    study.tell(trial, state=TrialState.FAIL)
                raise KeyboardInterrupt
            if trial is None:
                return
            _run_trial(study, trial, objective)


def run_study(
    study: optuna.Study,
    config: SearchConfig,
    storage_url: str,
    *,
    n_trials: int,
    n_jobs: int = 1,
    timeout: float | None = None,
    data_dir: str | None = None,
    on_poll: Callable[[list[FrozenTrial]], None] | None = None,
    run_id: str | None = None,
    cluster_address: str | None = None,
) -> int:
    """Add ``n_trials`` finished (complete or pruned) trials of this run's own to ``study``.

    Other runs may work on the study at the same time, on this host or another: each counts
    only the trials its own workers finish.

    Args:
        study: The study, already created in ``storage_url``.
        config: Its configuration.
        storage_url: Where workers open the study.
        n_trials: Finished trials to add, across all workers.
        n_jobs: Worker processes; 1 runs in this process.
        timeout: Seconds after which no new trial starts.
        data_dir: Where data sets are looked for.
        on_poll: Called from a thread about twice a second with the study's trials, for progress.
        run_id: The tag of this run's trials (see :func:`count_finished`); default: a new one.
        cluster_address: A Dask scheduler: the ``n_jobs`` workers run as tasks on its cluster
            (:mod:`hpo.cluster`), none in this process.

    Returns:
        The finished trials the run added: ``n_trials``, unless the timeout came first.

    Raises:
        RuntimeError: If the workers stop making progress (e.g. every trial keeps failing).
        StorageFailure: If the storage fails (disk full, server gone), once this run's running
            trials are failed where the storage still takes writes.
        KeyboardInterrupt: On Ctrl-C, SIGTERM or SIGHUP, once this run's running trials are
            failed.
    """
    plan = RunPlan(
        config=config.to_dict(),
        storage_url=storage_url,
        study_name=study.study_name,
        n_trials=n_trials,
        deadline=None if timeout is None else time.time() + timeout,
        data_dir=data_dir,
        run_id=run_id or uuid.uuid4().hex,
        cluster=cluster_address,
    )
    beat = cluster.run_beat(study, plan.run_id) if cluster_address else contextlib.nullcontext()
    with _poller(study, on_poll), interrupts_as_ctrl_c(), beat:
        try:
            _run_rounds(study, plan, n_jobs)
        except KeyboardInterrupt:
            _end_orphans(study, plan.run_id, retry=False)
            raise
        except STORAGE_ERRORS as e:
            try:
                _end_orphans(study, plan.run_id, retry=False)
            except STORAGE_ERRORS:
                # It takes no writes: the next run's heartbeat check fails those trials.
                logger.debug("Could not fail this run's running trials.", exc_info=True)
            try:
                finished = count_finished(study.get_trials(deepcopy=False), plan.run_id)
            except STORAGE_ERRORS:
                finished = None  # it cannot be read either
            raise StorageFailure(storage_reason(e), finished) from e
    return count_finished(study.get_trials(deepcopy=False), plan.run_id)


class StorageFailure(RuntimeError):
    """The storage failed in the middle of a run (disk full, server gone); finished trials are
    kept, and the run can be continued once the cause is gone.

    Args:
        reason: The database's words, on one line.
        finished: The trials the run had finished, or None if the storage could not tell.
    """

    def __init__(self, reason: str, finished: int | None) -> None:
        super().__init__(reason)
        self.finished = finished


# What a storage that stops working raises: SQLAlchemy's errors, Optuna's wrapper of them, and
# sqlite3's own from the plain-SQL path (hpo/_sqlite_writes.py).
STORAGE_ERRORS = (
    sqlalchemy.exc.SQLAlchemyError,
    optuna.exceptions.StorageInternalError,
    sqlite3.DatabaseError,
)


def storage_reason(error: BaseException) -> str:
    """The database's own words for ``error``, on one line."""
    while error.__cause__ is not None and isinstance(error, optuna.exceptions.StorageInternalError):
        error = error.__cause__
    text = str(getattr(error, "orig", None) or error)
    # A worker process's error arrives with its traceback appended in triple quotes.
    lines = [line.strip() for line in text.splitlines() if line.strip() not in ("", '"""')]
    return lines[0] if lines else type(error).__name__


def _run_rounds(study: optuna.Study, plan: RunPlan, n_jobs: int) -> None:
    """Launch workers until the run has its trials; a dead worker's trial is retried."""
    rounds_without_progress = 0
    while True:
        finished_before = count_finished(study.get_trials(deepcopy=False), plan.run_id)
        try:
            _launch(plan, n_jobs)
        except (workers.WorkerDied, cluster.WorkerDied):
            logger.warning("A worker process died; its trial is failed and retried.")
        _end_orphans(study, plan.run_id, retry=True)
        finished = count_finished(study.get_trials(deepcopy=False), plan.run_id)
        if finished >= plan.n_trials or (
            plan.deadline is not None and time.time() >= plan.deadline
        ):
            return
        rounds_without_progress = 0 if finished > finished_before else rounds_without_progress + 1
        if rounds_without_progress > 3:
            raise RuntimeError(
                f"Workers stopped at {finished} of {plan.n_trials} finished trials: every "
                "worker died before its trial finished, four times in a row."
            )


def _end_orphans(study: optuna.Study, run_id: str, *, retry: bool) -> None:
    """Fail the trials this run's workers left RUNNING, once all of those workers are gone.

    A worker killed mid-trial (or stopped by an interrupt before it could tell) leaves its trial
    RUNNING. Its heartbeat would go stale within the grace period; the run knows sooner. With
    ``retry``, each is queued again as a stale trial is (``RetryHeartbeatStaleTrialCallback``).
    """
    storage = study._storage
    retried = storage.get_heartbeat_stale_trial_callback() if retry else None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.system_attrs.get(RUN_ATTR) != run_id:
            continue  # another run's
        try:
            failed = storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            failed = False  # found stale and failed by another worker meanwhile
        if failed and retried is not None:
            retried(study, copy.deepcopy(storage.get_trial(trial._trial_id)))


@contextmanager
def workers_started(n_jobs: int) -> Iterator[None]:
    """Start the worker processes of a coming run now, while this process prepares the run.

    A worker takes about a second to start (interpreter, imports). Started here, before the
    input is checked, it is about ready when this process starts its first trial, and
    ``run_study`` uses it. No worker outlives the block, whether a run used them or not.
    """
    if n_jobs <= 1 or workers.can_fork():
        yield  # forked workers start in milliseconds, when the run starts
        return
    executor = workers.executor(n_jobs - 1)
    for _ in range(n_jobs - 1):
        executor.submit(_get_ready)
    try:
        yield
    finally:
        executor.shutdown(wait=True, kill_workers=True)


def _get_ready() -> None:
    """Nothing: a worker given this imports this module, and with it all that trials need."""


def _launch(plan: RunPlan, n_jobs: int) -> None:
    """Run ``n_jobs`` workers: this process is worker 0, the others are processes of their own
    (:mod:`hpo.workers`), forked after this process has loaded the data, so that they share it.
    """
    if plan.cluster is not None:
        cluster.launch(plan.cluster, n_jobs, functools.partial(work, plan))
        return
    if n_jobs == 1:
        work(plan, 0)
        return
    config = SearchConfig.from_dict(plan.config)
    split = cached_split(config, plan.data_dir)
    _load_compiled(config, len(split.x_train))
    # The same loky executor as workers_started', if the run is in its block and cannot fork.
    others = workers.started(functools.partial(work, plan), range(1, n_jobs))
    try:
        # A worker that fails (its storage gone, say) stops this process's loop too, after its
        # trial.
        work(plan, 0, stop=others)
        others.wait()  # raises what a worker raised
    except BaseException:
        # Ctrl-C in a terminal reaches every worker: let them fail their own trials first.
        others.join(HEARTBEAT_INTERVAL_S)
        raise
    finally:
        others.kill()  # the caller fails the trials a killed one held


def _load_compiled(config: SearchConfig, n_train: int) -> None:
    """Before workers are forked: the compiled loops that trials this long train in
    (``models.Trainer``'s ``compiled``), loaded once here and shared by the workers."""
    if config.epochs * -(-n_train // config.batch_size) < COMPILED_FROM_STEPS:
        return
    try:
        from models import fused
    except ImportError:
        return  # the trials train in NumPy; models.trainer says why
    fused.load(config.dtype)


@contextmanager
def _poller(study: optuna.Study, on_poll: Callable[[list[FrozenTrial]], None] | None):
    """Call ``on_poll`` with the study's trials from a thread until the block ends."""
    if on_poll is None:
        yield
        return
    on_poll(study.get_trials(deepcopy=False))
    try:
        with every(0.5, lambda: on_poll(study.get_trials(deepcopy=False))):
            yield
    finally:
        on_poll(study.get_trials(deepcopy=False))
