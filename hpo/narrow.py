"""``python -m hpo.narrow``: the next stage of a search, in the ranges where the best trials live.

The book's procedure after a random search (ch. 6.5.3): look at the best trials, narrow the ranges
to where they live (its run: Best-1..5 lead to lr 1e-3..1e-2 and weight decay 1e-8..1e-6), and
search again. Here a stage is a study; the next stage is a NEW study, linked to its parent, never
the same study with changed distributions: Optuna's TPE silently degrades when a parameter's range
changes within a study (optuna issues 822 and 1553). The child is seeded with the parent's trials
that lie inside its ranges, so a Bayesian sampler starts informed, and by default it searches with
TPE.

How the ranges are derived, for every numeric parameter (categorical ones keep their choices):

1. the top complete trials of the parent: ``--top K``, or ``--top-fraction F`` of its finished
   (complete + pruned) trials; pruned, diverged and failed trials never define a range;
2. their smallest and largest value, on the parameter's scale (log for log parameters);
3. widened on each side by ``--margin`` times the width of the parent's range on that scale;
4. clipped to the parent's range, and rounded outward to 3 significant digits (int and stepped
   parameters to their grid).

Examples::

    python -m hpo.narrow --study default                       # show the narrowed ranges, create
    python -m hpo.narrow --study default --trials 100          # ... and run the stage with TPE
    python -m hpo.narrow --study default --top 5 --margin 0.05 --trials 100 --jobs 2
    python -m hpo.search --study book --stages 3 --trials 100  # the whole pipeline: book-s1..s3
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import cli, search
from hpo.config import SearchConfig
from hpo.results import load_study, open_readonly
from hpo.runner import FINISHED
from hpo.space import Param, space_from_dict, space_to_dict
from hpo.storage import check_storage, display_url, ensure_parent, opened_storage
from hpo.study import create_study, make_sampler, stored_config

logger = logging.getLogger(__name__)

DEFAULT_TOP_FRACTION = 0.1  # the top 10% of a stage's finished trials define the new ranges
DEFAULT_MARGIN = 0.1  # widen by 10% of the parent's (log) range on each side
FIRST_SAMPLER = "random"  # stage 1 of --stages searches as the book does
LATER_SAMPLER = "tpe"  # later stages start from seeded trials: Bayesian search pays off

# Study user attrs of a stage, and the trial user attr of a seeded trial.
PARENT_ATTR = "parent_study"
STAGE_ATTR = "stage"
NARROWING_ATTR = "narrowing"
SEEDED_ATTR = "seeded_from"

_SIGNIFICANT = 3  # digits the new float bounds are rounded (outward) to, for readable configs


@dataclass(frozen=True)
class Narrowing:
    """The next stage's ranges and how they were derived.

    Attributes:
        parent: The parent study's name.
        stage: The child's stage number (the parent's plus one).
        space: The child's search space.
        top_trials: Numbers of the parent's trials that defined the ranges, best first.
        rule: How many top trials were taken, in words.
        margin: The margin, as a fraction of the parent's range on each side.
        ranges: Per parameter: the parent's bounds, the top trials' span, the new bounds, and
            whether the scale is log (categorical parameters: their choices).
    """

    parent: str
    stage: int
    space: dict[str, Param]
    top_trials: list[int]
    rule: str
    margin: float
    ranges: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The study user attr ``narrowing`` (JSON-friendly)."""
        return {
            "parent": self.parent,
            "top_trials": self.top_trials,
            "rule": self.rule,
            "margin": self.margin,
            "ranges": self.ranges,
        }


def stage_number(study: optuna.Study) -> int:
    """A study's stage: its user attr ``stage``, or 1 for a study made by plain ``hpo.search``."""
    return int(study.user_attrs.get(STAGE_ATTR, 1))


def is_seeded(trial: FrozenTrial) -> bool:
    """Whether a trial was copied from the parent stage rather than run in this study."""
    return SEEDED_ATTR in trial.user_attrs


