"""LossFallPruner, AnyOf and the default "loss" pruner: decisions on scripted curves."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo.pruning import AnyOf, AtSteps, LossFallPruner, curve_steps, decision_steps
from hpo.study import make_pruner


def falling(fall: float, epochs: int = 5, first: float = 2.3) -> list[float]:
    """A training-loss curve that has fallen by ``fall`` (relative) at epoch 3."""
    return [first * (1 - fall * (e - 1) / 2) for e in range(1, epochs + 1)]


def study_with(completed: list[tuple[float, float]]) -> optuna.Study:
    """A study whose completed trials have (value, fall at epoch 3)."""
    study = optuna.create_study(direction="maximize")
    for value, fall in completed:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=value, user_attrs={"train_loss": falling(fall)}
            )
        )
    return study


def running(study: optuna.Study, fall: float | None, step: int = 3):
    trial = study.ask()
    if fall is not None:
        trial.set_user_attr("train_loss", falling(fall)[:step])
    for s in range(1, step + 1):
        trial.report(0.1, s)
    return study._storage.get_trial(trial._trial_id)


# The best quarter of these (values 0.8 and 0.7) fell 4% and 3%: median 3.5%, half of it 1.75%.
COMPLETED = [
    (0.8, 0.04),
    (0.7, 0.03),
    (0.2, 0.01),
    (0.1, 0.001),
    (0.1, 0.0),
    (0.1, 0.0),
    (0.2, 0.01),
    (0.1, 0.0),
]


@pytest.mark.parametrize(
    ("fall", "pruned"),
    [(0.0, True), (0.01, True), (0.017, True), (0.018, False), (0.05, False), (None, False)],
    ids=["flat", "slow", "just under half", "just over half", "faster than the best", "no curve"],
)
def test_a_trial_is_pruned_when_its_loss_fell_less_than_half_the_best_trials_median(fall, pruned):
    study = study_with(COMPLETED)
    pruner = LossFallPruner(3)
    assert pruner.threshold(study) == pytest.approx(0.5 * 0.035)
    assert pruner.prune(study, running(study, fall)) is pruned


def test_it_judges_only_at_its_step():
    study = study_with(COMPLETED)
    pruner = LossFallPruner(3)
    assert not pruner.prune(study, running(study, 0.0, step=4))
    assert not pruner.prune(study, running(study, 0.0, step=2))


def test_it_waits_for_its_startup_trials():
    study = study_with(COMPLETED[:1])
    assert LossFallPruner(3, n_startup_trials=2).threshold(study) is None
    assert not LossFallPruner(3, n_startup_trials=2).prune(study, running(study, 0.0))
    assert LossFallPruner(3, n_startup_trials=1).prune(study, running(study, 0.0))


def peer(study: optuna.Study, fall: float | None, values: list[float]):
    """Another worker's running trial: its curve up to epoch 3 (if any), then ``values``."""
    trial = study.ask()
    if fall is not None:
        trial.set_user_attr("train_loss", falling(fall)[:3])
    for step, value in enumerate(values, start=1):
        trial.report(value, step)


def test_running_peers_past_the_step_count_for_the_startup_trials():
    study = study_with([(0.11, 0.04)])
    peer(study, 0.04, [0.1, 0.1, 0.1, 0.12])
    assert LossFallPruner(3, n_startup_trials=2).prune(study, running(study, 0.0))


def test_a_running_peer_is_ranked_by_its_best_value_so_far():
    # The peer's 0.8 so far beats the completed 0.5: its 4% fall sets the threshold, 2%.
    study = study_with([(0.5, 0.01)])
    peer(study, 0.04, [0.1, 0.3, 0.8, 0.6])
    assert LossFallPruner(3).threshold(study) == pytest.approx(0.02)
    assert LossFallPruner(3).prune(study, running(study, 0.015))
    # Without the peer the completed trial's 1% sets it, 0.5%, and the same trial goes on.
    alone = study_with([(0.5, 0.01)])
    assert not LossFallPruner(3).prune(alone, running(alone, 0.015))


