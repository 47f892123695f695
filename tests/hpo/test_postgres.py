"""python -m hpo.search on a real PostgreSQL server: what a parallel run stores, resume,
best_params, commands on several hosts, and storages that cannot be opened. The server is the
session's throwaway one (tests/hpo/pg.py), on 127.0.0.1 only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo import best_params, search
from hpo._server_storage import is_disconnect
from hpo.admission import AdmissionLock
from hpo.config import SearchConfig
from hpo.record import FINISHED, RUN_ATTR
from hpo.results import best_trial
from hpo.storage import GRACE_PERIOD_S, open_storage

from .pg import PASSWORD, Server, free_port

# The driver of postgresql:// URLs: psycopg2 under SQLAlchemy 2.0, psycopg (3) from 2.1 on.
DRIVER = sqlalchemy.engine.make_url("postgresql://").get_driver_name()
pytest.importorskip(
    DRIVER, reason=f"the PostgreSQL driver {DRIVER} is missing: pip install -e .[dev]"
)

TINY = ["--train-size", "100", "--epochs", "3", "--hidden", "20", "20", "--jobs", "1"]


def states(url: str, name: str) -> Counter:
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def finished(counts: Counter) -> int:
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]


@pytest.fixture(scope="module")
def parallel(server: Server) -> str:
    """The URL of a study ``default`` made by two workers with six trials."""
    url = server.url()
    assert search.main(["--storage", url, *TINY, "--trials", "6", "--jobs", "2", "-q"]) == 0
    return url


def test_two_workers_store_exactly_six_finished_trials_with_their_curves(parallel):
    study = optuna.load_study(study_name="default", storage=parallel)
    trials = study.get_trials(deepcopy=False)

    counts = Counter(t.state for t in trials)
    assert finished(counts) == 6 and counts[TrialState.COMPLETE] >= 1
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.train_size, config.epochs, config.hidden) == (100, 3, [20, 20])
    storage = optuna.storages.RDBStorage(parallel)
    note = storage.get_study_system_attrs(storage.get_study_id_from_name("default"))
    storage.engine.dispose()
    assert note["dashboard:note_str:0"].startswith("## default\n")  # optuna-dashboard's note
    for t in trials:
        assert set(t.params) == {"lr", "weight_decay"}
        epochs = t.user_attrs["epochs"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert len(t.user_attrs["train_acc"]) == len(t.user_attrs["val_loss"]) == epochs
        if t.state == TrialState.COMPLETE:
            assert t.value == t.intermediate_values[3]
    assert len({t.params["lr"] for t in trials}) == 6


def test_best_params_agree_with_optunas_best_trial(parallel):
    expected = optuna.load_study(study_name="default", storage=parallel).best_trial.params

    assert best_params(parallel, "default") == expected


def test_the_best_trial_is_read_through_a_server_restart(server):
    storage = open_storage(server.url(), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="best-restart", direction="maximize")
    for value in (0.2, 0.9, 0.5):
        study.add_trial(optuna.trial.create_trial(value=value))
    server.stop()
    back = threading.Timer(1.0, server.start)  # a restart: away for a second, then back
    back.start()
    try:
        best = best_trial(study)  # the first read after the server went away
    finally:
        back.join()
        storage.engine.dispose()

    assert best is not None and best.value == 0.9


def test_a_workers_storage_opens_through_a_server_restart(server):
    server.stop()
    back = threading.Timer(1.0, server.start)  # a restart: away for a second, then back
    back.start()
    try:
        with pytest.raises(ValueError, match="Cannot open storage"):
            open_storage(server.url())  # a command's own check: refused at once
        storage = open_storage(server.url(), in_run=True)  # a worker's: waits for the server
    finally:
        back.join()
    try:
        assert optuna.get_all_study_names(storage) is not None
    finally:
        storage.engine.dispose()


def test_a_connection_lost_inside_a_transaction_is_a_disconnect_worth_another_try():
    lost = sqlalchemy.exc.PendingRollbackError(
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully "
        "before proceeding"
    )
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = lost
    assert is_disconnect(lost) and is_disconnect(wrapped)
    assert not is_disconnect(sqlalchemy.exc.PendingRollbackError("some other pending rollback"))


@pytest.fixture
def two_locks(server):
    """Two workers' admission locks on one new study of the session's server."""
    storage = open_storage(server.url(), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name=f"queue-{time.time_ns()}")
    yield [AdmissionLock(storage.engine, study._study_id) for _ in range(2)]
    storage.engine.dispose()


def count_of(server: Server, query: str) -> int:
    engine = sqlalchemy.create_engine(server.url(database="postgres"))
    try:
        with engine.connect() as con:
            return con.exec_driver_sql(query).scalar()
    finally:
        engine.dispose()


def advisory_waiters(server: Server) -> int:
    return count_of(server, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")


def advisory_holders(server: Server) -> int:
    return count_of(server, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")


def test_a_waiting_worker_queues_in_the_server_and_tries_the_lock_row_once(server, two_locks):
    first, second = two_locks
    tries: list[str] = []
    take = second._try_to_take
    second._try_to_take = lambda value: tries.append(value) or take(value)
    events: list[str] = []

    def take_second() -> None:
        with second.held():
            events.append("second holds")

    thread = threading.Thread(target=take_second)
    with first.held():
        thread.start()
        deadline = time.monotonic() + 10
        while advisory_waiters(server) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert advisory_waiters(server) == 1  # waiting in the server, not trying the row
        events.append("first releases")
    thread.join(timeout=10)

    assert events == ["first releases", "second holds"]
    assert len(tries) == 1


def test_a_lock_whose_queue_connection_the_server_dropped_is_released_without_error(
    server, two_locks
):
    first, second = two_locks
    with first.held():
        assert advisory_holders(server) == 1
        server.execute(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'",
        )
        assert advisory_holders(server) == 0
    with second.held():
        pass  # the row was released, the advisory lock ended with its connection


def test_a_rerun_resumes_the_study_and_adds_exactly_the_requested_trials(server):
    url = server.url()
    args = ["--storage", url, "--study", "resumed", "-q"]
    assert search.main([*args, *TINY, "--trials", "3", "--seed", "7"]) == 0
    assert search.main([*args, "--trials", "2", "--jobs", "2"]) == 0

    counts = states(url, "resumed")
    assert finished(counts) == 5
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    study = optuna.load_study(study_name="resumed", storage=url)
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.seed, config.epochs, config.train_size) == (7, 3, 100)


@pytest.mark.parametrize(
    ("user", "database", "port", "mentions"),
    [
        (f"hpo:wrong-{PASSWORD}", "hpo", None, "password authentication failed"),
        (f"hpo:{PASSWORD}", "nosuchdb", None, 'database "nosuchdb" does not exist'),
        (f"hpo:{PASSWORD}", "hpo", "free", "Connection refused"),
    ],
    ids=["wrong password", "unknown database", "nothing listens"],
)
def test_a_server_that_refuses_exits_2_with_one_line_and_no_password(
    server, capsys, user, database, port, mentions
):
    port = free_port() if port == "free" else server.port
    url = f"postgresql://{user}@127.0.0.1:{port}/{database}"

    assert search.main(["--storage", url, *TINY, "--trials", "1", "-q"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert mentions in err
    assert f"postgresql://hpo:***@127.0.0.1:{port}/{database}" in err
    assert PASSWORD not in err


def test_a_missing_driver_is_named_with_the_extra_that_installs_it(monkeypatch, capsys):
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails

    code = search.main(["--storage", f"postgresql://hpo:{PASSWORD}@127.0.0.1:1/hpo", "-q"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and PASSWORD not in err
    assert f"driver '{DRIVER}'" in err and "pip install -e '.[postgresql]'" in err


@pytest.mark.parametrize(
    ("tables", "args", "mentions"),
    [
        (["CREATE TABLE songs (title text)"], ["--trials", "1"], "not an Optuna storage"),
        ([], ["--trials", "1", "--lr", "1e-2", "1e-6"], "--lr"),
    ],
    ids=["a database of something else", "bad input on an empty database"],
)
def test_a_refused_run_creates_no_table(server, capsys, tables, args, mentions):
    server.execute("postgres", "DROP DATABASE IF EXISTS other", "CREATE DATABASE other")
    server.execute("other", *tables)
    before = server.tables("other")

    assert search.main(["--storage", server.url(database="other"), *TINY, "-q", *args]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and mentions in err
    assert server.tables("other") == before


def test_best_params_of_an_empty_database_is_an_error_that_creates_no_table(server):
    server.execute("postgres", "DROP DATABASE IF EXISTS empty", "CREATE DATABASE empty")

    with pytest.raises(ValueError, match="holds no studies"):
        best_params(server.url(database="empty"), "default")
    assert server.tables("empty") == set()


# Commands on separate hosts: separate processes, each with a TMPDIR and HOME of its own, so
# that nothing but the database can coordinate them.


def host_env(tmp_path: Path, host: str) -> dict[str, str]:
    home = tmp_path / host
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp")}


def start_host(
    tmp_path: Path, host: str, url: str, *args: str, experiment: Sequence[str] = TINY
) -> subprocess.Popen:
    """``python -m hpo.search`` as a host of its own, in a process group of its own."""
    command = [sys.executable, "-m", "hpo.search", "--storage", url, "-q", *experiment, *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=host_env(tmp_path, host),
        start_new_session=True,
    )


def wait_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def finished_by_run(url: str, name: str) -> list[int]:
    study = optuna.load_study(study_name=name, storage=url)
    runs = Counter(t.system_attrs.get(RUN_ATTR) for t in study.trials if t.state in FINISHED)
    return sorted(runs.values())


def test_commands_on_two_hosts_on_one_study_each_add_exactly_their_trials(server, tmp_path):
    url = server.url()
    wait_all([start_host(tmp_path, "first", url, "--study", "hosts", "--trials", "2")])

    wait_all(
        [
            start_host(tmp_path, host, url, "--study", "hosts", "--trials", "7", "--jobs", "2")
            for host in ("a", "b")
        ]
    )

    assert finished_by_run(url, "hosts") == [2, 7, 7]
    counts = states(url, "hosts")
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0


@pytest.mark.parametrize("where", ["a new database", "a new study"])
def test_commands_started_at_once_on_a_server_all_work(server, tmp_path, where):
    database = "fresh" if where == "a new database" else "hpo"
    if where == "a new database":
        server.execute("postgres", "DROP DATABASE IF EXISTS fresh", "CREATE DATABASE fresh")
    url = server.url(database=database)

    wait_all(
        [
            start_host(tmp_path, f"host{i}", url, "--study", "raced", "--trials", "2")
            for i in range(3)
        ]
    )

    assert finished_by_run(url, "raced") == [2, 2, 2]


SLOWER = ["--train-size", "300", "--epochs", "30", "--hidden", "50", "50", "--pruner", "none"]


def test_a_killed_hosts_trials_are_failed_and_retried_and_every_count_stays_exact(server, tmp_path):
    url = server.url()
    study = ["--study", "kill", "--jobs", "2"]
    wait_all([start_host(tmp_path, "first", url, *study, "--trials", "1", experiment=SLOWER)])
    killed = start_host(tmp_path, "a", url, *study, "--trials", "40", experiment=())
    other = start_host(tmp_path, "b", url, *study, "--trials", "6", experiment=())
    deadline = time.monotonic() + 120
    while states(url, "kill")[TrialState.RUNNING] < 4 and time.monotonic() < deadline:
        time.sleep(0.2)

    os.killpg(killed.pid, signal.SIGKILL)  # the host and all its processes, mid-trial
    killed.communicate(timeout=30)
    wait_all([other])
    # Its trials' heartbeats go stale after the grace period; the next run fails and retries them.
    time.sleep(GRACE_PERIOD_S + 1)
    wait_all([start_host(tmp_path, "c", url, *study, "--trials", "2", experiment=())])

    runs = finished_by_run(url, "kill")
    assert runs[:1] == [1] and 6 in runs and runs[-1] != 40 and 2 in runs
    counts = states(url, "kill")
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.FAIL] >= 1
    seen = {
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from hpo import best_params; print(best_params({url!r}, 'kill'))",
            ],
            capture_output=True,
            text=True,
            env=host_env(tmp_path, host),
            check=True,
        ).stdout
        for host in ("b", "c")
    }
    assert len(seen) == 1 and "lr" in seen.pop()
