"""What a person watching a run sees: how many workers it gets, its progress bar (a widget in
Jupyter, text in a terminal), the book's line per trial with ``verbose``, what to run after an
interrupt, and the summary at the end."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
import uuid

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from hpo import cli, record
from hpo.config import SearchConfig
from hpo.record import count_finished
from hpo.runner import run_study
from hpo.storage import display_url

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which a container may limit."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def n_workers(jobs: int | None) -> int:
    """Worker processes for ``--jobs``: None (the default) and -1 mean one per usable core."""
    return usable_cores() if jobs is None or jobs == -1 else jobs


def too_many_jobs(jobs: int) -> str | None:
    """The warning for more workers than usable cores, or None."""
    cores = usable_cores()
    if jobs <= cores:
        return None
    # Kept as asked (the user may know better), but trials will share the cores.
    return (
        f"--jobs {jobs} is more than the {cores} core(s) this process may use; the workers "
        "will share them and each trial will run slower."
    )


class _Bar(tqdm):
    # No monitor thread: a process running threads that are not its own cannot fork its
    # workers (hpo.workers), and the bar is updated from the run's own poller twice a second.
    monitor_interval = 0


class Progress:
    """One progress bar for the whole run, fed from the storage; ``verbose`` adds the book's
    line per trial.

    The bar counts the trials this run's workers finish (those tagged ``run_id``), not those of
    other runs on the same study; ``verbose`` prints every trial that finishes, whoever ran it.
    """

    def __init__(
        self, total: int, before: list[FrozenTrial], verbose: bool, enabled: bool, run_id: str
    ) -> None:
        self.bar = _Bar(total=total, unit="trial", disable=not enabled, dynamic_ncols=True)
        self.seen = {t.number for t in before if t.state.is_finished()}
        self.verbose = verbose
        self.run_id = run_id

    def __call__(self, trials: list[FrozenTrial]) -> None:
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                if self.verbose:
                    tqdm.write(cli.trial_line(t), file=sys.stdout)
        finished = count_finished(trials, self.run_id)
        self.bar.update(max(0, min(finished, self.bar.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def run_with_progress(
    study: optuna.Study, config: SearchConfig, url: str, n_trials: int, args: argparse.Namespace
) -> bool:
    """Add ``n_trials`` finished trials to ``study`` with a progress bar; False if interrupted.

    ``args`` holds the search's run flags (``jobs``, ``timeout``, ``data_dir``, ``verbose``,
    ``quiet``, and ``summary``: whether to print :func:`summary_lines` at the end). After an
    interrupt the message says how many of the trials finished and what adds the rest.
    """
    trials = study.get_trials(deepcopy=False)
    jobs = n_workers(args.jobs)
    logger.info(
        "Study %r: %d trials stored; adding %d with %d worker(s), %s sampler, %s pruner.",
        study.study_name,
        len(trials),
        n_trials,
        jobs,
        config.sampler,
        config.pruner,
    )
    run_id = uuid.uuid4().hex
    progress = Progress(n_trials, trials, args.verbose, enabled=not args.quiet, run_id=run_id)
    start = time.perf_counter()
    try:
        run_study(
            study,
            config,
            url,
            n_trials=n_trials,
            n_jobs=jobs,
            timeout=args.timeout,
            data_dir=args.data_dir,
            # Nothing to show: no polling, which would cost a read twice a second.
            on_poll=progress if args.verbose or not args.quiet else None,
            run_id=run_id,
            cluster_address=getattr(args, "cluster", None),
        )
    except KeyboardInterrupt:
        progress.close()
        done = count_finished(study.get_trials(deepcopy=False), run_id)
        print(
            f"Interrupted after {done} of {n_trials} trials; running trials were marked failed. "
            + resume_hint(args, study.study_name, n_trials - done),
            file=sys.stderr,
        )
        return False
    progress.close()
    # The commands print it even with -q; run_search(progress=False) prints nothing.
    if getattr(args, "summary", True):
        for line in summary_lines(study, url, time.perf_counter() - start):
            print(line)
    return True


def resume_hint(args: argparse.Namespace, study: str, remaining: int) -> str:
    """What to run to add the trials an interrupted or failed run did not finish."""
    if args.stages is not None:
        # Each stage ends with --trials finished trials of its own: the same command resumes.
        return "Run the same command to resume."
    command = ["python", "-m", "hpo.search", "--storage", display_url(args.storage)]
    command += ["--study", study, "--trials", str(remaining)]
    if args.jobs is not None:
        command += ["--jobs", str(args.jobs)]
    if args.data_dir is not None:
        command += ["--data-dir", args.data_dir]
    return f"To add the remaining {remaining}: {shlex.join(command)}"


def summary_lines(study: optuna.Study, url: str, wall: float) -> list[str]:
    """The book's Best-5 lines, ranges whose edge the best trials crowd, the study's counts, and
    how to inspect it."""
    from hpo.narrowing import crowded_edges
    from hpo.space import space_from_dict
    from hpo.study import stored_config

    trials = study.get_trials(deepcopy=False)
    counts = record.count_states(trials)
    config = stored_config(study)
    return [
        *cli.best_lines(trials, 5),
        *(crowded_edges(trials, space_from_dict(config.space)) if config is not None else []),
        f"Study {study.study_name!r}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; "
        f"this run took {wall:.1f} s.",
        f"Inspect it: optuna-dashboard {display_url(url)} --host 127.0.0.1",
    ]
