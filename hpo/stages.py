"""Staged search: each stage a study, narrowed from the one before and seeded with its trials.

A stage is a study; the next stage is a NEW study, linked to its parent, never the same study with
changed distributions: Optuna's TPE silently degrades when a parameter's range changes within a
study (optuna issues 822 and 1553). The child is seeded with the parent's trials that lie inside
its ranges (:func:`seed_trials`), so a Bayesian sampler starts informed, and by default it
searches with TPE. The ranges come from :mod:`hpo.narrowing`.

The lineage is stored in study user attrs (``parent_study``, ``stage``, ``narrowing``) and, on a
seeded trial, the trial user attr ``seeded_from``. :func:`run_stages` is the one pipeline that
``python -m hpo.search --stages K`` and ``python -m hpo.narrow`` run; how a stage's trials are run
(workers, progress bar) is the caller's ``run``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import record
from hpo.config import SearchConfig
from hpo.narrowing import DEFAULT_MARGIN, Narrowing, format_ranges, narrow_space
from hpo.record import SEEDED_ATTR
from hpo.results import load_study
from hpo.space import Param, space_from_dict, space_to_dict
from hpo.storage import display_url
from hpo.study import create_study, store_config, stored_config

__all__ = [
    "FIRST_SAMPLER",
    "LATER_SAMPLER",
    "NARROWING_ATTR",
    "PARENT_ATTR",
    "SEEDED_ATTR",
    "STAGE_ATTR",
    "CannotNarrow",
    "Plan",
    "StageOptions",
    "StagesRun",
    "create_stage",
    "is_seeded",
    "lineage",
    "load_search_study",
    "own_finished",
    "plan_lines",
    "plan_stage",
    "run_stages",
    "seed_trials",
    "stage_names",
    "stage_number",
]

logger = logging.getLogger(__name__)

FIRST_SAMPLER = "random"  # stage 1 of --stages searches as the book does
LATER_SAMPLER = "tpe"  # later stages start from seeded trials: Bayesian search pays off

# Study user attrs of a stage, and the trial user attr of a seeded trial.
PARENT_ATTR = "parent_study"
STAGE_ATTR = "stage"
NARROWING_ATTR = "narrowing"

# Runs a stage: adds that many finished trials to the study; False if interrupted.
RunStage = Callable[[optuna.Study, SearchConfig, int], bool]


def stage_number(study: optuna.Study) -> int:
    """A study's stage: its user attr ``stage``, or 1 for a study made by plain ``hpo.search``."""
    return int(study.user_attrs.get(STAGE_ATTR, 1))


def is_seeded(trial: FrozenTrial) -> bool:
    """Whether a trial was copied from the parent stage rather than run in this study."""
    return SEEDED_ATTR in trial.user_attrs


def own_finished(study: optuna.Study) -> int:
    """Finished trials the study ran itself (seeded ones do not count)."""
    return record.finished_count(t for t in study.get_trials(deepcopy=False) if not is_seeded(t))


def _inside(param: Param, value: Any) -> bool:
    if param.choices is not None:
        return value in param.choices
    return param.low <= value <= param.high


def seed_trials(
    trials: Sequence[FrozenTrial], space: dict[str, Param], parent: str
) -> list[FrozenTrial]:
    """Copies of the parent's finished trials that lie inside ``space``, for ``add_trials``.

    A copy has the child's distributions and the original's state, value, intermediate values,
    user attrs (plus ``seeded_from``: the parent study and trial number) and the pruner's rung
    records, so that samplers and pruners of the child see it as one of its own trials.
    Failed and running trials are not copied.
    """
    distributions = {name: param.distribution() for name, param in space.items()}
    seeds = []
    for t in trials:
        if t.state not in record.FINISHED:
            continue
        if any(name not in space or not _inside(space[name], v) for name, v in t.params.items()):
            continue
        seeds.append(
            optuna.trial.create_trial(
                state=t.state,
                value=t.value,
                params=dict(t.params),
                distributions={name: distributions[name] for name in t.params},
                intermediate_values=dict(t.intermediate_values),
                user_attrs={**t.user_attrs, SEEDED_ATTR: {"study": parent, "trial": t.number}},
                # SuccessiveHalving/Hyperband records: the child's pruner ranks against them.
                system_attrs={
                    k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")
                },
            )
        )
    return seeds


