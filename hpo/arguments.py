"""The search's command-line flags, shared by ``hpo.search`` and ``hpo.narrow``, and the
configuration they resolve to.

Both commands take the same groups (run, search, experiment, stages); ``hpo.narrow`` reads some
of them differently (``--study`` is the parent, ``--trials`` runs the new stage only when given)
and hides the ranges, which narrowing derives. :func:`resolve_config` puts the flags on top of a
stored configuration, :func:`validate` checks everything a trial will do with it before anything
is written, and :func:`existing_study` looks a study up without writing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping

import optuna

from hpo import cli
from hpo.checks import check_space
from hpo.config import SearchConfig
from hpo.narrowing import DEFAULT_MARGIN, DEFAULT_TOP_FRACTION
from hpo.progress import usable_cores
from hpo.space import Param, load_space, merge_space, space_from_dict, space_to_dict
from hpo.stages import LATER_SAMPLER, StageOptions
from hpo.storage import DEFAULT_STORAGE, check_storage, has_study, opened_storage
from hpo.study import PRUNERS, SAMPLERS, make_pruner, make_sampler, stored_config
from models.datasets import DATASETS, pool_size

__all__ = [
    "DEFAULT_STUDY",
    "DEFAULT_TRIALS",
    "add_search_arguments",
    "add_stage_arguments",
    "existing_study",
    "resolve_config",
    "stage_options",
    "validate",
]

DEFAULT_STUDY = "default"
DEFAULT_TRIALS = 100

# hpo.narrow's reading of the shared flags.
_NARROW_HELPS = {
    "study": "the finished stage to narrow from (the parent study)",
    "trials": "run the new stage with this many new finished trials (default: only create it)",
    "sampler": f"the new stage's sampler; default: {LATER_SAMPLER}",
    "pruner": "the new stage's pruner; default: the parent's",
    "stages": "create K stages, each narrowed from the one before (K > 1 needs --trials)",
}


def add_search_arguments(parser: argparse.ArgumentParser, *, narrowing: bool = False) -> None:
    """``hpo.search``'s flags, in its groups: run, search, experiment, stages.

    Args:
        parser: The command's parser.
        narrowing: ``hpo.narrow``'s reading: ``--study`` is the parent, ``--trials`` has no
            default (only create the stage), and the ranges (``--lr``, ``--weight-decay``,
            ``--space``) are parsed but hidden: narrowing derives them, and refuses them.
    """
    d = SearchConfig()
    helps = _NARROW_HELPS if narrowing else {}
    ranges_help = argparse.SUPPRESS if narrowing else None
    p = parser
    run = p.add_argument_group("run")
    run.add_argument(
        "--trials",
        type=cli.positive_int,
        default=None if narrowing else DEFAULT_TRIALS,
        help=helps.get(
            "trials", "finished (complete + pruned) trials this run adds, across all workers"
        ),
    )
    run.add_argument(
        "--jobs",
        type=cli.jobs,
        default=None,
        help=(
            "worker processes; default: one per core this process may use "
            f"({usable_cores()} here); 1 = one process, the reproducible run"
        ),
    )
    run.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help=(
            "a Dask scheduler (tcp://HOST:8786): run the --jobs workers as tasks on its cluster; "
            "needs a PostgreSQL --storage and pip install -e '.[cluster]'"
        ),
    )
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
        help=helps.get(
            "study", "study name; an existing study resumes with its stored configuration"
        ),
    )
    run.add_argument(
        "--data-dir", default=None, help="folder with the IDX files of mnist or fashion-mnist"
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="print the book's line for every trial"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="print only the summary")

    search = p.add_argument_group("search (defaults: the stored study's, else these)")
    search.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help=helps.get("sampler", f"default: {d.sampler}"),
    )
    search.add_argument(
        "--pruner", choices=PRUNERS, default=None, help=helps.get("pruner", f"default: {d.pruner}")
    )
    search.add_argument(
        "--lr",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help=ranges_help or "learning-rate range, log scale; default: 1e-6 1e-2",
    )
    search.add_argument(
        "--weight-decay",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help=ranges_help or "weight-decay range, log scale; default: 1e-8 1e-4",
    )
    search.add_argument(
        "--space",
        default=None,
        metavar="FILE",
        help=ranges_help or "TOML search-space file that widens the search (see hpo/space.py)",
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
    add_stage_arguments(p, stages_help=helps.get("stages"))


def add_stage_arguments(parser: argparse.ArgumentParser, *, stages_help: str | None = None) -> None:
    """The staged-search flags (:mod:`hpo.stages`), shared by ``hpo.search`` and ``hpo.narrow``."""
    group = parser.add_argument_group("stages (narrowing the ranges to the best trials)")
    group.add_argument(
        "--stages",
        type=cli.positive_int,
        default=None,
        metavar="K",
        help=stages_help
        or (
            "run K stages as studies STUDY-s1 .. STUDY-sK: stage 1 random (the book's), each later "
            f"one narrowed from the one before, sampler --sampler (default {LATER_SAMPLER}); "
            "--trials is per stage, and the same command resumes or extends the pipeline"
        ),
    )
    top = group.add_mutually_exclusive_group()
    top.add_argument(
        "--top",
        type=cli.positive_int,
        default=None,
        metavar="K",
        help="the K best complete trials define the new ranges",
    )
    top.add_argument(
        "--top-fraction",
        type=cli.fraction,
        default=None,
        metavar="F",
        help=f"... or this share of the finished trials; default: {DEFAULT_TOP_FRACTION}",
    )
    group.add_argument(
        "--margin",
        type=cli.positive_float,
        default=DEFAULT_MARGIN,
        metavar="M",
        help="widen the top trials' span by M x the parent's (log) range on each side",
    )


def _space(args, base: dict[str, Param]) -> dict[str, Param]:
    if isinstance(args.space, Mapping):  # run_search(space={...}): the tables of a file
        space = merge_space(args.space, base)
    else:
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
    # Only the size is needed here (the workers load the data); this also writes the .npy cache
    # they open.
    n_samples = pool_size(config.dataset, args.data_dir)
    if config.train_size > n_samples:
        raise ValueError(
            f"--train-size: `train_size <= {n_samples}` (the {config.dataset} samples) must "
            f"hold, but got {config.train_size}."
        )
    n_val = int(config.train_size * config.val_rate)
    if not 0 < n_val < config.train_size:
        raise ValueError(
            f"--val-rate: train size {config.train_size} x val rate {config.val_rate} must leave "
            f"samples on both sides, but gives {n_val} for validation."
        )


def existing_study(url: str, name: str) -> tuple[bool, SearchConfig | None]:
    """Whether the study exists, and its stored configuration, read without writing."""
    if not check_storage(url, create=True) or not has_study(url, name):
        return False, None
    with opened_storage(url, read_only=True) as storage:
        return True, stored_config(optuna.load_study(study_name=name, storage=storage))


def stage_options(args: argparse.Namespace) -> StageOptions:
    """The staged-search flags as :class:`hpo.stages.StageOptions`."""
    return StageOptions(
        trials=args.trials,
        top=args.top,
        top_fraction=args.top_fraction,
        margin=args.margin,
        sampler=args.sampler,
        pruner=args.pruner,
    )
