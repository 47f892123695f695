"""The SQLite storage's one-statement reports, and pruners asked only where they can decide."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.pruning import AtSteps, rung_steps
from hpo.storage import open_storage


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=False)
    return optuna.create_study(storage=storage, study_name="s", direction="maximize")


def test_reports_of_every_kind_of_value_read_back_as_optuna_wrote_them(study, tmp_path):
    trial = study.ask()
    values = {1: 0.5, 2: float("inf"), 3: float("-inf"), 4: float("nan"), 5: 0.25}
    for step, value in values.items():
        trial.report(value, step)
    study.tell(trial, 0.25)

    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    got = stored.trials[0].intermediate_values
    assert got.keys() == values.keys()
    for step, value in values.items():
        assert got[step] == value or (math.isnan(got[step]) and math.isnan(value))


def test_reporting_a_step_again_overwrites_it(study):
    trial = study.ask()
    study._storage.set_trial_intermediate_value(trial._trial_id, 1, 0.1)
    study._storage.set_trial_intermediate_value(trial._trial_id, 1, 0.2)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.2}


def test_a_report_to_a_finished_trial_is_refused_as_optuna_refuses_it(study):
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_intermediate_value(trial._trial_id, 1, 0.1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.trials[0].intermediate_values == {}


class Recording(optuna.pruners.BasePruner):
    def __init__(self) -> None:
        self.asked: list[int] = []

    def prune(self, study, trial) -> bool:
        self.asked.append(trial.last_step)
        return True


def test_the_wrapped_pruner_is_asked_only_at_the_given_steps():
    inner = Recording()
    study = optuna.create_study(pruner=AtSteps(inner, [3, 7]))
    trial = study.ask()
    decisions = []
    for step in range(1, 10):
        trial.report(0.0, step)
        decisions.append(trial.should_prune())
    assert inner.asked == [3, 7]
    assert [s for s, d in zip(range(1, 10), decisions, strict=True) if d] == [3, 7]


@pytest.mark.parametrize(
    ("min_resource", "reduction_factor", "max_resource", "steps"),
    [(10, 3, 50, [10, 30]), (5, 3, 50, [5, 15, 45]), (5, 4, 50, [5, 20]), (1, 3, 1, [])],
)
def test_rung_steps_are_the_steps_before_the_last_where_halving_decides(
    min_resource, reduction_factor, max_resource, steps
):
    assert rung_steps(min_resource, reduction_factor, max_resource) == steps


def pruned_steps(pruner: optuna.pruners.BasePruner, curves: list[list[float]]) -> list[int]:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    stopped = []
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
        stopped.append(step)
    return stopped


def test_halving_asked_at_its_rungs_only_prunes_exactly_as_halving_asked_every_step():
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.uniform(-0.02, 0.05, size=(40, 20)), axis=1).tolist()

    def halving():
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)

    every_step = pruned_steps(halving(), curves)
    at_rungs = pruned_steps(AtSteps(halving(), rung_steps(2, 3, 20)), curves)

    assert at_rungs == every_step
    assert set(every_step) == {2, 6, 18, 20}  # pruned at every rung, some trials complete


def test_user_attrs_read_back_and_writes_to_a_finished_trial_are_refused(study):
    trial = study.ask()
    trial.set_user_attr("curve", [0.1, 0.2])
    trial.set_user_attr("curve", [0.1, 0.2, 0.3])
    trial.set_user_attr("seed", 7)
    study.tell(trial, 0.3)
    assert study.trials[0].user_attrs == {"curve": [0.1, 0.2, 0.3], "seed": 7}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_user_attr(trial._trial_id, "seed", 8)
    assert study.trials[0].user_attrs["seed"] == 7
