"""Storage failures in the middle of a run: the command stops with one line and a non-zero exit,
its finished trials are kept, the database stays sound, and the command it prints continues the
run once the cause is gone. Real processes on a real (small) disk."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import optuna
import pytest

from hpo.storage import GRACE_PERIOD_S

from .test_search import TINY

DISK_SIZE = "1500k"  # fills up after about ten of these tiny trials


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``DISK_SIZE``, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def trial_states(db: Path) -> Counter:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return Counter(dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state")))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_stops_the_run_in_one_line_and_the_printed_command_continues_it(
    small_disk, jobs
):
    db = small_disk / "s.db"
    command = [sys.executable, "-m", "hpo.search", "--storage", f"sqlite:///{db}", "-q"]
    run = subprocess.run(
        [*command, *TINY, "--trials", "60", "--jobs", jobs],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    match = re.fullmatch(
        r"hpo\.search: error: the storage failed \(database or disk is full\); (\d+) of 60 "
        r"finished and are kept\. Once the cause is gone, add the remaining (\d+): (.*)\n",
        run.stderr,
    )
    assert match, run.stderr
    done, remaining = int(match[1]), int(match[2])
    assert 0 < done < 60 and done + remaining == 60
    counts = trial_states(db)
    assert counts["COMPLETE"] + counts["PRUNED"] == done
    left_running = counts["RUNNING"]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    if left_running:
        # Trials running when the disk filled up could not be failed then, as no write went
        # through: once their heartbeats are stale, the next run fails them.
        time.sleep(GRACE_PERIOD_S + 1)
    rest = shlex.split(match[3])
    assert rest[:3] == ["python", "-m", "hpo.search"]
    rerun = subprocess.run(
        [sys.executable, *rest[1:], "-q"], capture_output=True, text=True, timeout=300
    )

    assert rerun.returncode == 0, rerun.stderr
    counts = trial_states(db)
    assert counts["COMPLETE"] + counts["PRUNED"] == 60
    assert counts["RUNNING"] == counts["WAITING"] == 0
    assert counts["FAIL"] == left_running


def test_a_disk_too_full_for_a_new_files_tables_fails_in_one_line_and_leaves_no_file(small_disk):
    subprocess.run(["mount", "-o", "remount,size=40k", str(small_disk)], check=True)
    (small_disk / "pad").write_bytes(b"\0" * 38 * 1024)
    db = small_disk / "new.db"
    run = subprocess.run(
        [sys.executable, "-m", "hpo.search", "--storage", f"sqlite:///{db}", *TINY, "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "the storage failed (" in run.stderr and "database or disk is full" in run.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["pad"]


# The database server going away mid-run: for a few seconds (a restart), or for good.

SERVER_RUN = ["--train-size", "300", "--epochs", "20", "--hidden", "50", "50", "--pruner", "none"]


def start_on_server(url: str, study: str, trials: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "hpo.search", "--storage", url, "--study", study, "-q"]
    return subprocess.Popen(
        [*command, *SERVER_RUN, "--trials", str(trials), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def server_states(url: str, study: str) -> Counter:
    study = optuna.load_study(study_name=study, storage=url)
    return Counter(t.state.name for t in study.trials)


def wait_for_finished(url: str, study: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            counts = server_states(url, study)
            if counts["COMPLETE"] + counts["PRUNED"] >= count:
                return
        except KeyError:
            pass  # not created yet
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} trials finished")


def test_a_server_restart_mid_run_is_survived_with_the_count_exact(server):
    url = server.url()
    proc = start_on_server(url, "restart", 24)
    wait_for_finished(url, "restart", 2)

    server.stop()
    time.sleep(2)  # the server is away for a while, as in a restart
    server.start()
    _, err = proc.communicate(timeout=300)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    counts = server_states(url, "restart")
    assert counts["COMPLETE"] + counts["PRUNED"] == 24 and counts["RUNNING"] == 0


def test_a_server_gone_for_good_stops_the_run_in_one_line_and_the_run_continues_later(server):
    url = server.url()
    proc = start_on_server(url, "gone", 200)
    wait_for_finished(url, "gone", 2)

    server.stop()
    try:
        _, err = proc.communicate(timeout=120)  # retries for about 15 s, then gives up
    finally:
        server.start()

    assert proc.returncode == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("hpo.search: error: the storage failed (")
    # The same study goes on once the server is back; the dead run's trials are failed.
    time.sleep(GRACE_PERIOD_S + 1)
    rerun = start_on_server(url, "gone", 2)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    counts = server_states(url, "gone")
    assert counts["RUNNING"] == 0 and counts["COMPLETE"] + counts["PRUNED"] >= 4
