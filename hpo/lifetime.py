"""How a run's processes end: interrupts that stop a run cleanly, and workers that die with it.

Ctrl-C, SIGTERM (``kill``, ``systemctl stop``) and SIGHUP stop a run the same way: the steps that
must not be cut in two finish first, running trials are failed, and the command says how far it
got. A command that is killed outright (SIGKILL, the OOM killer) runs no clean-up at all, so its
worker processes are tied to it by the kernel instead. The beats that show a run is alive
(trial heartbeats, a cluster run's beat) are threads made by :func:`every`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# What a command treats as Ctrl-C: `kill`, `systemctl stop` and the OOM killer's polite first
# step send SIGTERM, a closed terminal SIGHUP.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C while the block runs; the list it gives holds the signals that arrived.

    For the steps that must not be cut in two: creating a trial (with its run tag and first
    beat) and telling its end. The caller fails the trial, or finishes telling, and then raises
    ``KeyboardInterrupt`` if the list is not empty.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in INTERRUPTS
    }
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def interrupts_as_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP stop the run as Ctrl-C (SIGINT) does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupt) for s in INTERRUPTS if s != signal.SIGINT}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_CHECK_S = 2.0  # where the kernel cannot do it: how often a worker looks for its parent


def die_with_parent(parent: int) -> None:
    """Make this worker process end when ``parent``, the command, ends, however it ends.

    A command killed with SIGKILL (or by the OOM killer) runs no clean-up, and its workers
    would go on running trials for a run that no longer exists. On Linux the kernel kills the
    worker when its parent dies; elsewhere a thread checks for it every heartbeat interval. The
    worker's running trial is failed by the next heartbeat check, of any run on the study.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # died before the line above took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(1)


_BEAT_THREAD = "hpo-beat"


class _Beats:
    """The beats of a process act side by side; a fork waits until none is acting, and holds
    new actions off until it is done."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._acting = 0
        self._held = self._wanted = False

    @contextmanager
    def acting(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not (self._held or self._wanted))
            self._acting += 1
        try:
            yield
        finally:
            with self._changed:
                self._acting -= 1
                self._changed.notify_all()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._changed:
            self._wanted = True  # no new action starts meanwhile
            self._changed.wait_for(lambda: self._acting == 0)
            self._held, self._wanted = True, False
        try:
            yield
        finally:
            with self._changed:
                self._held = False
                self._changed.notify_all()


_beats = _Beats()


def _beats_anew() -> None:
    # A forked process starts with no beat acting and none held off: its forking thread was in
    # beats_held, and the beats' threads are not copied.
    global _beats
    _beats = _Beats()


os.register_at_fork(after_in_child=_beats_anew)


@contextmanager
def beats_held() -> Iterator[None]:
    """Keep this process's beats between two actions while the block runs, so that a process
    forked in the block (hpo.workers) gets no lock copied held that a beat had taken (a
    storage's, the logging module's)."""
    with _beats.held():
        yield


def is_beat(thread: threading.Thread) -> bool:
    """Whether ``thread`` is one that :func:`every` made."""
    return thread.name == _BEAT_THREAD


@contextmanager
def every(interval: float, action: Callable[[], object]):
    """Call ``action`` from a thread every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        failing = False
        while not stop.wait(interval):
            try:
                with _beats.acting():
                    action()
            except Exception as e:  # a beat that fails must not end the beating
                if not failing:
                    logger.info("A background beat failed and goes on: %s", e)
                failing = True
            else:
                failing = False

    thread = threading.Thread(target=loop, name=_BEAT_THREAD, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
