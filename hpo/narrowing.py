"""Narrowing a search space to where a stage's best trials live (the book's ch. 6.5.3).

The book's procedure after a random search: look at the best trials, narrow the ranges to where
they live (its run: Best-1..5 lead to lr 1e-3..1e-2 and weight decay 1e-8..1e-6), and search
again. For every numeric parameter (categorical ones keep their choices):

1. the top complete trials of the parent (:func:`top_trials`): ``top`` of them, or
   ``top_fraction`` of its finished (complete + pruned) trials; pruned, diverged and failed trials
   never define a range (the ranking is :func:`hpo.record.ranked`);
2. their smallest and largest value, on the parameter's scale (log for log parameters);
3. widened on each side by ``margin`` times the width of the parent's range on that scale;
4. clipped to the parent's range, and rounded outward to 3 significant digits (int and stepped
   parameters to their grid);
5. past a crowded edge, moved instead of clipped: the edge rule of :mod:`hpo.edges` (the top
   trials piled in the outer tenth of a range: the new range reaches a quarter of the parent's
   width past that edge, within hard limits). :func:`crowded_edges` says so in words, for the
   search's summary.

Pure functions of trials and spaces: nothing here reads or writes a storage (:mod:`hpo.stages`
does).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo import record
from hpo.edges import EDGE_RULE, FLAGS, crowding, round_outward
from hpo.space import Param

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_TOP_FRACTION",
    "crowded_edges",
    "Narrowing",
    "format_ranges",
    "narrow_param",
    "narrow_space",
    "top_trials",
]

DEFAULT_TOP_FRACTION = 0.1  # the top 10% of a stage's finished trials define the new ranges
DEFAULT_MARGIN = 0.1  # widen by 10% of the parent's (log) range on each side


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
        ranges: Per parameter: the parent's bounds, the top trials' span, the new bounds,
            whether the scale is log, and, when the edge rule moved an edge, ``moved``: which
            edge, how many of the top trials crowded it, from where to where (categorical
            parameters: their choices). The rule itself is stored as ``edge_rule``.
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
            "edge_rule": EDGE_RULE,
            "ranges": self.ranges,
        }


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
    ranked = record.ranked(trials)
    finished = record.finished_count(trials)
    if not ranked:
        states = record.count_states(trials)
        counts = ", ".join(
            f"{states[s]} {s.name.lower()}"
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


def narrow_param(
    param: Param, values: Sequence[float], margin: float, name: str | None = None
) -> Param:
    """A parameter's new range around ``values``, inside ``param``'s own range, or past a
    crowded edge of it (the edge rule, :func:`crowding`; needs the parameter's ``name``).

    Args:
        param: The parent's parameter.
        values: The top trials' values of it (empty: the range is kept).
        margin: Fraction of the parent's range (on its scale) added on each side; > 0.
        name: The parameter's name, for its hard limits; None: no edge moves.

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
        new_low, new_high = round_outward(new_low, down=True), round_outward(new_high, down=False)
    # Contain every top value exactly (a log round trip may not), and never leave the parent.
    new_low = max(low, min(new_low, min(values)))
    new_high = min(high, max(new_high, max(values)))
    moved = crowding(name, param, values) if name is not None else None
    if moved is not None and moved.edge == "high":
        new_high = moved.moved_to
    elif moved is not None:
        new_low = moved.moved_to
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
        new = narrow_param(param, values, margin, name)
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
        c = crowding(name, param, values)
        if c is not None:
            # The edge the rule moved: which one, how crowded, from where to where.
            ranges[name]["moved"] = {
                "edge": c.edge,
                "crowded": [c.count, c.total],
                "from": param.high if c.edge == "high" else param.low,
                "to": c.moved_to,
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


def crowded_edges(
    trials: Sequence[FrozenTrial],
    space: dict[str, Param],
    *,
    top: int | None = None,
    top_fraction: float | None = None,
) -> list[str]:
    """One line per parameter whose best trials crowd an edge of its range, naming the fix.

    The top trials are those :func:`top_trials` picks (by default the top tenth); a study
    without a complete trial has no lines.
    """
    if not record.ranked(trials):
        return []
    best, _ = top_trials(trials, top=top, top_fraction=top_fraction)
    lines = []
    for name, param in space.items():
        values = [t.params[name] for t in best if name in t.params]
        c = crowding(name, param, values)
        if c is None:
            continue
        share = "top" if c.edge == "high" else "bottom"
        bounds = f"({param.low:g} .. {param.high:g})"
        line = (
            f"{name}: {c.count} of the top {c.total} trials lie in the {share} tenth of its range "
            f"{bounds}"
        )
        edge = param.high if c.edge == "high" else param.low
        if c.moved_to == edge:
            lines.append(f"{line}; that edge is at its hard limit ({edge:g}).")
            continue
        new = (param.low, c.moved_to) if c.edge == "high" else (c.moved_to, param.high)
        if name in FLAGS:
            fix = f"{FLAGS[name]} {new[0]:g} {new[1]:g}"
        else:
            fix = f"a --space file: {name} from {new[0]:g} to {new[1]:g}"
        lines.append(f"{line}; widen it with {fix}.")
    return lines


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
        top = _bounds(r["top"])
        if "moved" in r:
            m = r["moved"]
            count, total = m["crowded"]
            top += f" ({count} of {total} at the {m['edge']} edge: moved past it)"
        rows.append((name, _bounds(r["parent"]) + scale, _bounds(r["new"]) + scale, top))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
