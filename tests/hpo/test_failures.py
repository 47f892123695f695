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
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

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

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rest = shlex.split(match[3])
    assert rest[:3] == ["python", "-m", "hpo.search"]
    rerun = subprocess.run(
        [sys.executable, *rest[1:], "-q"], capture_output=True, text=True, timeout=300
    )

    assert rerun.returncode == 0, rerun.stderr
    counts = trial_states(db)
    assert counts["COMPLETE"] + counts["PRUNED"] == 60
    assert counts["RUNNING"] == counts["WAITING"] == 0
