"""Every sampler and pruner of ``python -m hpo.search`` runs, and ``--pruner hyperband`` is
Optuna's HyperbandPruner: the same pruning decisions and the same bracket-wise view of the study
for the sampler, on a scripted study with known learning curves."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import search
from hpo.study import make_pruner

EPOCHS = 9  # hyperband with epochs 9: min_resource 1, reduction factor 3, three brackets
TINY = ["--train-size", "100", "--hidden", "10", "--jobs", "1", "-q"]


class RecordingSampler(optuna.samplers.RandomSampler):
    """A seeded random sampler that records which trials it was shown for each trial."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.views: dict[int, list[int]] = {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.views[trial.number] = [t.number for t in study.get_trials(deepcopy=False)]
        return super().sample_independent(study, trial, param_name, param_distribution)


def curve(x: float, step: int) -> float:
    """A known learning curve: rises with the step, higher for a higher ``x``."""
    return x * (1.0 - 0.5**step)


def scripted_run(pruner: optuna.pruners.BasePruner, n_trials: int = 40):
    """Pruned steps (None: completed) and sampler views of a study whose trials report
    ``curve(x, step)`` for steps 1..EPOCHS, as the objective of hpo reports each epoch."""
    sampler = RecordingSampler(seed=0)
    # The same name in both runs: Hyperband assigns brackets by a hash of name and trial number.
    study = optuna.create_study(
        study_name="scripted", direction="maximize", sampler=sampler, pruner=pruner
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(1, EPOCHS + 1):
            trial.report(curve(x, step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve(x, EPOCHS)

    study.optimize(objective, n_trials=n_trials)
    pruned_at = {
        t.number: t.last_step if t.state == TrialState.PRUNED else None for t in study.trials
    }
    return pruned_at, sampler.views


def optunas_hyperband() -> optuna.pruners.HyperbandPruner:
    warmup = max(EPOCHS // 5, 1)
    return optuna.pruners.HyperbandPruner(
        min_resource=warmup, max_resource=EPOCHS, reduction_factor=3
    )


def test_hyperband_prunes_the_same_trials_at_the_same_steps_as_optunas_own():
    ours, _ = scripted_run(make_pruner("hyperband", EPOCHS))
    theirs, _ = scripted_run(optunas_hyperband())

    assert ours == theirs
    assert any(step is not None for step in theirs.values())  # the script does prune
    assert any(step is None for step in theirs.values())


def test_hyperband_shows_each_trials_sampler_only_its_brackets_trials_as_optuna_does():
    _, ours = scripted_run(make_pruner("hyperband", EPOCHS))
    _, theirs = scripted_run(optunas_hyperband())

    assert ours == theirs
    # Meaningful only if the brackets hide some trials: a later trial sees fewer than all before it.
    assert any(len(view) < number + 1 for number, view in theirs.items())


def test_hyperband_is_a_hyperband_pruner_so_optuna_filters_the_study_by_bracket():
    assert isinstance(make_pruner("hyperband", 50), optuna.pruners.HyperbandPruner)


# --- each sampler and pruner through the command ------------------------------------------------


def missing(*packages: str) -> str:
    return ", ".join(p for p in packages if importlib.util.find_spec(p) is None)


def needs(*packages: str):
    absent = missing(*packages)
    return pytest.mark.skipif(bool(absent), reason=f"{absent} not installed")


def finished(db: Path) -> Counter:
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{db}")
    return Counter(t.state for t in study.get_trials(deepcopy=False))


@pytest.mark.parametrize(
    "sampler",
    [
        "qmc",
        pytest.param("cmaes", marks=needs("cmaes")),
        pytest.param("gp", marks=needs("torch", "scipy")),
    ],
)
def test_each_optional_sampler_runs_a_tiny_search_to_the_requested_trial_count(tmp_path, sampler):
    db = tmp_path / "s.db"
    argv = ["--storage", f"sqlite:///{db}", *TINY, "--epochs", "2", "--trials", "3"]

    assert search.main([*argv, "--sampler", sampler, "--pruner", "none"]) == 0

    assert finished(db) == {TrialState.COMPLETE: 3}


@pytest.mark.parametrize("pruner", ["hyperband", "sha", "median"])
def test_each_pruner_runs_a_tiny_search_to_the_requested_trial_count(tmp_path, pruner):
    db = tmp_path / "s.db"
    argv = ["--storage", f"sqlite:///{db}", *TINY, "--epochs", "3", "--trials", "3"]

    assert search.main([*argv, "--sampler", "random", "--pruner", pruner]) == 0

    states = finished(db)
    assert sum(states.values()) == 3
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{db}")
    assert study.user_attrs["config"]["pruner"] == pruner