def ranked_complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials, best first (ties: the earlier trial first).

    Diverged trials end pruned (hpo.objective), but a value that is not finite or a
    ``diverged`` attr never ranks, whatever the state says.
    """
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
        and "diverged" not in t.user_attrs
    ]
    return sorted(complete, key=lambda t: (-t.value, t.number))


def top_trials(
    trials: Sequence[FrozenTrial], *, top: int | None = None, top_fraction: float | None = None
) -> tuple[list[FrozenTrial], str]:
    """The complete trials that define the next stage's ranges, best first.

    Args:
        trials: A stage's trials, in any state.
        top: Take this many complete trials (at most all of them).
        top_fraction: Else take this share of the finished (complete + pruned) trials, at least
            one; pruned trials rank below complete ones, so only complete trials are taken.
            Default :data:`DEFAULT_TOP_FRACTION`.

    Returns:
        The trials, and the rule that chose them in words.

    Raises:
        ValueError: If both or bad counts are given, or no trial is complete.
    """
    if top is not None and top_fraction is not None:
        raise ValueError(
            f"Give `top` or `top_fraction`, not both, but got ({top=}, {top_fraction=})."
        )
    if top is not None and top < 1:
        raise ValueError(f"`top >= 1` must hold, but got {top=}.")
    if top_fraction is not None and not 0 < top_fraction <= 1:
        raise ValueError(f"`0 < top_fraction <= 1` must hold, but got {top_fraction=}.")
    ranked = ranked_complete(trials)
    finished = sum(t.state in FINISHED for t in trials)
    if not ranked:
        counts = ", ".join(
            f"{sum(t.state == s for t in trials)} {s.name.lower()}"
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        raise ValueError(
            f"Narrowing needs at least one complete trial (pruned, diverged and failed ones never "
            f"define a range), but the study has {counts}."
        )
    if top is not None:
        k = min(top, len(ranked))
        rule = f"top {k} of {len(ranked)} complete trials (--top {top})"
    else:
        fraction = DEFAULT_TOP_FRACTION if top_fraction is None else top_fraction
        k = min(max(1, round(fraction * finished)), len(ranked))
        rule = (
            f"top {k} of {len(ranked)} complete trials "
            f"(top fraction {fraction:g} of {finished} finished)"
        )
    return ranked[:k], rule


def _round_outward(x: float, down: bool) -> float:
    """``x`` rounded to a few significant digits, never inward (down: ``<= x``, else ``>= x``)."""
    if x == 0 or not math.isfinite(x):
        return x
    r = float(f"{x:.{_SIGNIFICANT}g}")
    if (r > x) if down else (r < x):
        ulp = 10.0 ** (math.floor(math.log10(abs(r))) - _SIGNIFICANT + 1)
        r = float(f"{(r - ulp) if down else (r + ulp):.{_SIGNIFICANT}g}")
    return r


def narrow_param(param: Param, values: Sequence[float], margin: float) -> Param:
    """A parameter's new range around ``values``, inside ``param``'s own range.

    Args:
        param: The parent's parameter.
        values: The top trials' values of it (empty: the range is kept).
        margin: Fraction of the parent's range (on its scale) added on each side; > 0.

    Returns:
        The narrowed parameter: the same kind, scale, step and condition. Categorical
        parameters are returned unchanged.

    Raises:
        ValueError: If ``margin`` is not positive.
    """
    if not margin > 0:
        raise ValueError(f"`margin > 0` must hold (a range needs a width), but got {margin=}.")
    if param.choices is not None or not values:
        return param
    low, high = param.low, param.high
    to_scale = math.log if param.log else float
    from_scale = math.exp if param.log else float
    lo, hi = to_scale(min(values)), to_scale(max(values))
    pad = margin * (to_scale(high) - to_scale(low))
    new_low = from_scale(max(to_scale(low), lo - pad))
    new_high = from_scale(min(to_scale(high), hi + pad))
    if param.is_int:
        step = 1 if param.step is None else int(param.step)
        new_low = low + math.floor((new_low - low) / step) * step
        new_high = low + math.ceil((new_high - low) / step) * step
    elif param.step is not None:
        # Stay on the parent's grid, so that every seeded value is a value of the child.
        new_low = low + math.floor(round((new_low - low) / param.step, 9)) * param.step
        new_high = low + math.ceil(round((new_high - low) / param.step, 9)) * param.step
    else:
        new_low, new_high = _round_outward(new_low, down=True), _round_outward(new_high, down=False)
    # Contain every top value exactly (a log round trip may not), and never leave the parent.
    new_low = max(low, min(new_low, min(values)))
    new_high = min(high, max(new_high, max(values)))
    if param.is_int:
        new_low, new_high = int(new_low), int(new_high)
    if not new_low < new_high:
        return param
    return dataclasses.replace(param, low=new_low, high=new_high)


def narrow_space(
    space: dict[str, Param],
    trials: Sequence[FrozenTrial],
    *,
    parent: str = "",
    stage: int = 2,
    top: int | None = None,
    top_fraction: float | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Narrowing:
    """The next stage's space, from a stage's space and trials.

    Args:
        space: The stage's space.
        trials: The stage's trials, in any state; only complete ones define ranges.
        parent: The stage's study name, recorded in the result.
        stage: The child's stage number, recorded in the result.
        top, top_fraction: Which trials define the ranges (:func:`top_trials`).
        margin: Fraction of each parent range added on each side (:func:`narrow_param`).

    Raises:
        ValueError: If no trial is complete, or an argument breaks its rule.
    """
    if not margin > 0:
        raise ValueError(f"`margin > 0` must hold (a range needs a width), but got {margin=}.")
    best, rule = top_trials(trials, top=top, top_fraction=top_fraction)
    new_space: dict[str, Param] = {}
    ranges: dict[str, dict[str, Any]] = {}
    for name, param in space.items():
        values = [t.params[name] for t in best if name in t.params]
        new = narrow_param(param, values, margin)
        new_space[name] = new
        if param.choices is not None:
            ranges[name] = {"choices": list(param.choices)}
            continue
        ranges[name] = {
            "parent": [param.low, param.high],
            "top": [min(values), max(values)] if values else None,
            "new": [new.low, new.high],
            "log": param.log,
        }
    return Narrowing(
        parent=parent,
        stage=stage,
        space=new_space,
        top_trials=[t.number for t in best],
        rule=rule,
        margin=margin,
        ranges=ranges,
    )


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
        if t.state not in FINISHED:
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


def _bounds(spec: dict[str, Any]) -> str:
    if spec is None:
        return "-"
    low, high = spec
    return f"{low:.3g} .. {high:.3g}"


def format_ranges(narrowing: Narrowing, child: str) -> list[str]:
    """The parent's and the child's ranges side by side, with the top trials' span."""
    header = (
        "parameter",
        f"{narrowing.parent} (stage {narrowing.stage - 1})",
        f"{child} (stage {narrowing.stage})",
        "top trials",
    )
    rows = [header]
    for name, r in narrowing.ranges.items():
        if "choices" in r:
            choices = ", ".join(map(str, r["choices"]))
            rows.append((name, choices, choices, "(choices kept)"))
            continue
        scale = " (log)" if r["log"] else ""
        rows.append(
            (name, _bounds(r["parent"]) + scale, _bounds(r["new"]) + scale, _bounds(r["top"]))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


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


# ---------------------------------------------------------------------------------------------
# CLI: python -m hpo.narrow, and python -m hpo.search --stages


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The staged-search flags, shared by ``hpo.search`` and ``hpo.narrow``."""
    group = parser.add_argument_group("stages (narrowing the ranges to the best trials)")
    group.add_argument(
        "--stages",
        type=cli.positive_int,
        default=None,
        metavar="K",
        help=(
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


def build_parser() -> cli.Parser:
    """``hpo.search``'s flags, read as: narrow from ``--study``, then search the child."""
    p = search.build_parser()
    p.prog = "python -m hpo.narrow"
    p.description = (
        "Create the next stage of a search: a new study in the ranges where the best trials of "
        "--study live, seeded with its trials there; run it when --trials is given."
    )
    p.set_defaults(trials=None)
    helps = {
        "study": "the finished stage to narrow from (the parent study)",
        "trials": "run the new stage with this many new finished trials (default: only create it)",
        "sampler": f"the new stage's sampler; default: {LATER_SAMPLER}",
        "pruner": "the new stage's pruner; default: the parent's",
        "stages": "create K stages, each narrowed from the one before (K > 1 needs --trials)",
    }
    for action in p._actions:
        if action.dest in helps:
            action.help = helps[action.dest]
        elif action.dest in ("lr", "weight_decay", "space"):
            action.help = argparse.SUPPRESS  # narrowing derives the ranges (refused if given)
    p.add_argument(
        "--child",
        default=None,
        metavar="NAME",
        help="the new stage's study name; default: the parent's with -s<stage> (book-s2)",
    )
    return p


@dataclass
class _Plan:
    """One stage to create: from which parent, under which name, with what."""

    name: str
    config: SearchConfig
    narrowing: Narrowing
    seeds: list[FrozenTrial]


def _plan(parent: optuna.Study, name: str, config: SearchConfig, args) -> _Plan:
    """The child of ``parent``: narrowed space, seeded trials, its config. Writes nothing."""
    trials = parent.get_trials(deepcopy=False)
    narrowing = narrow_space(
        space_from_dict(config.space),
        trials,
        parent=parent.study_name,
        stage=stage_number(parent) + 1,
        top=args.top,
        top_fraction=args.top_fraction,
        margin=args.margin,
    )
    child = dataclasses.replace(
        config,
        space=space_to_dict(narrowing.space),
        sampler=args.sampler or LATER_SAMPLER,
        pruner=args.pruner or config.pruner,
    )
    return _Plan(name, child, narrowing, seed_trials(trials, narrowing.space, parent.study_name))


def _print_plan(plan: _Plan) -> None:
    n = plan.narrowing
    print(f"Stage {n.stage} {plan.name!r} from {n.parent!r}: {n.rule}, margin {n.margin:g}.")
    for line in format_ranges(n, plan.name):
        print("  " + line)
    complete = sum(t.state == TrialState.COMPLETE for t in plan.seeds)
    print(
        f"  seeded with the parent's {len(plan.seeds)} finished trials inside the new ranges "
        f"({complete} complete, {len(plan.seeds) - complete} pruned); "
        f"sampler {plan.config.sampler}, pruner {plan.config.pruner}."
    )


def _own_finished(study: optuna.Study) -> int:
    return sum(t.state in FINISHED and not is_seeded(t) for t in study.get_trials(deepcopy=False))


def _error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return cli.EXIT_BAD_INPUT


def _refuse_space_flags(args) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    prog = "hpo.narrow"
    url = args.storage
    stages = args.stages or 1
    try:
        _refuse_space_flags(args)
        if stages > 1 and args.trials is None:
            raise ValueError(
                f"--stages {stages}: a stage is narrowed from the trials of the one before, so "
                "more than one stage needs --trials."
            )
        if stages > 1 and args.child is not None:
            raise ValueError(
                f"--child names one stage, but --stages {stages} creates {stages}; the names "
                "follow the parent's (book-s2, book-s3, ...)."
            )
        with open_readonly(url) as storage:
            parent = load_search_study(storage, args.study, url)
            existing = {s.study_name for s in storage.get_all_studies()}
            config = search.resolve_config(args, stored_config(parent))
            names = (
                [args.child]
                if args.child
                else stage_names(args.study, stage_number(parent), stages)
            )
            taken = [n for n in names if n in existing]
            if taken:
                raise ValueError(
                    f"Study {taken[0]!r} exists already; add trials to it with python -m "
                    f"hpo.search --study {taken[0]} --trials N, or name the stage with --child."
                )
            plan = _plan(parent, names[0], config, args)
        check_storage(url, create=True)  # narrowing writes: the file and folder must be writable
        make_sampler(plan.config.sampler, 0)
        if args.trials is not None:
            search.validate(plan.config, args)
    except ValueError as e:
        return _error(prog, str(e))
    ensure_parent(url)
    with opened_storage(url) as storage:
        return _stages(storage, plan, names[1:], url, args)


def _stages(
    storage: optuna.storages.BaseStorage, plan: _Plan, later: list[str], url: str, args
) -> int:
    """Create and run ``plan``'s stage, then narrow and run one stage per name in ``later``."""
    while True:
        _print_plan(plan)
        study = create_stage(storage, plan.name, plan.config, plan.narrowing, plan.seeds)
        if args.trials is None:
            print(
                f"Created {plan.name!r}; run it: python -m hpo.search --storage "
                f"{display_url(url)} --study {plan.name} --trials N"
            )
            return 0
        if not search.run_with_progress(study, plan.config, url, args.trials, args):
            return 130
        if not later:
            return 0
        try:
            plan = _plan(study, later.pop(0), plan.config, args)
        except ValueError as e:
            print(f"hpo.narrow: error: cannot narrow {study.study_name!r}: {e}", file=sys.stderr)
            return 1


def run_stages(args: argparse.Namespace) -> int:
    """``python -m hpo.search --stages K``: stage 1 as the book does, then K - 1 narrowed stages.

    Stage 1 (``STUDY-s1``) samples at random in the given ranges; every later stage is narrowed
    from the one before and searches with ``--sampler`` (default TPE). Each stage ends with
    ``--trials`` finished trials of its own (seeded trials do not count), so the same command
    resumes an interrupted pipeline and a larger K extends a finished one. Prints as
    ``hpo.search`` does.

    Returns:
        The exit code: 0, 2 for bad input, 1 if a stage has no complete trial to narrow from,
        130 if interrupted.
    """
    url = args.storage
    names = [f"{args.study}-s{k}" for k in range(1, args.stages + 1)]
    try:
        exists, stored = search._existing_study(url, names[0])
        if exists and stored is None:
            raise ValueError(
                f"--study {names[0]!r} exists but was not made by hpo (no stored config)."
            )
        # --sampler is the later stages' sampler; stage 1 keeps the book's (or its stored) one.
        first = argparse.Namespace(**{**vars(args), "sampler": None, "study": names[0]})
        config = search.resolve_config(first, stored)
        if not exists:
            config = dataclasses.replace(config, sampler=FIRST_SAMPLER)
        make_sampler(args.sampler or LATER_SAMPLER, 0)
        search.validate(config, args)
    except ValueError as e:
        return _error("hpo.search", str(e))

    ensure_parent(url)
    with opened_storage(url) as storage:
        return _run_stages(storage, names, config, args)


def _run_stages(
    storage: optuna.storages.BaseStorage, names: list[str], config: SearchConfig, args
) -> int:
    """``run_stages`` once its arguments are checked: each stage in turn, then the best of all."""
    url = args.storage
    existing = {s.study_name for s in storage.get_all_studies()}
    best: list[tuple[FrozenTrial, str]] = []
    study: optuna.Study | None = None
    for k, name in enumerate(names, start=1):
        if name in existing:
            study = optuna.load_study(study_name=name, storage=storage)
            if k > 1:
                kept = stored_config(study)
                config = dataclasses.replace(
                    kept, sampler=args.sampler or kept.sampler, pruner=args.pruner or kept.pruner
                )
            study.set_user_attr("config", config.to_dict())
        elif k == 1:
            study = create_study(storage, name, config)
        else:
            try:
                plan = _plan(study, name, config, args)
            except ValueError as e:
                print(
                    f"hpo.search: error: cannot narrow {study.study_name!r}: {e}", file=sys.stderr
                )
                return 1
            _print_plan(plan)
            study = create_stage(storage, name, plan.config, plan.narrowing, plan.seeds)
            config = plan.config
        remaining = args.trials - _own_finished(study)
        if remaining <= 0:
            print(f"Stage {k} {name!r} has its {args.trials} trials already.")
        else:
            if k == 1 or name in existing:
                print(f"Stage {k} {name!r}: {config.sampler} sampler, {config.pruner} pruner.")
            if not search.run_with_progress(study, config, url, remaining, args):
                return 130
        own = [t for t in study.get_trials(deepcopy=False) if not is_seeded(t)]
        best += [(t, name) for t in ranked_complete(own)[:1]]
    if best:
        trial, name = max(best, key=lambda b: b[0].value)
        print(
            f"Best of {len(names)} stages: {name!r} trial {trial.number}, {cli.trial_line(trial)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
