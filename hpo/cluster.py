"""A Dask cluster as the engine: a run's workers as tasks on an existing Dask distributed cluster.

``--cluster tcp://SCHEDULER:PORT`` submits ``--jobs`` tasks, each running :func:`hpo.runner.work`
(one BLAS thread, the admission through the database, exactly the run's trials) on whichever
Dask worker the scheduler picks; the command itself only waits and shows progress. Every Dask
worker process loads a data set once and keeps it for the tasks that follow
(:func:`hpo.runner.cached_split`); nothing but the run's small plan is shipped per task.

A Dask worker that dies mid-trial leaves its trial RUNNING: its heartbeat goes stale and a worker
of the run fails it and queues it again; the scheduler reruns the lost task elsewhere. A task
cannot be killed from outside its worker, so the run's tasks watch the run instead: the command
writes a beat into the study (study system attr ``hpo:alive:<run id>``) while it runs and ends it
when it stops, and a task whose run is gone (the beat stopped or ended) starts no further trial.

The study lives in a database every worker reaches: PostgreSQL, never an SQLite file.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna

from hpo.lifetime import every
from hpo.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, display_url, sqlite_path

logger = logging.getLogger(__name__)

ALIVE_PREFIX = "hpo:alive:"
CONNECT_TIMEOUT_S = 5


def check_cluster(address: str, storage_url: str) -> None:
    """Check that a run can use the cluster at ``address``, before anything is written.

    Raises:
        ValueError: If the storage is an SQLite file (other hosts cannot share it), Dask's
            distributed package is missing, or no scheduler answers at ``address``.
    """
    if sqlite_path(storage_url) is not None or storage_url.startswith("sqlite"):
        raise ValueError(
            f"--cluster runs the workers on other hosts, which cannot share the SQLite file of "
            f"{display_url(storage_url)}; use a PostgreSQL storage that every host reaches: "
            "--storage postgresql://user:password@host/db."
        )
    if importlib.util.find_spec("distributed") is None:
        raise ValueError("--cluster needs Dask's distributed package: pip install -e '.[cluster]'.")
    from distributed import Client

    try:
        with Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False) as client:
            workers = len(client.scheduler_info()["workers"])
    except (OSError, TimeoutError) as e:
        raise ValueError(f"--cluster: no Dask scheduler answers at {address}: {e}") from e
    if workers == 0:
        logger.warning("The cluster at %s has no workers yet; the run waits for them.", address)


def launch(address: str, n_tasks: int, task: Callable[[int], None]) -> None:
    """Run ``task(i)`` for i in 0 .. n_tasks - 1 on the cluster, and wait for all of them.

    Raises:
        WorkerDied: If the scheduler gave up on a task whose workers kept dying.
        What a task raised.
    """
    from distributed import Client, KilledWorker

    with Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False) as client:
        futures = [client.submit(task, i, pure=False) for i in range(n_tasks)]
        try:
            for future in futures:
                future.result()
        except KilledWorker as e:
            raise WorkerDied(str(e)) from e
        finally:
            client.cancel(futures)  # tasks not started yet; running ones watch the run's beat


class WorkerDied(RuntimeError):
    """A Dask worker died with a task of the run (the run fails its trial and goes on)."""


def _key(run_id: str) -> str:
    return ALIVE_PREFIX + run_id


@contextmanager
def run_beat(study: optuna.Study, run_id: str) -> Iterator[None]:
    """Beat for the run ``run_id`` in the study while the block runs, and end the beat after."""
    storage, study_id = study._storage, study._study_id

    def beat() -> None:
        storage.set_study_system_attr(study_id, _key(run_id), time.time())

    beat()
    try:
        with every(HEARTBEAT_INTERVAL_S, beat):
            yield
    finally:
        storage.set_study_system_attr(study_id, _key(run_id), 0.0)  # ended


def run_alive(study: optuna.Study, run_id: str) -> bool:
    """Whether the command of the run ``run_id`` still beats (a task's check before a trial)."""
    last = study._storage.get_study_system_attrs(study._study_id).get(_key(run_id), 0.0)
    return time.time() - last < GRACE_PERIOD_S
