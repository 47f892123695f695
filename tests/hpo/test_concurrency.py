"""Runs that share a study: each command adds exactly its ``--trials``, whatever else runs on the
study; commands started at once on a fresh file or a new study all work; workers end with their
command however it ends; SIGTERM and SIGHUP stop a run as Ctrl-C does. Real processes, real
SQLite files (PostgreSQL: tests/hpo/test_postgres.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo import progress, search
from hpo.admission import ADMISSION_KEY, AdmissionLock
from hpo.record import RUN_ATTR
from hpo.runner import RunPlan, _ask_if_wanted
from hpo.storage import GRACE_PERIOD_S, open_storage

from .test_search import SLOW, TINY, load, start_search, states, wait_for_running_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def search_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.search", "--storage", url, "-q", *TINY, *args]


def start_all(commands: list[list[str]], env: dict[str, str] | None = None) -> list[str]:
    """Start every command at once, wait for all; their stderr, after asserting exit 0."""
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for c in commands
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    return [err for _, err in outputs]


def finished_by_run(url: str, name: str = "default") -> Counter:
    """Finished trials per run tag."""
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.system_attrs.get(RUN_ATTR) for t in study.trials if t.state in FINISHED)


def system_attrs(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not group_alive(pgid)


def test_two_commands_at_once_on_one_study_each_add_exactly_their_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    start_all([search_command(url, "--trials", "2")])

    start_all([search_command(url, "--trials", "8", "--jobs", "2") for _ in range(2)])

    counts = states(load(tmp_path / "s.db"))
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 2 + 8 + 8
    assert sorted(finished_by_run(url).values()) == [2, 8, 8]
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0


@pytest.mark.parametrize("where", ["a fresh file", "a new study"])
def test_commands_started_at_once_all_work_one_creates_the_others_load(tmp_path, where):
    url = f"sqlite:///{tmp_path / 's.db'}"
    if where == "a new study":
        start_all([search_command(url, "--trials", "1", "--study", "old")])

    errors = start_all([search_command(url, "--trials", "2", "--study", "new") for _ in range(4)])

    assert all(e == "" for e in errors)
    assert sorted(finished_by_run(url, "new").values()) == [2, 2, 2, 2]
    study = optuna.load_study(study_name="new", storage=url)
    assert study.user_attrs["config"]["epochs"] == 3


def test_the_admission_leaves_no_lock_file_in_the_temp_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    url = f"sqlite:///{tmp_path / 's.db'}"

    start_all(
        [search_command(url, "--trials", "3", "--jobs", "2")],
        env={**os.environ, "TMPDIR": str(tmp)},
    )

    assert list(tmp.iterdir()) == []
    study = optuna.load_study(study_name="default", storage=url)
    assert ADMISSION_KEY not in system_attrs(study)  # released


def test_a_killed_command_takes_its_workers_along_and_the_next_run_fails_their_trials(tmp_path):
    db = tmp_path / "s.db"
    proc = start_search(db, "--trials", "20", "--jobs", "2", *SLOW)
    wait_for_running_trial(db, count=2)  # the worker process has a trial too

    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.communicate(timeout=30)

    # start_new_session: the command's process group holds its workers and loky's helpers.
    assert wait_until_gone(proc.pid, timeout=10), "a process of the killed command is alive"
    assert states(load(db))[TrialState.RUNNING] == 2
    # The dead trials' heartbeats go stale after the grace period; the next run fails them.
    time.sleep(max(0.0, killed + GRACE_PERIOD_S + 1 - time.monotonic()))
    rerun = start_search(db, "--trials", "1")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    counts = states(load(db))
    assert counts[TrialState.RUNNING] == 0
    assert counts[TrialState.FAIL] == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(tmp_path, signum):
    db = tmp_path / "s.db"
    proc = start_search(db, "--trials", "20", "--jobs", "2", *SLOW)
    wait_for_running_trial(db, count=2)

    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    assert err.startswith("Interrupted after ") and "Traceback" not in err
    assert wait_until_gone(proc.pid, timeout=10)
    counts = states(load(db))
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    assert counts[TrialState.FAIL] >= 1


def test_after_an_interrupt_the_printed_command_adds_exactly_the_rest(tmp_path):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        search_command(
            url, "--trials", "40", "--train-size", "300", "--epochs", "60", "--pruner", "none"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_running_trial(db)
    deadline = time.monotonic() + 60
    while sum(states(load(db))[s] for s in FINISHED) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err

    match = re.fullmatch(
        r"Interrupted after (\d+) of 40 trials; .* To add the remaining (\d+): (.*)\n", err
    )
    assert match, err
    done, remaining, command = int(match[1]), int(match[2]), shlex.split(match[3])
    assert 3 <= done < 40 and done + remaining == 40
    assert command[:3] == ["python", "-m", "hpo.search"] and "--trials" in command
    rerun = subprocess.run(
        [sys.executable, *command[1:], "-q"], capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr

    counts = states(load(db))
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 40
    assert sorted(finished_by_run(url).values()) == sorted([done, remaining])


# The admission lock itself.

INSERT = sqlalchemy.text(
    "INSERT INTO study_system_attributes (study_id, key, value_json) VALUES (:s, :k, :v)"
)


@pytest.fixture
def study_lock(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="s")
    yield storage, study
    storage.engine.dispose()


def test_a_second_worker_waits_for_the_admission_lock_until_the_first_releases_it(study_lock):
    storage, study = study_lock
    first, second = (AdmissionLock(storage.engine, study._study_id) for _ in range(2))
    events: list[str] = []
    entered = threading.Event()

    def take_second() -> None:
        entered.wait()
        with second.held():
            events.append("second holds")

    thread = threading.Thread(target=take_second)
    thread.start()
    with first.held():
        entered.set()
        thread.join(timeout=0.3)  # the second cannot get in meanwhile
        events.append("first releases")
    thread.join(timeout=10)

    assert events == ["first releases", "second holds"]
    assert ADMISSION_KEY not in system_attrs(study)


def test_a_worker_that_finds_the_lock_held_waits_without_writing(study_lock, tmp_path):
    storage, study = study_lock
    first, second = (AdmissionLock(storage.engine, study._study_id) for _ in range(2))
    answers: list[bool] = []
    writer = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    with first.held():
        writer.execute("BEGIN IMMEDIATE")  # SQLite's one writer: any write would wait for it
        try:
            thread = threading.Thread(target=lambda: answers.append(second._try_to_take("v")))
            thread.start()
            thread.join(timeout=5)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    thread.join(timeout=10)

    assert answers == [False]  # at once, from a read; a write would have waited for the writer


def test_a_lock_whose_holder_died_is_taken_over_once_its_lease_runs_out(study_lock):
    storage, study = study_lock
    dead = json.dumps({"holder": "dead", "until": time.time() - 1})
    live = json.dumps({"holder": "alive", "until": time.time() + 60})
    with storage.engine.begin() as con:
        con.execute(INSERT, {"s": study._study_id, "k": ADMISSION_KEY, "v": dead})
    lock = AdmissionLock(storage.engine, study._study_id)

    with lock.held():
        holder = system_attrs(study)[ADMISSION_KEY]["holder"]
    assert holder != "dead"

    with storage.engine.begin() as con:
        con.execute(INSERT, {"s": study._study_id, "k": ADMISSION_KEY, "v": live})
    got: list[str] = []

    def take() -> None:
        with lock.held():
            got.append("taken")

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(timeout=0.5)
    assert got == []  # a live lease is waited for, not taken over
    with storage.engine.begin() as con:
        con.execute(sqlalchemy.text("DELETE FROM study_system_attributes"))
    thread.join(timeout=10)
    assert got == ["taken"]


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_study(request, tmp_path):
    """A new empty study on SQLite or the session's PostgreSQL server, and its storage."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 's.db'}"
    else:
        url = request.getfixturevalue("server").url()
    storage = open_storage(url, heartbeat=False)
    yield (
        optuna.create_study(storage=storage, study_name=f"admission-{uuid.uuid4().hex[:8]}"),
        storage,
    )
    storage.engine.dispose()