def create_stage(
    storage: optuna.storages.BaseStorage,
    name: str,
    config: SearchConfig,
    narrowing: Narrowing,
    seeds: Sequence[FrozenTrial],
) -> optuna.Study:
    """Create the child stage: its own configuration, its parent link, its seeded trials.

    Args:
        storage: Where the parent lives.
        name: The child's study name (must not exist).
        config: The child's full configuration (narrowed space, its sampler and pruner).
        narrowing: How the ranges were derived (:func:`narrow_space`).
        seeds: The parent's trials inside the new ranges (:func:`seed_trials`).
    """
    study = create_study(storage, name, config)
    study.set_user_attr(PARENT_ATTR, narrowing.parent)
    study.set_user_attr(STAGE_ATTR, narrowing.stage)
    study.set_user_attr(NARROWING_ATTR, narrowing.to_dict())
    study.add_trials(seeds)
    logger.info(
        "Created stage %d %r from %r, seeded with %d trials.",
        narrowing.stage,
        name,
        narrowing.parent,
        len(seeds),
    )
    return study


def stage_names(parent: str, parent_stage: int, count: int) -> list[str]:
    """Names of the ``count`` stages after ``parent``: ``book-s1`` (or ``book``) -> ``book-s2``."""
    base = re.sub(rf"-s{parent_stage}$", "", parent)
    return [f"{base}-s{parent_stage + i}" for i in range(1, count + 1)]


def lineage(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.Study]:
    """The study ``name`` and its ancestors through their parent links, stage 1 first.

    Raises:
        ValueError: If a parent link names a study that is not in the storage, or loops.
    """
    names = {s.study_name for s in storage.get_all_studies()}
    chain: list[optuna.Study] = []
    while name is not None:
        if name not in names:
            raise ValueError(f"Stage {name!r} (a parent link) is not in the storage.")
        if any(s.study_name == name for s in chain):
            raise ValueError(f"Parent links loop back to {name!r}.")
        study = optuna.load_study(study_name=name, storage=storage)
        chain.append(study)
        name = study.user_attrs.get(PARENT_ATTR)
    return chain[::-1]


def load_search_study(storage: optuna.storages.BaseStorage, name: str, url: str) -> optuna.Study:
    """The study ``name``, made by ``hpo.search`` (it has a stored configuration).

    Raises:
        ValueError: If the study is not in the storage (the message lists those that are), or
            has no stored configuration.
    """
    study = load_study(storage, name, display_url(url))
    if stored_config(study) is None:
        raise ValueError(
            f"Study {name!r} was not made by hpo (no stored config), so its space is unknown."
        )
    return study


@dataclass(frozen=True)
class StageOptions:
    """How a pipeline narrows and runs its stages.

    Attributes:
        trials: Finished trials each stage runs itself (seeded ones do not count); None: only
            create the first stage.
        top: The ``top`` best complete trials define the new ranges ...
        top_fraction: ... or this share of the finished trials (default: the narrowing's).
        margin: Widen the top trials' span by this share of the parent's range on each side.
        sampler: The later stages' sampler; default :data:`LATER_SAMPLER`.
        pruner: The later stages' pruner; default: the parent's.
    """

    trials: int | None
    top: int | None = None
    top_fraction: float | None = None
    margin: float = DEFAULT_MARGIN
    sampler: str | None = None
    pruner: str | None = None


@dataclass
class Plan:
    """One stage to create: under which name, with what configuration, ranges and seeds."""

    name: str
    config: SearchConfig
    narrowing: Narrowing
    seeds: list[FrozenTrial]


def plan_stage(
    parent: optuna.Study, name: str, config: SearchConfig, options: StageOptions
) -> Plan:
    """The child of ``parent``: narrowed space, seeded trials, its config. Writes nothing.

    Args:
        parent: The stage to narrow from.
        name: The child's study name.
        config: The parent's configuration (with the user's flags on top).
        options: The narrowing rule, and the child's sampler and pruner.

    Raises:
        ValueError: If the parent has no complete trial, or an option breaks its rule.
    """
    trials = parent.get_trials(deepcopy=False)
    narrowing = narrow_space(
        space_from_dict(config.space),
        trials,
        parent=parent.study_name,
        stage=stage_number(parent) + 1,
        top=options.top,
        top_fraction=options.top_fraction,
        margin=options.margin,
    )
    child = dataclasses.replace(
        config,
        space=space_to_dict(narrowing.space),
        sampler=options.sampler or LATER_SAMPLER,
        pruner=options.pruner or config.pruner,
    )
    return Plan(name, child, narrowing, seed_trials(trials, narrowing.space, parent.study_name))


