"""A run's local worker processes: forked from the command, or loky's fresh processes.

A forked worker starts in a few milliseconds with everything the command has imported and loaded
(a fresh interpreter takes most of a second for the imports alone), and it shares those pages
with the command until it writes to them: the second worker of a run costs little more than its
network and its Python objects, and no resource-tracker process comes with it. Forking is only
safe in a process that runs no thread it does not know of (a notebook's kernel runs several), and
only on Linux: :func:`can_fork` says when; elsewhere the workers are processes of joblib's loky
executor. Both kinds die with the command (:func:`hpo.lifetime.die_with_parent`) and are used
the same way (:func:`started`).

No beat of the command (:func:`hpo.lifetime.every`) is in the middle of its action while it forks,
so no lock is copied held into a worker. A forked worker never touches the command's storage
connections (it opens its own) and leaves with ``os._exit``, so it closes none of them either:
closing a copied SQLite or PostgreSQL connection would end or corrupt the command's.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from hpo.lifetime import INTERRUPTS, beats_held, die_with_parent, is_beat


class WorkerDied(RuntimeError):
    """A worker process died (killed, out of memory) before it could report how it ended."""


def can_fork() -> bool:
    """Whether workers can be forked from this process: Linux, and no thread but its beats."""
    if not sys.platform.startswith("linux"):
        return False
    main = threading.main_thread()
    return all(t is main or is_beat(t) for t in threading.enumerate())


def started(task: Callable[[int], None], workers: range) -> ForkedWorkers | LokyWorkers:
    """``task(i)`` for each ``i`` in ``workers``, each in a worker process of its own, forked
    where :func:`can_fork`."""
    return ForkedWorkers(task, workers) if can_fork() else LokyWorkers(task, workers)


class ForkedWorkers:
    """``task(i)`` for each ``i`` in ``workers``, each in a process forked from this one.

    Each worker dies with this process (:func:`hpo.lifetime.die_with_parent`); it takes Ctrl-C
    as a command does, and SIGTERM and SIGHUP kill it. How it ended (None, or what it raised)
    comes back through a pipe.

    Args:
        task: What each worker runs; an exception it raises is re-raised by :meth:`wait`.
        workers: The workers' numbers.
    """

    def __init__(self, task: Callable[[int], None], workers: range) -> None:
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
        self._workers = []
        self._ends: dict[int, BaseException | None] = {}
        with beats_held():
            # The objects made so far stay out of the collector's way: a collection in a worker
            # would otherwise write to, and so copy, every page that holds one of them.
            gc.freeze()
            for i in workers:
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_run, args=(sender, parent, task, i), name=f"hpo-worker-{i}"
                )
                process.start()
                sender.close()
                self._workers.append((process, receiver))

    def is_set(self) -> bool:
        """Whether a worker has raised or died, without waiting: ``work(..., stop=workers)``
        asks it between trials as it would ask a ``threading.Event``."""
        return any(self._end(i, wait=False) is not None for i in range(len(self._workers)))

    def wait(self) -> None:
        """Wait for every worker to end; re-raise the first one's exception, or raise WorkerDied
        for one that died without a word."""
        for i in range(len(self._workers)):
            end = self._end(i, wait=True)
            if end is not None:
                raise end

    def join(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds in all for the workers to end, whatever their end."""
        deadline = time.monotonic() + timeout
        for process, _ in self._workers:
            process.join(max(deadline - time.monotonic(), 0))

    def kill(self) -> None:
        """Kill the workers still running, and wait for them."""
        for process, receiver in self._workers:
            if process.is_alive():
                process.kill()
            process.join()
            receiver.close()

    def _end(self, i: int, *, wait: bool) -> BaseException | None:
        """Worker ``i``'s end once it is known: None for a task that returned."""
        if i not in self._ends:
            process, receiver = self._workers[i]
            if not (receiver.poll() or wait or process.exitcode is not None):
                return None  # still running
            try:
                self._ends[i] = receiver.recv()  # waits for a worker still running
            except EOFError:
                process.join()
                self._ends[i] = WorkerDied(f"worker {i} died (exit code {process.exitcode})")
        return self._ends[i]


class LokyWorkers:
    """:class:`ForkedWorkers`, the same methods, with loky's processes (``task`` is pickled)."""

    def __init__(self, task: Callable[[int], None], workers: range) -> None:
        self._executor = executor(len(workers))
        self._futures = [self._executor.submit(task, i) for i in workers]

    def is_set(self) -> bool:
        return any(f.done() and f.exception() is not None for f in self._futures)

    def wait(self) -> None:
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        try:
            for future in self._futures:
                future.result()  # waits, and raises what the worker raised
        except TerminatedWorkerError as e:
            raise WorkerDied(str(e)) from e

    def join(self, timeout: float) -> None:
        concurrent.futures.wait(self._futures, timeout=timeout)

    def kill(self) -> None:
        # Idle or stopped, the workers go (waiting for idle ones to exit on their own takes a
        # fifth of a second).
        self._executor.shutdown(wait=True, kill_workers=True)


def executor(max_workers: int):
    """loky's reusable executor, whose workers die with this process.

    Imported here: joblib and loky take 40 ms of the command's start, which forked workers
    never need."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(
        max_workers=max_workers, initializer=die_with_parent, initargs=(os.getpid(),)
    )


def _run(sender, parent: int, task: Callable[[int], None], worker: int) -> None:
    """A worker's whole life: signals as a worker takes them, the task, its end sent back."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in INTERRUPTS:
        if s != signal.SIGINT:
            signal.signal(s, signal.SIG_DFL)
    die_with_parent(parent)
    end: BaseException | None = None
    try:
        task(worker)
    except BaseException as e:  # every end goes back to the command
        end = e
    try:
        sender.send(end)
    except Exception:  # an exception that cannot be pickled: its words
        sender.send(RuntimeError(f"{type(end).__name__}: {end}"))
