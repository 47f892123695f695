"""``python -m hpo.search``: the book's ch. 6 experiment as a pruned, parallel, persisted study.

Examples::

    python -m hpo.search --trials 100
    python -m hpo.search --trials 100 --jobs 2 --sampler random --pruner none
    python -m hpo.search --study wide --space space.toml --trials 200
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import shlex
import sys
import time
import uuid
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from hpo import cli, record, stages
from hpo.arguments import add_search_arguments, resolve_config, stage_options, validate
from hpo.arguments import existing_study as _existing_study
from hpo.config import SearchConfig
from hpo.runner import StorageFailure, count_finished, run_study, workers_started
from hpo.storage import display_url, ensure_parent, opened_storage
from hpo.study import create_study, make_sampler, stored_config

logger = logging.getLogger(__name__)


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m hpo.search",
        description="Tune the book's MultiLayerNet with an Optuna study persisted in a database.",
    )
    add_search_arguments(p)
    return p


def run_stages(args: argparse.Namespace) -> int:
    """``python -m hpo.search --stages K``: stage 1 as the book does, then K - 1 narrowed stages.

    Stage 1 (``STUDY-s1``) samples at random in the given ranges; every later stage is narrowed
    from the one before and searches with ``--sampler`` (default TPE). Each stage ends with
    ``--trials`` finished trials of its own (seeded trials do not count), so the same command
    resumes an interrupted pipeline and a larger K extends a finished one
    (:func:`hpo.stages.run_stages`).

    Returns:
        The exit code: 0, 2 for bad input, 1 if a stage has no complete trial to narrow from,
        130 if interrupted.
    """
    url = args.storage
    names = [f"{args.study}-s{k}" for k in range(1, args.stages + 1)]
    try:
        exists, stored = _existing_study(url, names[0])
        if exists and stored is None:
            raise ValueError(
                f"--study {names[0]!r} exists but was not made by hpo (no stored config)."
            )
        # --sampler is the later stages' sampler; stage 1 keeps the book's (or its stored) one.
        first = argparse.Namespace(**{**vars(args), "sampler": None, "study": names[0]})
        config = resolve_config(first, stored)
        if not exists:
            config = dataclasses.replace(config, sampler=stages.FIRST_SAMPLER)
        make_sampler(args.sampler or stages.LATER_SAMPLER, 0)
        validate(config, args)
    except ValueError as e:
        return cli.fail("hpo.search", e)

    ensure_parent(url)
    with opened_storage(url) as storage:
        try:
            done = stages.run_stages(
                storage,
                names,
                config,
                stage_options(args),
                run=lambda study, config, n: run_with_progress(study, config, url, n, args),
                echo=print,
            )
        except stages.CannotNarrow as e:
            return cli.fail("hpo.search", e, code=1)
    if not done.completed:
        return 130
    if done.best is not None:
        trial, name = done.best
        print(
            f"Best of {len(names)} stages: {name!r} trial {trial.number}, {cli.trial_line(trial)}"
        )
    return 0


class Progress:
    """One progress bar for the whole run, fed from the storage; -v adds the book's lines.

    The bar counts the trials this run's workers finish (those tagged ``run_id``), not those of
    other runs on the same study; -v prints every trial that finishes, whoever ran it.
    """

    def __init__(
        self,
        total: int,
        before: list[optuna.trial.FrozenTrial],
        verbose: bool,
        enabled: bool,
        run_id: str,
    ) -> None:
        self.bar = tqdm(total=total, unit="trial", disable=not enabled, dynamic_ncols=True)
        self.seen = {t.number for t in before if t.state.is_finished()}
        self.verbose = verbose
        self.run_id = run_id

    def __call__(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                if self.verbose:
                    tqdm.write(cli.trial_line(t), file=sys.stdout)
        finished = count_finished(trials, self.run_id)
        self.bar.update(max(0, min(finished, self.bar.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    jobs, cores = n_workers(args), usable_cores()
    if jobs > cores:
        # Kept as asked (the user may know better), but trials will share the cores.
        print(
            f"hpo.search: warning: --jobs {jobs} is more than the {cores} core(s) this process "
            "may use; the workers will share them and each trial will run slower.",
            file=sys.stderr,
        )
    # The other workers start while this process checks the input and prepares the study.
    with workers_started(jobs):
        try:
            if args.stages is not None:
                return run_stages(args)
            return _search(args)
        except StorageFailure as e:
            kept = "the finished trials are kept"
            hint = "Run the same command again once the cause is gone."
            if e.finished is not None:
                kept = f"{e.finished} of {args.trials} finished and are kept"
                if args.stages is None:
                    hint = "Once the cause is gone, " + _resume_hint(
                        args, args.study, args.trials - e.finished
                    ).replace("To add", "add", 1)
            print(f"hpo.search: error: the storage failed ({e}); {kept}. {hint}", file=sys.stderr)
            return 1


def _search(args: argparse.Namespace) -> int:
    """One study (no ``--stages``): check the input, create or resume the study, run it."""
    url = args.storage
    try:
        exists, stored = _existing_study(url, args.study)
        if exists and stored is None:
            raise ValueError(
                f"--study {args.study!r} exists but was not made by hpo (no stored config)."
            )
        config = resolve_config(args, stored)
        validate(config, args)
    except ValueError as e:
        return cli.fail("hpo.search", e)

    ensure_parent(url)
    with opened_storage(url) as storage:
        study = None if exists else _create_unless_taken(storage, args.study, config)
        if study is None:
            study = optuna.load_study(study_name=args.study, storage=storage)
            if not exists:
                # Another command created the study since this one looked: resume it as that
                # command made it, as if it had been there all along.
                try:
                    config = resolve_config(args, _created_config(study))
                except ValueError as e:
                    return cli.fail("hpo.search", e)
            study.set_user_attr("config", config.to_dict())
        return 0 if run_with_progress(study, config, url, args.trials, args) else 130


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
            raise ValueError(
                f"--study {study.study_name!r} exists but was not made by hpo (no stored config)."
            )
        time.sleep(0.05)
    return config


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which a container may limit."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def n_workers(args: argparse.Namespace) -> int:
    """Worker processes for ``--jobs``: -1 is one per usable core."""
    return usable_cores() if args.jobs == -1 else args.jobs


def run_with_progress(
    study: optuna.Study, config: SearchConfig, url: str, n_trials: int, args
) -> bool:
    """Add ``n_trials`` finished trials to ``study`` with a progress bar; False if interrupted."""
    trials = study.get_trials(deepcopy=False)
    jobs = n_workers(args)
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
            # Nothing to show with -q: no polling, which would cost a read twice a second.
            on_poll=progress if args.verbose or not args.quiet else None,
            run_id=run_id,
        )
    except KeyboardInterrupt:
        progress.close()
        done = count_finished(study.get_trials(deepcopy=False), run_id)
        print(
            f"Interrupted after {done} of {n_trials} trials; running trials were marked failed. "
            + _resume_hint(args, study.study_name, n_trials - done),
            file=sys.stderr,
        )
        return False
    progress.close()
    print_summary(study, url, time.perf_counter() - start)
    return True


def _resume_hint(args: argparse.Namespace, study: str, remaining: int) -> str:
    """What to run to add the trials an interrupted run did not finish."""
    if args.stages is not None:
        # Each stage ends with --trials finished trials of its own: the same command resumes.
        return "Run the same command to resume."
    command = ["python", "-m", "hpo.search", "--storage", display_url(args.storage)]
    command += ["--study", study, "--trials", str(remaining)]
    if args.jobs != 1:
        command += ["--jobs", str(args.jobs)]
    if args.data_dir is not None:
        command += ["--data-dir", args.data_dir]
    return f"To add the remaining {remaining}: {shlex.join(command)}"


def print_summary(study: optuna.Study, url: str, wall: float) -> None:
    trials = study.get_trials(deepcopy=False)
    counts = record.count_states(trials)
    for line in cli.best_lines(trials, 5):
        print(line)
    print(
        f"Study {study.study_name!r}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; "
        f"this run took {wall:.1f} s."
    )
    print(f"Inspect it: optuna-dashboard {display_url(url)} --host 127.0.0.1")


if __name__ == "__main__":
    code = main()
    # Skip the collection at interpreter exit: it walks every object the run made (a third of a
    # second here) to free memory the process is about to give back. Nothing waits on it to be
    # closed: main() closes the storages it opens, the workers theirs.
    gc.freeze()
    sys.exit(code)
