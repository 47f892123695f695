"""The edge rule: top trials crowding an edge of a range move the next stage past it.

A stage's best trials piled against one end of a range say that the best values probably lie
beyond it; shrinking the range around them (:mod:`hpo.narrowing`) would keep the search on the
wrong side. An edge is crowded when more than half of the top trials (and at least 2) lie in the
outer :data:`EDGE_SHARE` (a tenth) of the parent's range on its scale; the next stage's range
then reaches :data:`EDGE_STEP` (a quarter) of the parent's width past it: lr 1e-6 .. 1e-2 crowded
at the top reaches 1e-1. It never leaves the hard limits of :data:`EDGE_LIMITS` (lr <= 1, weight
decay <= 0.1, ...: what keeps the book's SGD training sane), nor what ``models`` accepts; a
parameter with neither keeps its edge. Categorical parameters have no edge.

Pure functions of parameters and values; :func:`hpo.narrowing.crowded_edges` words them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpo.params import PARAMS
from hpo.space import Param

__all__ = ["EDGE_LIMITS", "EDGE_RULE", "EDGE_SHARE", "EDGE_STEP", "FLAGS", "Crowding", "crowding"]

_SIGNIFICANT = 3  # digits the new float bounds are rounded (outward) to, for readable configs

EDGE_SHARE = 0.1  # the outer tenth of a range (on its scale) is its edge
EDGE_STEP = 0.25  # a crowded edge moves out by a quarter of the range's width (on its scale)
# The hard limits a moved edge stays within: beyond them the book's network does not train
# (SGD at lr > 1 diverges from the first epoch; L2 at 0.1 flattens every weight), or the net
# stops being the book's size class. Parameters not listed keep what models accepts, if finite.
EDGE_LIMITS: dict[str, tuple[float, float]] = {
    "lr": (1e-8, 1.0),
    "weight_decay": (1e-12, 1e-1),
    "momentum": (0.0, 0.99),
    "dropout_ratio": (0.0, 0.9),
    "batch_size": (1, 1024),
}
EDGE_RULE = (
    f"an edge is crowded when more than half of the top trials (at least 2) lie in its outer "
    f"{EDGE_SHARE:g} of the range (on its scale); the new range then reaches {EDGE_STEP:g} of the "
    f"parent's width past it, within the hard limits {EDGE_LIMITS}"
)
FLAGS = {"lr": "--lr", "weight_decay": "--weight-decay"}


@dataclass(frozen=True)
class Crowding:
    """Top trials crowding one edge of a parameter's range.

    Attributes:
        edge: "low" or "high".
        count: Top trials in the outer tenth at that edge.
        total: Top trials with a value of the parameter.
        moved_to: Where the edge moves by the edge rule (the hard limit, at most); equal to the
            edge when it sits at the limit already.
    """

    edge: str
    count: int
    total: int
    moved_to: float


def _limits(name: str) -> tuple[float, float]:
    if name in EDGE_LIMITS:
        return EDGE_LIMITS[name]
    spec = PARAMS.get(name)
    interval = spec.interval if spec is not None else None
    if interval is None:
        return (-math.inf, math.inf)
    return (interval.low, interval.high)


def crowding(name: str, param: Param, values: Sequence[float]) -> Crowding | None:
    """Whether the top trials' ``values`` crowd an edge of ``param`` (None: neither, or a
    categorical parameter, which has no edge), and where the edge rule moves it."""
    if param.choices is not None or len(values) < 2:
        return None
    to_scale = math.log if param.log else float
    from_scale = math.exp if param.log else float
    low, high = to_scale(param.low), to_scale(param.high)
    width = high - low
    band = EDGE_SHARE * width
    at_low = sum(to_scale(v) <= low + band for v in values)
    at_high = sum(to_scale(v) >= high - band for v in values)
    limit_low, limit_high = _limits(name)
    for edge, count in (("high", at_high), ("low", at_low)):
        if not (count >= 2 and count > len(values) / 2):
            continue
        if edge == "high":
            moved = min(from_scale(high + EDGE_STEP * width), limit_high)
            moved = max(moved, param.high)
        else:
            moved = min(max(from_scale(low - EDGE_STEP * width), limit_low), param.low)
        moved = _on_grid(param, moved, down=edge == "low")
        return Crowding(edge, count, len(values), moved)
    return None


def _on_grid(param: Param, x: float, down: bool) -> float:
    """``x`` on the parameter's grid (int and stepped parameters) or rounded, toward the range."""
    if param.is_int or param.step is not None:
        step = 1 if param.step is None else param.step
        k = (x - param.low) / step
        k = math.ceil(round(k, 9)) if down else math.floor(round(k, 9))
        value = param.low + k * step
        return int(value) if param.is_int else value
    # Inward rounding keeps a moved edge inside its hard limit.
    return round_outward(x, down=not down)


def round_outward(x: float, down: bool) -> float:
    """``x`` rounded to a few significant digits, never inward (down: ``<= x``, else ``>= x``)."""
    if x == 0 or not math.isfinite(x):
        return x
    r = float(f"{x:.{_SIGNIFICANT}g}")
    if (r > x) if down else (r < x):
        ulp = 10.0 ** (math.floor(math.log10(abs(r))) - _SIGNIFICANT + 1)
        r = float(f"{(r - ulp) if down else (r + ulp):.{_SIGNIFICANT}g}")
    return r
