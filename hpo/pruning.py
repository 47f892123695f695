"""Pruners of the search: one consulted only where it can decide, one on the training loss's
early fall, and one that prunes where any of several would.

Optuna's pruners read the storage on every ``should_prune``: successive halving and Hyperband read
the trial's system attrs (a full reload of the running trial, its intermediate values included),
median and percentile re-read the study's unfinished trials. With one report per epoch that costs
1-2 ms an epoch on SQLite, 10-15% of a trial. Successive halving only ever prunes at its rung
steps (``min_resource * reduction_factor**k``), and the median and percentile pruners only at
their interval steps; asking them nowhere else changes no decision and saves those reads.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

__all__ = [
    "AnyOf",
    "AtSteps",
    "LossFallPruner",
    "PeerPercentilePruner",
    "curve_steps",
    "decision_steps",
    "rung_steps",
]

TRAIN_LOSS = "train_loss"  # the trial user attr holding the training-loss curve (hpo.record)


def curve_steps(pruner: optuna.pruners.BasePruner | None) -> frozenset[int]:
    """The steps after which ``pruner`` reads the running trial's stored training-loss curve.

    The objective stores the curve so far at these steps (one storage write each), so that the
    pruner, which sees only the stored trial, can judge it; other pruners need none.
    """
    return getattr(pruner, "curve_steps", frozenset())


def decision_steps(pruner: optuna.pruners.BasePruner | None) -> frozenset[int] | None:
    """The steps at which ``pruner`` can prune a trial; None: any step.

    ``Trial.should_prune`` reads the running trial back from the storage before it asks the
    pruner, so the objective asks only at these steps: elsewhere the answer is known to be no.
    """
    if pruner is None or isinstance(pruner, optuna.pruners.NopPruner):
        return frozenset()
    return getattr(pruner, "decision_steps", None)


class AtSteps(optuna.pruners.BasePruner):
    """Asks ``pruner`` at ``steps`` only; at every other step the trial continues.

    It assumes a report at every step (the objective reports every epoch), so that a trial's
    last step passes each of ``steps`` when it gets there.

    Args:
        pruner: The pruner that decides.
        steps: The steps at which it is asked (the trial's last reported step); none: never.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, steps: Iterable[int]) -> None:
        self.pruner = pruner
        self.steps = frozenset(int(s) for s in steps)

    @property
    def curve_steps(self) -> frozenset[int]:
        return curve_steps(self.pruner) & self.steps

    @property
    def decision_steps(self) -> frozenset[int]:
        inner = decision_steps(self.pruner)
        return self.steps if inner is None else self.steps & inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step not in self.steps:
            return False
        return self.pruner.prune(study, trial)


class AnyOf(optuna.pruners.BasePruner):
    """Prunes a trial when any of ``pruners`` would, asking them in order.

    Args:
        pruners: The pruners; at least one.

    Raises:
        ValueError: If none is given.
    """

    def __init__(self, *pruners: optuna.pruners.BasePruner) -> None:
        if not pruners:
            raise ValueError(f"`AnyOf` needs at least one pruner, but got {pruners=}.")
        self.pruners = pruners

    @property
    def curve_steps(self) -> frozenset[int]:
        return frozenset().union(*(curve_steps(p) for p in self.pruners))

    @property
    def decision_steps(self) -> frozenset[int] | None:
        steps = [decision_steps(p) for p in self.pruners]
        return None if None in steps else frozenset().union(*steps)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return any(p.prune(study, trial) for p in self.pruners)


class LossFallPruner(optuna.pruners.BasePruner):
    """Prunes, after ``step``, a trial whose training loss has fallen far less than the best's.

    In the book's experiment the validation accuracy of every trial stays near chance (~0.1)
    for the first ~8 of 50 epochs, so it cannot rank trials that early; the training loss
    already moves. The signal is its relative fall, ``1 - loss[step] / loss[1]`` (epochs
    1-based), read from the trial user attr ``train_loss``: measured on 100 default trials, by
    epoch 3 every trial that ended at 0.7 or more had taken 2.6-5.3% off its epoch-1 loss and
    every one that ended at 0.2 or less under 1.6%. A trial is pruned when its fall is below
    ``ratio`` times the median fall of the best trials (the top ``top_fraction`` of them by
    value, at least one) among the completed ones and the other workers' running ones that have
    passed the step, ranked by their best value so far: at the start of a parallel search the
    trial beside the first completed one counts too, where otherwise the next trial would run
    all its epochs unjudged. With one worker no other trial runs, and only completed trials
    count. The objective stays the final validation accuracy; the pruner only decides which
    trials stop.

    Args:
        step: The one step (epoch) at which it judges; >= 2 (a fall needs two epochs).
        ratio: The share of the best trials' median fall a trial must reach; in (0, 1].
        top_fraction: Which completed trials are "the best"; in (0, 1].
        n_startup_trials: No pruning until this many completed trials have a curve that long.

    Raises:
        ValueError: If an argument breaks its rule.
    """

    def __init__(
        self,
        step: int,
        ratio: float = 0.5,
        top_fraction: float = 0.25,
        n_startup_trials: int = 2,
    ) -> None:
        if step < 2:
            raise ValueError(f"`step >= 2` must hold (a fall needs two epochs), but got {step=}.")
        if not 0 < ratio <= 1:
            raise ValueError(f"`0 < ratio <= 1` must hold, but got {ratio=}.")
        if not 0 < top_fraction <= 1:
            raise ValueError(f"`0 < top_fraction <= 1` must hold, but got {top_fraction=}.")
        if n_startup_trials < 1:
            raise ValueError(f"`n_startup_trials >= 1` must hold, but got {n_startup_trials=}.")
        self.step = int(step)
        self.ratio = float(ratio)
        self.top_fraction = float(top_fraction)
        self.n_startup_trials = int(n_startup_trials)

    @property
    def curve_steps(self) -> frozenset[int]:
        return frozenset({self.step})

    decision_steps = curve_steps

    def fall(self, trial: optuna.trial.FrozenTrial) -> float | None:
        """The trial's relative loss fall from epoch 1 to :attr:`step`; None without a curve."""
        losses = trial.user_attrs.get(TRAIN_LOSS)
        if not isinstance(losses, list) or len(losses) < self.step:
            return None
        first, now = losses[0], losses[self.step - 1]
        if not (math.isfinite(first) and math.isfinite(now)) or first <= 0:
            return None
        return 1.0 - now / first

    def threshold(self, study: optuna.Study, number: int | None = None) -> float | None:
        """The fall a trial must reach, from the study's completed trials and running ones
        other than trial ``number``; None: too few yet."""
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best_of = max if maximize else min
        scored = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.state == TrialState.RUNNING and (t.number == number or not t.intermediate_values):
                continue
            value = (
                t.value
                if t.state == TrialState.COMPLETE
                else best_of(t.intermediate_values.values())
            )
            if (f := self.fall(t)) is not None:
                scored.append((value, f))
        if len(scored) < self.n_startup_trials:
            return None
        scored.sort(key=lambda vf: vf[0], reverse=maximize)
        best = scored[: max(1, math.ceil(self.top_fraction * len(scored)))]
        return self.ratio * statistics.median(f for _, f in best)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step != self.step:
            return False
        own = self.fall(trial)
        if own is None:
            return False
        threshold = self.threshold(study, trial.number)
        return threshold is not None and own < threshold


class PeerPercentilePruner(optuna.pruners.PercentilePruner):
    """Optuna's percentile pruner, judging a trial against the other workers' running trials too.

    Optuna's compares a trial's best value so far only with the completed trials' values at the
    same step. With several workers that leaves out the running trials, which have passed the
    pruner at every earlier step as the completed ones did: at the start of a 2-job search, the
    trials running beside the first completed ones are judged against too few, or none, and run
    on. Here the trials judged against (and counted for ``n_startup_trials``) are the completed
    ones and every other running trial that has reported the step. With one worker no other
    trial runs, and every decision is exactly that of Optuna's pruner (the same arguments).
    """

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return super().prune(_WithPeers(study, trial), trial)


class _WithPeers:
    """``study`` whose completed trials include the running ones, but ``trial``, that have
    reported ``trial``'s last step."""

    def __init__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._study, self._trial = study, trial

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[optuna.trial.FrozenTrial]:
        if tuple(states or ()) != (TrialState.COMPLETE,):
            return self._study.get_trials(deepcopy=deepcopy, states=states)
        step, number = self._trial.last_step, self._trial.number
        trials = self._study.get_trials(
            deepcopy=deepcopy, states=(TrialState.COMPLETE, TrialState.RUNNING)
        )
        return [
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            or (t.number != number and step in t.intermediate_values)
        ]


def rung_steps(min_resource: int, reduction_factor: int, max_resource: int) -> list[int]:
    """The steps before ``max_resource`` at which successive halving (and every Hyperband
    bracket) can prune a trial; pruning at the last step would only throw a finished trial away.
    """
    steps, step = [], min_resource
    while step < max_resource:
        steps.append(step)
        step *= reduction_factor
    return steps
