"""A Dask cluster as the engine: a real scheduler and two worker processes on 127.0.0.1, against
the PostgreSQL test server. The run adds exactly its trials, its tasks load the data once per
worker process, a killed worker's trial is failed and retried, and an SQLite storage is refused.
The cluster and the server stop when the module ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from hpo import search
from hpo.record import FINISHED, RUN_ATTR

from .pg import free_port
from .test_postgres import TINY

distributed = pytest.importorskip("distributed", reason="Dask is missing: pip install -e .[dev]")


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    ) as local:
        with distributed.Client(local) as client:
            pids = list(client.run(os.getpid).values()) + [client.run_on_scheduler(os.getpid)]
        yield local
    # The scheduler runs in this process (LocalCluster); its worker processes end with it.
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids[:-1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids[:-1]), "a Dask worker outlived the cluster"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def finished_by_run(url: str, name: str) -> Counter:
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.system_attrs.get(RUN_ATTR) for t in study.trials if t.state in FINISHED)


def test_a_run_on_the_cluster_adds_exactly_its_trials_and_loads_the_data_once_per_worker(
    server,
    cluster,
):
    url = server.url()
    args = ["--storage", url, "--study", "dask", "--cluster", cluster.scheduler_address, "-q"]

    assert search.main([*args, *TINY, "--trials", "6", "--jobs", "2"]) == 0
    assert search.main([*args, "--trials", "3", "--jobs", "3"]) == 0

    assert sorted(finished_by_run(url, "dask").values()) == [3, 6]
    with distributed.Client(cluster) as client:
        # Every worker process that ran a task keeps one data set for the next tasks.
        kept = client.run(lambda: len(__import__("hpo.runner").runner._SPLITS))
    assert set(kept.values()) <= {0, 1} and sum(kept.values()) >= 1


def test_a_killed_dask_workers_trial_is_failed_and_retried_and_the_count_stays_exact(
    server,
    cluster,
):
    url = server.url()
    # About 0.8 s per trial, so that the kill lands in one: with 0.15 s trials, a worker
    # had sometimes run its share and ended before the kill, and no trial failed.
    slow = ["--train-size", "300", "--epochs", "400", "--hidden", "50", "50", "--pruner", "none"]
    command = [sys.executable, "-m", "hpo.search", "--storage", url, "--study", "killed", "-q"]
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
    proc = subprocess.Popen(
        [*command, "--cluster", cluster.scheduler_address, "--jobs", "2", "--trials", "8", *slow],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name="killed", storage=url)
            if sum(t.state == TrialState.RUNNING for t in study.trials) >= 2:
                break
        except KeyError:
            pass  # not created yet
        time.sleep(0.2)
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # the nanny starts a new worker

    _, err = proc.communicate(timeout=300)

    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="killed", storage=url).trials
    counts = Counter(t.state for t in trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 8
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.FAIL] >= 1
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert retried  # queued again, as a stale trial is


def test_a_cluster_with_an_sqlite_storage_is_refused_naming_postgresql(tmp_path, capsys, cluster):
    url = f"sqlite:///{tmp_path / 's.db'}"

    code = search.main(["--storage", url, "--cluster", cluster.scheduler_address, *TINY, "-q"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "postgresql://" in err and "cannot share the SQLite" in err
    assert list(tmp_path.iterdir()) == []


def test_a_cluster_that_does_not_answer_is_refused_in_one_line(server, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"
    code = search.main(["--storage", server.url(), "--study", "none", "--cluster", address, "-q"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no Dask scheduler answers at {address}" in err
