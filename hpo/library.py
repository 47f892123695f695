"""The search as a library: what ``python -m hpo.search`` and ``python -m hpo.narrow`` do, as
functions for notebooks and scripts::

    from hpo import next_stage, run_search
    study = run_search(trials=100, lr=(1e-6, 1e-2), study="nb")   # -> optuna.Study
    stage2 = next_stage("nb", trials=60)                          # narrowed, seeded, run

Keyword names are the commands' flag names (``--weight-decay LOW HIGH`` is
``weight_decay=(low, high)``), read by the same parser, so a call means exactly what the command
means: the same configuration resolution (a stored study's, else the defaults, with the keywords
on top), the same checks before anything is written (bad arguments raise ``ValueError``), the
same storage handling, exactly ``trials`` finished trials, workers that end with the call. Each
command is a thin layer over the same steps (:mod:`hpo.steps`): it parses its flags, prepares
(``ValueError`` -> its one-line error, exit 2), then executes.

Ctrl-C (``KeyboardInterrupt``, in a notebook too) fails the running trials, prints how many of
the trials finished and what adds the rest, and re-raises.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna

from hpo.arguments import DEFAULT_STUDY, DEFAULT_TRIALS, add_search_arguments
from hpo.progress import n_workers, too_many_jobs
from hpo.runner import workers_started
from hpo.steps import (
    execute_narrow,
    execute_search,
    execute_stages,
    prepare_narrow,
    prepare_search,
    prepare_stages,
)
from hpo.storage import DEFAULT_STORAGE, opened_storage

logger = logging.getLogger(__name__)

__all__ = ["next_stage", "run_search"]


# From Python


class _KeywordParser(argparse.ArgumentParser):
    """The commands' flags, read from keywords: a bad value raises ``ValueError``."""

    def error(self, message: str) -> None:
        raise ValueError(message.replace("argument ", "", 1))


def _parse(keywords: Mapping[str, Any], *, narrowing: bool, caller: str) -> argparse.Namespace:
    """The namespace the command would parse from the flags that ``keywords`` name."""
    parser = _KeywordParser(prog=caller, add_help=False)
    add_search_arguments(parser, narrowing=narrowing)
    known = {a.dest for a in parser._actions} - {"quiet", "verbose"}
    argv: list[str] = []
    space = None
    for name, value in keywords.items():
        if name not in known:
            raise ValueError(
                f"{caller}() got an unknown keyword {name!r}; it takes the flags of python -m "
                f"hpo.{'narrow' if narrowing else 'search'}: {', '.join(sorted(known))}."
            )
        if value is None:
            continue
        if name == "space" and isinstance(value, Mapping):
            space = dict(value)  # a search space given as a dict, as a TOML file would read
            continue
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (bool, Mapping, list, tuple)) for v in values):
            raise ValueError(f"`{name}` takes numbers or names, but got {name}={value!r}.")
        argv += [flag, *map(str, values)]
    args = parser.parse_args(argv)
    if space is not None:
        args.space = space
    return args


@contextmanager
def _running(args: argparse.Namespace, progress: bool, verbose: bool) -> Iterator[None]:
    args.quiet, args.verbose, args.summary = not progress, verbose, progress
    jobs = n_workers(args.jobs)
    warning = None if args.cluster else too_many_jobs(jobs)
    if warning:
        logger.warning(warning)
    with workers_started(1 if args.cluster else jobs):
        yield


def run_search(
    *,
    trials: int = DEFAULT_TRIALS,
    jobs: int | None = None,
    storage: str = DEFAULT_STORAGE,
    study: str = DEFAULT_STUDY,
    progress: bool = True,
    verbose: bool = False,
    **overrides: Any,
) -> optuna.Study:
    """Run a search, exactly as ``python -m hpo.search`` does, and return its study.

    Args:
        trials: Finished (complete + pruned) trials this call adds, across all workers.
        jobs: Worker processes; default: one per usable core. 1 is the reproducible run.
        storage: An Optuna RDB storage URL.
        study: The study; an existing one resumes with its stored configuration.
        progress: Show a progress bar (a widget in Jupyter) and the summary at the end.
        verbose: Print the book's line for every trial.
        **overrides: The command's other flags by name: ``lr=(low, high)``,
            ``weight_decay=(low, high)``, ``space=`` a TOML file's path or the same tables as a
            dict, ``dataset``, ``train_size``, ``val_rate``, ``seed``, ``epochs``,
            ``batch_size``, ``hidden=[...]``, ``optimizer``, ``dtype``, ``sampler``, ``pruner``,
            ``timeout``, ``data_dir``, and ``stages=K`` with ``top``, ``top_fraction``,
            ``margin`` for a staged search (then the last stage's study is returned).

    Returns:
        The study, on ``storage``.

    Raises:
        ValueError: If an argument is bad or contradicts the stored study; nothing is written.
        KeyboardInterrupt: On Ctrl-C, once the running trials are failed.
        hpo.runner.StorageFailure: If the storage fails during the run (finished trials kept).
    """
    args = _parse(
        {"trials": trials, "jobs": jobs, "storage": storage, "study": study, **overrides},
        narrowing=False,
        caller="run_search",
    )
    with _running(args, progress, verbose):
        if args.stages is None:
            return execute_search(args, prepare_search(args))
        plan = prepare_stages(args)
        execute_stages(args, plan)
    return _load(args.storage, plan.names[-1])


def next_stage(
    parent: str,
    *,
    trials: int | None = None,
    child: str | None = None,
    jobs: int | None = None,
    storage: str = DEFAULT_STORAGE,
    progress: bool = True,
    verbose: bool = False,
    **overrides: Any,
) -> optuna.Study:
    """Create the next stage of the study ``parent``, as ``python -m hpo.narrow`` does.

    The new study searches the ranges where ``parent``'s best trials live, seeded with its
    trials there; with ``trials`` it also runs them. ``overrides`` are the command's other
    flags: ``top``, ``top_fraction``, ``margin``, ``sampler``, ``pruner``, ``timeout``,
    ``data_dir``, ``stages=K`` (K stages, each narrowed from the one before; the last one is
    returned).

    Raises:
        ValueError: If an argument is bad, the name is taken, or ``parent`` cannot be narrowed.
        KeyboardInterrupt: On Ctrl-C, once the running trials are failed.
        hpo.runner.StorageFailure: If the storage fails during the run.
    """
    args = _parse(
        {"study": parent, "trials": trials, "jobs": jobs, "storage": storage, **overrides},
        narrowing=True,
        caller="next_stage",
    )
    with _running(args, progress, verbose):
        plan = prepare_narrow(args, child)
        execute_narrow(args, plan)
    return _load(args.storage, plan.names[-1])


def _load(url: str, name: str) -> optuna.Study:
    """The study ``name``, for the caller to read (its connections open as it is used)."""
    with opened_storage(url, heartbeat=False) as storage:
        return optuna.load_study(study_name=name, storage=storage)