def test_the_admission_counts_a_runs_running_and_finished_trials_but_not_failed_or_others(
    fresh_study,
):
    study, storage = fresh_study
    for state, run in [(TrialState.COMPLETE, "a"), (TrialState.PRUNED, "a"),
                       (TrialState.RUNNING, "a"), (TrialState.FAIL, "a"),
                       (TrialState.COMPLETE, "b"), (TrialState.COMPLETE, None)]:  # fmt: skip
        trial = study.ask()
        if run is not None:
            storage.set_trial_system_attr(trial._trial_id, RUN_ATTR, run)
        if state != TrialState.RUNNING:
            study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    lock = AdmissionLock(storage.engine, study._study_id)
    other = optuna.create_study(storage=storage, study_name=f"{study.study_name}-other")
    storage.set_trial_system_attr(other.ask()._trial_id, RUN_ATTR, "a")

    assert [lock.places_taken(run) for run in ("a", "b", "c")] == [3, 1, 0]


def test_a_queued_trial_is_found_and_taken_by_the_next_admission(fresh_study):
    study, storage = fresh_study
    lock = AdmissionLock(storage.engine, study._study_id)
    plan = RunPlan({}, "", study.study_name, 2, None, None, "run")
    assert not lock.queued()
    study.enqueue_trial({"x": 0.5})
    assert lock.queued()

    trial = _ask_if_wanted(study, plan, lock)

    assert (trial.number, trial.params) == (0, {})  # the queued one; x is drawn at suggest
    stored = storage.get_trial(trial._trial_id)
    assert (stored.state, stored.system_attrs[RUN_ATTR]) == (TrialState.RUNNING, "run")
    assert not lock.queued()
    assert lock.places_taken("run") == 1


def test_a_lease_must_be_positive(study_lock):
    storage, study = study_lock
    with pytest.raises(ValueError, match=r"`lease > 0` must hold, but got \(lease=0\)"):
        AdmissionLock(storage.engine, study._study_id, lease=0)


def test_more_jobs_than_usable_cores_warns_in_one_line_and_runs_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "usable_cores", lambda: 1)
    url = f"sqlite:///{tmp_path / 's.db'}"

    assert search.main(["--storage", url, "-q", *TINY, "--trials", "3", "--jobs", "2"]) == 0

    err = capsys.readouterr().err
    assert err == (
        "hpo.search: warning: --jobs 2 is more than the 1 core(s) this process may use; the "
        "workers will share them and each trial will run slower.\n"
    )
    assert sorted(finished_by_run(url).values()) == [3]
