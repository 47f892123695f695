"""The commands' steps: ``prepare_*`` checks everything and writes nothing, ``execute_*`` writes
and runs. ``python -m hpo.search`` and ``python -m hpo.narrow`` are these steps with their flags
(a ``ValueError`` from a prepare step is the command's one-line error, exit 2), and
:mod:`hpo.library` is the same steps with keywords.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna

from hpo import stages
from hpo.arguments import existing_study, resolve_config, stage_options, validate
from hpo.cluster import check_cluster
from hpo.config import SearchConfig
from hpo.progress import run_with_progress
from hpo.results import open_readonly
from hpo.runner import StorageFailure
from hpo.storage import check_storage, ensure_parent, opened_storage
from hpo.study import (
    check_study_name,
    create_study,
    make_sampler,
    store_config,
    stored_config,
)

__all__ = [
    "LateInputError",
    "NarrowPlan",
    "SearchPlan",
    "StagesPlan",
    "execute_narrow",
    "execute_search",
    "execute_stages",
    "prepare_narrow",
    "prepare_search",
    "prepare_stages",
]


class LateInputError(ValueError):
    """Bad input found only once the storage was open: another command created the study in
    the meantime, with a configuration this one contradicts. Nothing was written."""


# hpo.search

_NOT_OURS = "--study {name!r} exists but was not made by hpo (no stored config)."


@dataclass(frozen=True)
class SearchPlan:
    """A checked search, ready to run: nothing has been written yet."""

    exists: bool  # the study was there when the input was checked
    config: SearchConfig


def prepare_search(args: argparse.Namespace) -> SearchPlan:
    """Check everything about a search (no ``--stages``) before anything is written.

    Raises:
        ValueError: For bad input, a storage that cannot be used, or a contradicted study.
    """
    check_study_name(args.study)
    if args.cluster is not None:
        check_cluster(args.cluster, args.storage)
    exists, stored = existing_study(args.storage, args.study)
    if exists and stored is None:
        raise ValueError(_NOT_OURS.format(name=args.study))
    config = resolve_config(args, stored)
    validate(config, args)
    return SearchPlan(exists, config)


def execute_search(args: argparse.Namespace, plan: SearchPlan) -> optuna.Study:
    """Create or resume the study of ``plan`` and add ``args.trials`` finished trials to it.

    Raises:
        LateInputError: If another command created the study meanwhile, contradicting this one.
        KeyboardInterrupt: After an interrupt, once the message is printed.
        hpo.runner.StorageFailure: If the storage fails during the run.
    """
    url, config = args.storage, plan.config
    ensure_parent(url)
    with _opened_for_run(url) as storage:
        study = None if plan.exists else _create_unless_taken(storage, args.study, config)
        if study is None:
            study = optuna.load_study(study_name=args.study, storage=storage)
            if not plan.exists:
                # Another command created the study since this one looked: resume it as that
                # command made it, as if it had been there all along.
                try:
                    config = resolve_config(args, _created_config(study))
                except ValueError as e:
                    raise LateInputError(str(e)) from e
            store_config(study, config)
        if not run_with_progress(study, config, url, args.trials, args):
            raise KeyboardInterrupt
        return study


def _create_unless_taken(storage, name: str, config: SearchConfig) -> optuna.Study | None:
    """The new study ``name``, or None if another command created one of that name first."""
    try:
        return create_study(storage, name, config)
    except optuna.exceptions.DuplicatedStudyError:
        return None


def _created_config(study: optuna.Study, wait: float = 10.0) -> SearchConfig:
    """The configuration of a study another command has just created.

    That command stores it right after creating the study; until then the study has none.

    Raises:
        ValueError: If no configuration appears within ``wait`` seconds (not made by hpo).
    """
    deadline = time.monotonic() + wait
    while (config := stored_config(study)) is None:
        if time.monotonic() > deadline or study.get_trials(deepcopy=False):
            raise ValueError(_NOT_OURS.format(name=study.study_name))
        time.sleep(0.05)
    return config


# hpo.search --stages


@dataclass(frozen=True)
class StagesPlan:
    names: list[str]  # STUDY-s1 .. STUDY-sK
    config: SearchConfig  # the first stage's


def prepare_stages(args: argparse.Namespace) -> StagesPlan:
    """Check a staged search (``--stages K``) before anything is written.

    Stage 1 (``STUDY-s1``) samples at random in the given ranges, as the book does; every later
    stage is narrowed from the one before and searches with ``--sampler`` (default TPE).

    Raises:
        ValueError: For bad input, as :func:`prepare_search`.
    """
    names = [f"{args.study}-s{k}" for k in range(1, args.stages + 1)]
    check_study_name(names[-1], "--study with --stages")
    if args.cluster is not None:
        check_cluster(args.cluster, args.storage)
    exists, stored = existing_study(args.storage, names[0])
    if exists and stored is None:
        raise ValueError(_NOT_OURS.format(name=names[0]))
    # --sampler is the later stages' sampler; stage 1 keeps the book's (or its stored) one.
    first = argparse.Namespace(**{**vars(args), "sampler": None, "study": names[0]})
    config = resolve_config(first, stored)
    if not exists:
        config = dataclasses.replace(config, sampler=stages.FIRST_SAMPLER)
    make_sampler(args.sampler or stages.LATER_SAMPLER, 0)
    validate(config, args)
    return StagesPlan(names, config)


def execute_stages(args: argparse.Namespace, plan: StagesPlan) -> stages.StagesRun:
    """Run (or resume, or extend) every stage of ``plan``, each to ``args.trials`` of its own.

    Raises:
        hpo.stages.CannotNarrow: If a stage has no complete trial to narrow from.
        KeyboardInterrupt: After an interrupt, once the message is printed.
        hpo.runner.StorageFailure: If the storage fails during the run.
    """
    return _run_stages(args, plan.names, plan.config)


# hpo.narrow


@dataclass(frozen=True)
class NarrowPlan:
    names: list[str]  # the new stages, in order
    first: stages.Plan  # the first new stage: its ranges, seeds and configuration


def prepare_narrow(args: argparse.Namespace, child: str | None = None) -> NarrowPlan:
    """Check the next stage(s) of ``args.study`` before anything is written (``hpo.narrow``).

    Raises:
        ValueError: For bad input: ranges given (narrowing derives them), a stage name that is
            taken, a parent that cannot be narrowed, or what :func:`prepare_search` refuses.
    """
    count = args.stages or 1
    _refuse_ranges(args)
    if count > 1 and args.trials is None:
        raise ValueError(
            f"--stages {count}: a stage is narrowed from the trials of the one before, so "
            "more than one stage needs --trials."
        )
    if count > 1 and child is not None:
        raise ValueError(
            f"--child names one stage, but --stages {count} creates {count}; the names "
            "follow the parent's (book-s2, book-s3, ...)."
        )
    url = args.storage
    if child is not None:
        check_study_name(child, "--child")
    with open_readonly(url) as storage:
        parent = stages.load_search_study(storage, args.study, url)
        existing = {s.study_name for s in storage.get_all_studies()}
        config = resolve_config(args, stored_config(parent))
        names = (
            [child] if child else stages.stage_names(args.study, stages.stage_number(parent), count)
        )
        check_study_name(names[-1], "--study")
        taken = [n for n in names if n in existing]
        if taken:
            raise ValueError(
                f"Study {taken[0]!r} exists already; add trials to it with python -m "
                f"hpo.search --study {taken[0]} --trials N, or name the stage with --child."
            )
        first = stages.plan_stage(parent, names[0], config, stage_options(args))
    # The stages are written to the same storage: refuse it now if this user cannot write it.
    check_storage(url, create=True)
    if args.cluster is not None:
        check_cluster(args.cluster, url)
    make_sampler(first.config.sampler, 0)
    if args.trials is not None:
        validate(first.config, args)
    return NarrowPlan(names, first)


def _refuse_ranges(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--lr", args.lr),
        ("--weight-decay", args.weight_decay),
        ("--space", args.space),
    ):
        if value is not None:
            shown = value if isinstance(value, str) else " ".join(map(str, value))
            raise ValueError(
                f"{flag}: narrowing derives the ranges from the parent's best trials, so it takes "
                f"no ranges, but got {flag} {shown}."
            )


def execute_narrow(args: argparse.Namespace, plan: NarrowPlan) -> stages.StagesRun:
    """Create the stages of ``plan`` and, with ``args.trials``, run each in turn.

    Raises:
        As :func:`execute_stages`.
    """
    return _run_stages(args, plan.names, plan.first.config, plan.first)


@contextmanager
def _opened_for_run(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """``opened_storage(url)`` for a run whose input was checked: a storage that cannot be
    opened now (its disk filled up, its server went away) is a storage failure of the run."""
    with contextlib.ExitStack() as stack:
        try:
            storage = stack.enter_context(opened_storage(url))
        except ValueError as e:
            raise StorageFailure(str(e), 0) from e
        yield storage


def _run_stages(
    args: argparse.Namespace,
    names: list[str],
    config: SearchConfig,
    first: stages.Plan | None = None,
) -> stages.StagesRun:
    url = args.storage
    ensure_parent(url)
    with _opened_for_run(url) as storage:
        done = stages.run_stages(
            storage,
            names,
            config,
            stage_options(args),
            run=lambda study, config, n: run_with_progress(study, config, url, n, args),
            echo=print,
            first=first,
        )
    if not done.completed:
        raise KeyboardInterrupt
    return done
