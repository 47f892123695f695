"""A run's local worker processes (hpo.workers): how each one's end comes back, the beats of a
forked one, and where a process forks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hpo.lifetime import beats_held, every
from hpo.workers import ForkedWorkers, LokyWorkers, WorkerDied

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers are forked on Linux only"
)


def _returns(worker: int) -> None:
    pass


def _raises(worker: int) -> None:
    if worker == 2:
        raise ValueError(f"worker {worker} says no")


def _killed(worker: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("kind", [ForkedWorkers, LokyWorkers])
def test_each_workers_end_comes_back_none_an_exception_or_its_death(kind):
    workers = kind(_returns, range(1, 3))
    workers.wait()
    assert not workers.is_set()
    workers.kill()

    workers = kind(_raises, range(1, 3))
    with pytest.raises(ValueError, match="worker 2 says no"):
        workers.wait()
    assert workers.is_set()
    workers.kill()

    workers = kind(_killed, range(1, 2))
    with pytest.raises(WorkerDied):
        workers.wait()
    assert workers.is_set()
    workers.kill()


def test_a_running_worker_is_not_failed_and_kill_ends_it():
    workers = ForkedWorkers(lambda worker: time.sleep(60), range(1, 2))
    try:
        assert not workers.is_set()
    finally:
        started = time.monotonic()
        workers.kill()
    assert time.monotonic() - started < 5


def test_a_forked_worker_beats_though_this_process_forked_it_while_holding_the_beats():
    # The forking thread holds the beats off (beats_held): a worker that got that state copied
    # would hang at its first beat.
    def beats(worker: int) -> None:
        count = []
        with every(0.05, lambda: count.append(1)):
            time.sleep(0.5)
        raise RuntimeError(f"{len(count)} beats")  # an end that comes back, unlike a hang

    workers = ForkedWorkers(beats, range(1, 2))
    try:
        workers.join(30)
        assert workers.is_set(), "the worker hung"
        with pytest.raises(RuntimeError, match=r"^([5-9]|1\d) beats$"):
            workers.wait()
    finally:
        workers.kill()


def test_beats_act_side_by_side_and_holding_them_waits_for_the_one_acting():
    ends, fast = [], []
    slow_acting = threading.Event()

    def slow() -> None:
        slow_acting.set()
        time.sleep(0.3)
        ends.append(time.monotonic())

    with every(0.01, slow), every(0.01, lambda: fast.append(time.monotonic())):
        assert slow_acting.wait(10)
        before = len(fast)
        time.sleep(0.1)
        assert len(fast) > before, "a slow beat held the others up"
        with beats_held():
            held_at = time.monotonic()
            acted = len(fast)
            time.sleep(0.1)
            assert len(fast) == acted, "a beat acted while the beats were held"
    assert ends and ends[0] <= held_at  # the slow action in progress ended first


NO_FORK_WHERE_A_THREAD_OF_OTHERS_RUNS = """
import threading
from hpo.lifetime import every
from hpo.workers import can_fork

assert can_fork()
with every(60, lambda: None):
    assert can_fork()  # the process's own beats are held while it forks
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
assert not can_fork()
stop.set()
thread.join()
assert can_fork()
"""


def test_no_fork_where_a_thread_of_others_runs():
    # In a fresh interpreter: this one may run threads that other tests left.
    subprocess.run([sys.executable, "-c", NO_FORK_WHERE_A_THREAD_OF_OTHERS_RUNS], check=True)
