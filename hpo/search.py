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
import sys
import time
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from hpo import cli
from hpo.checks import check_space
from hpo.config import SearchConfig
from hpo.runner import FINISHED, run_study, workers_started
from hpo.space import Param, load_space, space_from_dict, space_to_dict
from hpo.storage import DEFAULT_STORAGE, check_storage, display_url, ensure_parent, opened_storage
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
    path_exists = check_storage(url, create=True)
    if not path_exists:
        return False, None
    with opened_storage(url, read_only=True) as storage:
        names = [
            s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        ]
        if name not in names:
            return False, None
        return True, stored_config(optuna.load_study(study_name=name, storage=storage))


class Progress:
    """One progress bar for the whole run, fed from the storage; -v adds the book's lines."""

    def __init__(
        self, total: int, before: list[optuna.trial.FrozenTrial], verbose: bool, enabled: bool
    ) -> None:
        self.bar = tqdm(total=total, unit="trial", disable=not enabled, dynamic_ncols=True)
        self.start = sum(t.state in FINISHED for t in before)
        self.seen = {t.number for t in before if t.state.is_finished()}
        self.verbose = verbose

    def __call__(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                if self.verbose:
                    tqdm.write(cli.trial_line(t), file=sys.stdout)
        finished = sum(t.state in FINISHED for t in trials) - self.start
        self.bar.update(max(0, min(finished, self.bar.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    # The other workers start while this process checks the input and prepares the study.
    with workers_started(n_workers(args)):
        if args.stages is not None:
            from hpo.narrow import run_stages

            return run_stages(args)
        return _search(args)


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
        if exists:
            study = optuna.load_study(study_name=args.study, storage=storage)
            study.set_user_attr("config", config.to_dict())
        else:
            study = create_study(storage, args.study, config)
        return 0 if run_with_progress(study, config, url, args.trials, args) else 130


def n_workers(args: argparse.Namespace) -> int:
    """Worker processes for ``--jobs``: -1 is one per core."""
    return (os.cpu_count() or 1) if args.jobs == -1 else args.jobs


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
    progress = Progress(n_trials, trials, args.verbose, enabled=not args.quiet)
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
        )
    except KeyboardInterrupt:
        progress.close()
        print(
            "Interrupted; running trials were marked failed. Run the same command to resume.",
            file=sys.stderr,
        )
        return False
    progress.close()
    print_summary(study, url, time.perf_counter() - start)
    return True


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
