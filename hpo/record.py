"""The stored trial record: what a trial of ``hpo.search`` keeps in the database, and how it reads.

One module owns the record, so that the writer (:class:`hpo.objective.Objective`) and every reader
(results, report, cli, stages, train, export, the search's summary) agree on it:

- the study user attr ``config`` (the :class:`hpo.config.SearchConfig` that rebuilds any trial);
- a trial's user attrs: ``seed`` (its own seed), ``epochs`` (epochs trained), the per-epoch curves
  ``train_acc``, ``train_loss``, ``val_loss`` and, for a trial whose loss became NaN/inf,
  ``diverged`` (``{"epoch": ..., "reason": ...}``); ``val_acc`` is stored as the intermediate
  values (``trial.report``) and the final one is the trial's value; in a later stage, a trial
  copied from the parent has ``seeded_from`` (``{"study": ..., "trial": ...}``, :mod:`hpo.stages`);
- a trial's system attr ``hpo:run``: the run whose workers asked for it (or took it from the
  queue), which is what a run's ``--trials`` counts;
- a trial's outcome (complete, pruned, diverged, failed) and THE ranking of "best": complete, a
  finite value, not diverged, the higher value first, ties to the earlier trial.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "CONFIG_ATTR",
    "CURVE_ATTRS",
    "DIVERGED_ATTR",
    "EPOCHS_ATTR",
    "FINISHED",
    "METRICS",
    "OBJECTIVE_METRIC",
    "OUTCOMES",
    "RUN_ATTR",
    "SEEDED_ATTR",
    "SEED_ATTR",
    "best",
    "count_finished",
    "count_outcomes",
    "count_states",
    "curves",
    "divergence",
    "diverged",
    "epochs_run",
    "finished_count",
    "outcome",
    "ranked",
    "run_trials",
    "stored_seed",
    "write_curves",
    "write_diverged",
    "write_seed",
]

# The models.Trainer's per-epoch history keys, in the order they are shown.
METRICS = ("val_acc", "train_acc", "train_loss", "val_loss")
OBJECTIVE_METRIC = "val_acc"  # reported every epoch; the last one is the trial's value
CURVE_ATTRS = tuple(m for m in METRICS if m != OBJECTIVE_METRIC)  # stored as trial user attrs

CONFIG_ATTR = "config"  # study user attr: SearchConfig.to_dict()
SEED_ATTR = "seed"
EPOCHS_ATTR = "epochs"
DIVERGED_ATTR = "diverged"
RUN_ATTR = "hpo:run"  # trial system attr: the id of the run that ran it
SEEDED_ATTR = "seeded_from"  # trial user attr of a later stage's copy of a parent's trial

# Finished trials: what ``--trials N`` counts (a failed trial is retried, so it does not count).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OUTCOMES = ("complete", "pruned", "diverged", "failed")


def write_seed(trial: optuna.Trial, seed: int) -> None:
    """Store the trial's own seed (:func:`hpo.objective.trial_seed`): a replay needs no more."""
    trial.set_user_attr(SEED_ATTR, seed)


def write_curves(trial: optuna.Trial, history: Mapping[str, list[float]], epochs: int) -> None:
    """Store the curves besides ``val_acc`` (that one is reported) and the epochs trained."""
    for name in CURVE_ATTRS:
        trial.set_user_attr(name, history[name])
    trial.set_user_attr(EPOCHS_ATTR, epochs)


def divergence(epoch: int | None, reason: str | None) -> dict[str, Any]:
    """The ``diverged`` attr's value: the epoch whose loss became NaN/inf, and why."""
    return {"epoch": epoch, "reason": reason}


def write_diverged(trial: optuna.Trial, epoch: int | None, reason: str | None) -> None:
    """Mark the trial diverged (NaN/inf loss) in ``epoch``, with the reason."""
    trial.set_user_attr(DIVERGED_ATTR, divergence(epoch, reason))


def curves(trial: FrozenTrial) -> dict[str, list[float]]:
    """The per-epoch curves a trial stored: ``val_acc`` from the intermediate values, the others
    from the user attrs (those present)."""
    values = trial.intermediate_values
    stored = {OBJECTIVE_METRIC: [values[step] for step in sorted(values)]}
    for name in CURVE_ATTRS:
        if name in trial.user_attrs:
            stored[name] = list(trial.user_attrs[name])
    return stored


def diverged(trial: FrozenTrial) -> dict[str, Any] | None:
    """``{"epoch": ..., "reason": ...}`` if the trial's loss became NaN/inf, else None."""
    return trial.user_attrs.get(DIVERGED_ATTR)


def epochs_run(trial: FrozenTrial) -> int:
    """Epochs a trial trained: its ``epochs`` attr, else the epochs it reported."""
    return int(trial.user_attrs.get(EPOCHS_ATTR, len(trial.intermediate_values)))


def stored_seed(trial: FrozenTrial) -> int | None:
    """The trial's stored seed; None for trials stored before the seed was."""
    return trial.user_attrs.get(SEED_ATTR)


def outcome(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``diverged``, ``failed`` or the state's name."""
    if DIVERGED_ATTR in trial.user_attrs:
        return "diverged"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
    }.get(trial.state, trial.state.name.lower())


def _rankable(trial: FrozenTrial) -> bool:
    # Diverged trials end pruned (hpo.objective), but a value that is not finite or a
    # ``diverged`` attr never ranks, whatever the state says.
    return (
        trial.state == TrialState.COMPLETE
        and trial.value is not None
        and math.isfinite(trial.value)
        and DIVERGED_ATTR not in trial.user_attrs
    )


def ranked(trials: Iterable[FrozenTrial], *, maximize: bool = True) -> list[FrozenTrial]:
    """The trials that can be "best", best first: complete, a finite value, not diverged.

    Args:
        trials: Trials in any state.
        maximize: The study's direction (hpo's studies maximize validation accuracy; other
            studies, e.g. for :func:`hpo.best_params`, may minimize).

    Returns:
        The rankable trials by value, ties: the earlier trial first.
    """
    sign = -1.0 if maximize else 1.0
    return sorted(filter(_rankable, trials), key=lambda t: (sign * t.value, t.number))


def best(trials: Iterable[FrozenTrial], *, maximize: bool = True) -> FrozenTrial | None:
    """The best trial of :func:`ranked`, or None if no trial ranks."""
    ordered = ranked(trials, maximize=maximize)
    return ordered[0] if ordered else None


def count_states(trials: Iterable[FrozenTrial]) -> Counter[TrialState]:
    """How many trials are in each state (missing states count 0)."""
    return Counter(t.state for t in trials)


def finished_count(trials: Iterable[FrozenTrial]) -> int:
    """Complete plus pruned trials: the ones ``--trials`` counts."""
    return sum(t.state in FINISHED for t in trials)


def count_outcomes(trials: Sequence[FrozenTrial]) -> Counter[str]:
    """How many trials have each :func:`outcome`."""
    return Counter(outcome(t) for t in trials)


def run_trials(trials: Iterable[FrozenTrial], run_id: str) -> list[FrozenTrial]:
    """The trials that the run ``run_id``'s workers asked for (or took from the queue)."""
    return [t for t in trials if t.system_attrs.get(RUN_ATTR) == run_id]


def count_finished(trials: Iterable[FrozenTrial], run_id: str) -> int:
    """Finished (complete or pruned) trials of the run ``run_id``: what ``--trials`` counts."""
    return sum(t.state in FINISHED for t in run_trials(trials, run_id))
