"""The stored trial record (hpo/record.py): what the objective writes is what every reader reads."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from threadpoolctl import threadpool_limits

from hpo import record
from hpo.config import SearchConfig
from hpo.objective import Objective, load_split

LR = {"lr": FloatDistribution(1e-6, 1e-2, log=True)}


def trial(state: TrialState, value: float | None = None, number: int = 0, **attrs) -> FrozenTrial:
    made = create_trial(
        state=state,
        value=value,
        params={"lr": 1e-3},
        distributions=LR,
        intermediate_values={1: 0.1, 2: 0.2},
        user_attrs=attrs,
    )
    made.number = number
    return made


def test_the_objective_writes_the_record_that_the_readers_read_back():
    config = SearchConfig(train_size=100, epochs=2, hidden=[10])
    study = optuna.create_study(direction="maximize")
    with threadpool_limits(limits=1):
        study.optimize(Objective(config, load_split(config)), n_trials=1)
    (done,) = study.trials
    curves = record.curves(done)
    assert list(curves) == list(record.METRICS)
    assert all(len(values) == 2 for values in curves.values())
    assert curves[record.OBJECTIVE_METRIC][-1] == done.value
    assert record.epochs_run(done) == 2 and record.stored_seed(done) is not None
    assert record.diverged(done) is None and record.outcome(done) == "complete"
    assert record.best(study.trials).number == done.number


@pytest.mark.parametrize(
    ("made", "outcome"),
    [
        (trial(TrialState.COMPLETE, 0.5), "complete"),
        (trial(TrialState.PRUNED, 0.2), "pruned"),
        (trial(TrialState.PRUNED, 0.2, diverged=record.divergence(3, "loss is nan")), "diverged"),
        (trial(TrialState.FAIL), "failed"),
    ],
)
def test_every_trial_has_one_outcome(made, outcome):
    assert record.outcome(made) == outcome


def test_only_complete_finite_undiverged_trials_rank_best_first_ties_to_the_earlier_trial():
    trials = [
        trial(TrialState.COMPLETE, 0.5, number=0),
        trial(TrialState.COMPLETE, 0.9, number=1),
        trial(TrialState.COMPLETE, 0.9, number=2),
        trial(TrialState.PRUNED, 0.99, number=3),
        trial(TrialState.COMPLETE, 0.95, number=4, diverged=record.divergence(2, "inf")),
        trial(TrialState.COMPLETE, math.inf, number=5),
        trial(TrialState.FAIL, number=6),
    ]
    assert [t.number for t in record.ranked(trials)] == [1, 2, 0]
    assert record.best(trials).number == 1
    assert [t.number for t in record.ranked(trials, maximize=False)] == [0, 1, 2]
    assert record.best([trials[3], trials[6]]) is None


def test_states_are_counted_once_finished_meaning_complete_or_pruned():
    trials = [
        trial(TrialState.COMPLETE, 0.5),
        trial(TrialState.PRUNED, 0.1),
        trial(TrialState.FAIL),
    ]
    counts = record.count_states(trials)
    assert [counts[s] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)] == [1] * 3
    assert counts[TrialState.RUNNING] == 0
    assert record.finished_count(trials) == 2
    assert record.count_outcomes(trials) == {"complete": 1, "pruned": 1, "failed": 1}