def test_peers_without_a_curve_or_a_report_and_the_trial_itself_do_not_count():
    study = study_with([(0.5, 0.01)])
    peer(study, None, [0.1, 0.2, 0.9])  # no curve stored
    peer(study, 0.04, [])  # nothing reported yet
    pruner = LossFallPruner(3, n_startup_trials=2)
    assert pruner.threshold(study) is None
    trial = running(study, 0.0)
    assert pruner.threshold(study, trial.number) is None
    assert not pruner.prune(study, trial)


def test_minimizing_studies_take_the_lowest_values_as_the_best():
    study = optuna.create_study(direction="minimize")
    for value, fall in [(0.1, 0.04), (0.9, 0.0), (0.8, 0.0), (0.7, 0.0)]:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=value, user_attrs={"train_loss": falling(fall)}
            )
        )
    assert LossFallPruner(3).threshold(study) == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 1}, "step >= 2"),
        ({"step": 3, "ratio": 0.0}, "ratio"),
        ({"step": 3, "top_fraction": 1.5}, "top_fraction"),
        ({"step": 3, "n_startup_trials": 0}, "n_startup_trials"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossFallPruner(**kwargs)


class Always(optuna.pruners.BasePruner):
    def __init__(self, answer: bool) -> None:
        self.answer = answer

    def prune(self, study, trial) -> bool:
        return self.answer


@pytest.mark.parametrize(("answers", "pruned"), [((False, False), False), ((False, True), True)])
def test_any_of_prunes_when_any_pruner_would(answers, pruned):
    study = optuna.create_study()
    trial = running(study, None)
    assert AnyOf(*(Always(a) for a in answers)).prune(study, trial) is pruned


def test_the_default_pruner_reads_the_loss_curve_at_epoch_3_of_50_and_asks_the_percentile_later():
    pruner = make_pruner("loss", 50)
    assert isinstance(pruner, AnyOf)
    assert curve_steps(pruner) == {3}
    loss, percentile = pruner.pruners
    assert isinstance(loss, LossFallPruner) and isinstance(percentile, AtSteps)
    assert min(percentile.steps) == 8
    assert curve_steps(make_pruner("percentile", 50)) == frozenset()


def test_the_objective_stores_the_loss_curve_where_the_pruner_reads_it(tmp_path):
    from hpo.config import SearchConfig
    from hpo.objective import Objective, load_split

    config = SearchConfig(epochs=4, train_size=60, pruner="loss")
    stored = []

    class Recording(LossFallPruner):
        decision_steps = None  # asked at every step, to see the curve stored at each

        def prune(self, study, trial):
            stored.append((trial.last_step, list(trial.user_attrs.get("train_loss", []))))
            return False

    study = optuna.create_study(direction="maximize", pruner=Recording(2))
    study.optimize(Objective(config, load_split(config)), n_trials=1)
    (trial,) = study.trials
    assert [step for step, _ in stored] == [1, 2, 3, 4]
    assert stored[1][1] == trial.user_attrs["train_loss"][:2]
    assert stored[0][1] == [] and len(stored[3][1]) == 2  # written at step 2 only, then at the end


def test_each_pruner_is_asked_only_at_the_steps_where_it_can_prune():
    assert decision_steps(make_pruner("loss", 50)) == {3, *range(8, 50, 5)}
    assert decision_steps(make_pruner("percentile", 50)) == set(range(8, 50, 5))
    assert decision_steps(make_pruner("median", 50)) == set(range(10, 50))
    assert decision_steps(make_pruner("sha", 50)) == {10, 30}
    assert decision_steps(make_pruner("hyperband", 50)) is None  # any step
    assert decision_steps(make_pruner("none", 50)) == frozenset()
    assert decision_steps(AnyOf(LossFallPruner(3), Always(False))) is None


def test_the_objective_asks_the_pruner_only_at_its_decision_steps():
    from hpo.config import SearchConfig
    from hpo.objective import Objective, load_split

    config = SearchConfig(epochs=6, train_size=60, pruner="loss")
    asked = []

    class Recording(optuna.pruners.BasePruner):
        decision_steps = frozenset({2, 5})

        def prune(self, study, trial):
            asked.append(trial.last_step)
            return trial.last_step == 5

    study = optuna.create_study(direction="maximize", pruner=Recording())
    study.optimize(Objective(config, load_split(config)), n_trials=1)
    assert asked == [2, 5]
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert study.trials[0].last_step == 5
