"""PeerPercentilePruner: Optuna's percentile pruner, with the other workers' running trials."""

from __future__ import annotations

import random

import optuna
from optuna.trial import TrialState

from hpo.pruning import PeerPercentilePruner

ARGS = {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 2, "interval_steps": 1}


def add(study: optuna.Study, state: TrialState, curve: list[float]) -> None:
    """A trial in ``state`` that reported ``curve`` at steps 1, 2, ..."""
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=curve[-1] if state == TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(curve, start=1)),
        )
    )


def judged(study: optuna.Study, curve: list[float]):
    """A new running trial that reported ``curve``, as the pruner sees it."""
    trial = study.ask()
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
    return study._storage.get_trial(trial._trial_id)


def test_without_other_running_trials_every_decision_is_optunas():
    rng = random.Random(0)
    ours, optunas = PeerPercentilePruner(**ARGS), optuna.pruners.PercentilePruner(**ARGS)
    decisions = []
    for n_completed in range(6):
        study = optuna.create_study(direction="maximize")
        for _ in range(n_completed):
            add(study, TrialState.COMPLETE, [rng.random() for _ in range(5)])
        add(study, TrialState.PRUNED, [0.99, 0.99])  # pruned trials count for neither
        for _ in range(5):
            trial = judged(study, [rng.random() for _ in range(rng.randint(1, 5))])
            decision = ours.prune(study, trial)
            assert decision == optunas.prune(study, trial)
            decisions.append(decision)
            study.tell(trial._trial_id, state=TrialState.FAIL)
    assert True in decisions and False in decisions  # the comparison covers both outcomes


def test_running_trials_that_reported_the_step_count_as_completed_ones_do():
    study = optuna.create_study(direction="maximize")
    add(study, TrialState.COMPLETE, [0.5, 0.6, 0.7])
    add(study, TrialState.RUNNING, [0.8, 0.9, 0.9])
    add(study, TrialState.RUNNING, [0.8, 0.9, 0.95, 0.95])
    trial = judged(study, [0.2, 0.3, 0.4])
    # One completed trial is below n_startup_trials: Optuna's waits; with the two running
    # trials at step 3 there are three, and 0.4 is below their top three quarters.
    assert not optuna.pruners.PercentilePruner(**ARGS).prune(study, trial)
    assert PeerPercentilePruner(**ARGS).prune(study, trial)
    good = judged(study, [0.9, 0.95, 0.96])
    assert not PeerPercentilePruner(**ARGS).prune(study, good)


def test_running_trials_short_of_the_step_and_the_trial_itself_do_not_count():
    study = optuna.create_study(direction="maximize")
    add(study, TrialState.COMPLETE, [0.5, 0.6, 0.7])
    add(study, TrialState.COMPLETE, [0.5, 0.6, 0.8])
    add(study, TrialState.RUNNING, [0.9, 0.9])  # has not reported step 3 yet
    trial = judged(study, [0.2, 0.3, 0.4])
    # Two trials at step 3: below n_startup_trials = 3, whether the trial counted itself or not.
    assert not PeerPercentilePruner(**ARGS).prune(study, trial)
    add(study, TrialState.RUNNING, [0.9, 0.9, 0.9])
    assert PeerPercentilePruner(**ARGS).prune(study, trial)
