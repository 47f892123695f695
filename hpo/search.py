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
import math
import os
import shlex
import sys
import time
import uuid
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from hpo import cli
from hpo.checks import check_space
from hpo.config import SearchConfig
from hpo.runner import StorageFailure, count_finished, run_study, workers_started
from hpo.space import Param, load_space, space_from_dict, space_to_dict
from hpo.storage import (
    DEFAULT_STORAGE,
    check_storage,
    display_url,
    ensure_parent,
    has_study,
    opened_storage,
)
from hpo.study import PRUNERS, SAMPLERS, create_study, make_pruner, make_sampler, stored_config
from models.datasets import DATASETS, load_dataset

logger = logging.getLogger(__name__)

DEFAULT_STUDY = "default"
DEFAULT_TRIALS = 100


def build_parser() -> cli.Parser:
    d = SearchConfig()
    p = cli.Parser(
        prog="python -m hpo.search",
        description="Tune the book's MultiLayerNet with an Optuna study persisted in a database.",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--trials",
        type=cli.positive_int,
        default=DEFAULT_TRIALS,
        help="finished (complete + pruned) trials this run adds, across all workers",
    )
    run.add_argument("--jobs", type=cli.jobs, default=1, help="worker processes; -1 = all cores")
    run.add_argument(
        "--timeout",
        type=cli.positive_float,
        default=None,
        help="seconds after which no new trial starts",
    )
    run.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB storage URL")
    run.add_argument(
        "--study",
        default=DEFAULT_STUDY,
        help="study name; an existing study resumes with its stored configuration",
    )
    run.add_argument(
        "--data-dir", default=None, help="folder with the IDX files of mnist or fashion-mnist"
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="print the book's line for every trial"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="print only the summary")

    search = p.add_argument_group("search (defaults: the stored study's, else these)")
    search.add_argument("--sampler", choices=SAMPLERS, default=None, help=f"default: {d.sampler}")
    search.add_argument("--pruner", choices=PRUNERS, default=None, help=f"default: {d.pruner}")
    search.add_argument(
        "--lr",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="learning-rate range, log scale; default: 1e-6 1e-2",
    )
    search.add_argument(
        "--weight-decay",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="weight-decay range, log scale; default: 1e-8 1e-4",
    )
    search.add_argument(
        "--space",
        default=None,
        metavar="FILE",
        help="TOML search-space file that widens the search (see hpo/space.py)",
    )

    exp = p.add_argument_group("experiment (fixed for a study once created)")
    exp.add_argument("--dataset", choices=DATASETS, default=None, help=f"default: {d.dataset}")
    exp.add_argument(
        "--train-size",
        type=cli.positive_int,
        default=None,
        help=f"samples the search uses; default: {d.train_size}",
    )
    exp.add_argument(
        "--val-rate",
        type=cli.rate,
        default=None,
        help=f"share of them for validation; default: {d.val_rate}",
    )
    exp.add_argument("--seed", type=int, default=None, help=f"default: {d.seed}")
    exp.add_argument("--epochs", type=cli.positive_int, default=None, help=f"default: {d.epochs}")
    exp.add_argument(
        "--batch-size", type=cli.positive_int, default=None, help=f"default: {d.batch_size}"
    )
    exp.add_argument(
        "--hidden",
        type=cli.positive_int,
        nargs="+",
        default=None,
        metavar="WIDTH",
        help="hidden layer widths; default: 100 100 100 100 100 100",
    )
    exp.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
        default=None,
        help=f"default: {d.optimizer}",
    )
    exp.add_argument(
        "--dtype", choices=("float64", "float32"), default=None, help=f"default: {d.dtype}"
    )
    # Staged search (--stages): hpo.narrow owns these flags and builds on this module, hence late.
    from hpo.narrow import add_stage_arguments

    add_stage_arguments(p)
    return p


def _space(args, base: dict[str, Param]) -> dict[str, Param]:
    space = load_space(args.space, base) if args.space else dict(base)
    for name, bounds in (("lr", args.lr), ("weight_decay", args.weight_decay)):
        if bounds is not None:
            flag = "--" + name.replace("_", "-")
            low, high = bounds
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(
                    f"{flag}: LOW and HIGH must be finite numbers, but got ({low=}, {high=})."
                )
            if not low < high:
                raise ValueError(f"{flag}: `LOW < HIGH` must hold, but got ({low=}, {high=}).")
            if low <= 0:
                raise ValueError(f"{flag}: a log scale needs `LOW > 0`, but got {low=}.")
            space[name] = Param(low, high, log=True, when=space.get(name, Param()).when)
    return space


def resolve_config(args, stored: SearchConfig | None) -> SearchConfig:
    """The stored configuration (or the defaults) with the flags the user gave on top.

    Raises:
        ValueError: If a flag contradicts the stored study's experiment.
    """
    base = stored or SearchConfig()
    overrides = {
        "dataset": args.dataset,
        "train_size": args.train_size,
        "val_rate": args.val_rate,
        "seed": args.seed,
        "hidden": args.hidden,
        "optimizer": args.optimizer,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "dtype": args.dtype,
        "sampler": args.sampler,
        "pruner": args.pruner,
    }
    config = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    config.space = space_to_dict(_space(args, space_from_dict(base.space)))
    if stored is not None:
        conflicts = config.conflicts(stored)
        if conflicts:
            name = conflicts[0]
            raise ValueError(
                f"--study {args.study!r} exists with {name}={getattr(stored, name)!r}, but this "
                f"run asks for {name}={getattr(config, name)!r}; use another --study for that."
            )
    return config


def validate(config: SearchConfig, args) -> None:
    """Everything that can be checked before the storage is written to."""
    make_sampler(config.sampler, 0)
    make_pruner(config.pruner, config.epochs)
    check_space(config)
    dataset = load_dataset(config.dataset, args.data_dir, download=True)
    if config.train_size > len(dataset.x):
        raise ValueError(
            f"--train-size: `train_size <= {len(dataset.x)}` (the {config.dataset} samples) must "
            f"hold, but got {config.train_size}."
        )
    n_val = int(config.train_size * config.val_rate)
    if not 0 < n_val < config.train_size:
        raise ValueError(
            f"--val-rate: train size {config.train_size} x val rate {config.val_rate} must leave "
            f"samples on both sides, but gives {n_val} for validation."
        )


def _existing_study(url: str, name: str) -> tuple[bool, SearchConfig | None]:
    """Whether the study exists, and its stored configuration, read without writing."""
    if not check_storage(url, create=True) or not has_study(url, name):
        return False, None
    with opened_storage(url, read_only=True) as storage:
        return True, stored_config(optuna.load_study(study_name=name, storage=storage))


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
                from hpo.narrow import run_stages

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
        print(f"hpo.search: error: {e}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT

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
                    print(f"hpo.search: error: {e}", file=sys.stderr)
                    return cli.EXIT_BAD_INPUT
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
    counts = {
        s: sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
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