def plan_lines(plan: Plan) -> list[str]:
    """What a stage is made of, for the user: its rule, the ranges side by side, its seeds."""
    n = plan.narrowing
    complete = record.count_states(plan.seeds)[TrialState.COMPLETE]
    return [
        f"Stage {n.stage} {plan.name!r} from {n.parent!r}: {n.rule}, margin {n.margin:g}.",
        *("  " + line for line in format_ranges(n, plan.name)),
        f"  seeded with the parent's {len(plan.seeds)} finished trials inside the new ranges "
        f"({complete} complete, {len(plan.seeds) - complete} pruned); "
        f"sampler {plan.config.sampler}, pruner {plan.config.pruner}.",
    ]


class CannotNarrow(Exception):
    """A stage of a pipeline has nothing to narrow from (no complete trial); the message says so.

    Not a ``ValueError``: the input was fine, the earlier stage's trials were not (exit code 1).
    """

    def __init__(self, study: str, reason: str) -> None:
        super().__init__(f"cannot narrow {study!r}: {reason}")
        self.study = study


@dataclass(frozen=True)
class StagesRun:
    """What a pipeline did.

    Attributes:
        completed: False if a stage's run was interrupted.
        best: The best trial the stages ran themselves and its stage's name (ties: the earlier
            stage), or None.
    """

    completed: bool
    best: tuple[FrozenTrial, str] | None = None


def run_stages(
    storage: optuna.storages.BaseStorage,
    names: Sequence[str],
    config: SearchConfig,
    options: StageOptions,
    *,
    run: RunStage,
    echo: Callable[[str], None] = logger.info,
    first: Plan | None = None,
) -> StagesRun:
    """Create (or resume) the stages ``names`` in turn, each narrowed from the one before.

    A stage that exists is resumed with its stored configuration (later stages: with
    ``options.sampler`` and ``options.pruner`` on top); a new first stage is created with
    ``config``, unless ``first`` plans it (then it is narrowed from ``first``'s parent); every
    other new stage is narrowed from the stage before. Each stage then runs until it has
    ``options.trials`` finished trials of its own, so the same call resumes an interrupted
    pipeline and more names extend a finished one.

    Args:
        storage: The (writable) storage of every stage.
        names: The stages' study names, in order.
        config: The first stage's configuration.
        options: The narrowing rule, trials per stage, later stages' sampler and pruner.
        run: Adds ``n`` finished trials to a study; False if interrupted.
        echo: Where the lines for the user go (the CLIs: ``print``).
        first: The first stage's plan, made beforehand (``hpo.narrow`` checks it before it
            writes anything).

    Raises:
        CannotNarrow: If a stage has no complete trial for the next one.
    """
    existing = {s.study_name for s in storage.get_all_studies()}
    offset = first.narrowing.stage - 1 if first is not None else 0
    best: list[tuple[FrozenTrial, str]] = []
    study: optuna.Study | None = None
    for k, name in enumerate(names, start=1):
        plan = first if k == 1 else None
        if plan is None and name in existing:
            study = optuna.load_study(study_name=name, storage=storage)
            if k > 1:
                kept = stored_config(study)
                config = dataclasses.replace(
                    kept,
                    sampler=options.sampler or kept.sampler,
                    pruner=options.pruner or kept.pruner,
                )
            store_config(study, config)
        elif plan is None and study is None:
            study = create_study(storage, name, config)
        else:
            if plan is None:
                try:
                    plan = plan_stage(study, name, config, options)
                except ValueError as e:
                    raise CannotNarrow(study.study_name, str(e)) from e
            for line in plan_lines(plan):
                echo(line)
            study = create_stage(storage, name, plan.config, plan.narrowing, plan.seeds)
            config = plan.config
        if options.trials is None:
            return StagesRun(True)
        remaining = options.trials - own_finished(study)
        number = offset + k
        if remaining <= 0:
            echo(f"Stage {number} {name!r} has its {options.trials} trials already.")
        else:
            if plan is None:
                echo(f"Stage {number} {name!r}: {config.sampler} sampler, {config.pruner} pruner.")
            if not run(study, config, remaining):
                return StagesRun(False)
        own = [t for t in study.get_trials(deepcopy=False) if not is_seeded(t)]
        best += [(t, name) for t in record.ranked(own)[:1]]
    return StagesRun(True, max(best, key=lambda b: b[0].value) if best else None)
