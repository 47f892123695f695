"""The search from Python: ``run_search`` and ``next_stage`` mean what the commands mean (exact
counts, resume, stages, the same checks before anything is written), and every command turns an
unexpected error into one line unless ``--debug`` asks for the traceback."""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo import best_params, next_stage, progress, record, run_search, search
from hpo import runner as runner_module

from .conftest import db_checksum

SMALL = {"train_size": 100, "epochs": 3, "hidden": [20, 20], "progress": False}


def finished(study: optuna.Study) -> int:
    return record.finished_count(study.get_trials(deepcopy=False))


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[str, Path, optuna.Study]:
    """A study made by run_search with two worker processes."""
    path = tmp_path_factory.mktemp("library") / "s.db"
    url = f"sqlite:///{path}"
    study = run_search(trials=5, jobs=2, storage=url, study="lib", **SMALL)
    return url, path, study


def test_run_search_returns_the_study_with_exactly_the_requested_trials(searched):
    url, _, study = searched

    assert isinstance(study, optuna.Study) and study.study_name == "lib"
    assert finished(study) == 5
    config = study.user_attrs["config"]
    assert (config["train_size"], config["epochs"], config["hidden"]) == (100, 3, [20, 20])
    assert record.count_states(study.trials)[TrialState.RUNNING] == 0


def test_best_params_agree_with_the_returned_study(searched):
    url, _, study = searched

    assert best_params(url, "lib") == record.best(study.trials).params


def test_a_second_call_resumes_with_the_stored_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_search(trials=2, jobs=1, storage=url, study="r", seed=7, **SMALL)

    study = run_search(trials=3, jobs=1, storage=url, study="r", progress=False)

    assert finished(study) == 5
    assert (study.user_attrs["config"]["seed"], study.user_attrs["config"]["epochs"]) == (7, 3)


def test_a_space_given_as_a_dict_is_read_as_its_toml_file_would_be(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"

    study = run_search(
        trials=3, jobs=1, storage=url, space={"batch_size": {"choices": [20, 50]}}, **SMALL
    )

    assert {t.params["batch_size"] for t in study.trials} <= {20, 50}
    assert study.user_attrs["config"]["space"]["batch_size"]["choices"] == [20, 50]


def test_stages_and_the_next_stage_return_their_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"

    last = run_search(trials=4, jobs=1, storage=url, study="p", stages=2, **SMALL)
    child = next_stage("p-s2", trials=2, jobs=1, storage=url, progress=False)

    assert last.study_name == "p-s2" and child.study_name == "p-s3"
    assert child.user_attrs["stage"] == 3 and child.user_attrs["parent_study"] == "p-s2"
    own = [t for t in child.trials if "seeded_from" not in t.user_attrs]
    assert sum(t.state in record.FINISHED for t in own) == 2


def test_next_stage_without_trials_only_creates_the_stage(searched, tmp_path):
    url, path, _ = searched
    copy = tmp_path / "c.db"
    copy.write_bytes(path.read_bytes())

    child = next_stage("lib", storage=f"sqlite:///{copy}", progress=False)

    assert child.study_name == "lib-s2"
    assert child.trials and all("seeded_from" in t.user_attrs for t in child.trials)


BAD_ARGUMENTS = [
    ({"trials": 0}, "--trials: must be a positive integer, but got '0'"),
    ({"trials": True}, "`trials` takes numbers or names, but got trials=True."),
    ({"trials": 2.5}, "--trials: must be a positive integer, but got '2.5'"),
    ({"jobs": 0}, "--jobs: must be -1 (all cores) or a positive integer, but got '0'"),
    ({"lr": (1e-2, 1e-6)}, "--lr: `LOW < HIGH` must hold"),
    ({"lr": (1, math.inf)}, "--lr: LOW and HIGH must be finite numbers"),
    ({"lr": 1e-3}, "--lr: expected 2 arguments"),
    ({"epochs": -1}, "--epochs: must be a positive integer, but got '-1'"),
    ({"sampler": "bogus"}, "--sampler: invalid choice: 'bogus'"),
    ({"dataset": "nope"}, "--dataset: invalid choice: 'nope'"),
    ({"hidden": [0]}, "--hidden: must be a positive integer, but got '0'"),
    ({"space": {"optimizer": {"choices": ["bogus"]}}}, "`optimizer.choices` must be names"),
    ({"space": "missing.toml"}, "Cannot read search-space file 'missing.toml'"),
    ({"epochs": 5}, "--study 'lib' exists with epochs=3, but this run asks for epochs=5"),
    ({"learning_rate": (1e-6, 1)}, "run_search() got an unknown keyword 'learning_rate'"),
]


@pytest.mark.parametrize(
    ("arguments", "says"), BAD_ARGUMENTS, ids=[b[1][:40] for b in BAD_ARGUMENTS]
)
def test_a_bad_argument_raises_value_error_and_leaves_the_database_as_it_was(
    searched, arguments, says
):
    url, path, _ = searched
    before = db_checksum(path)
    files = sorted(p.name for p in path.parent.iterdir())

    with pytest.raises(ValueError) as raised:
        run_search(**{"trials": 1, "storage": url, "study": "lib", "progress": False, **arguments})

    assert says in str(raised.value)
    assert db_checksum(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == files


def test_a_bad_argument_on_a_fresh_path_creates_no_file(tmp_path):
    with pytest.raises(ValueError, match="LOW < HIGH"):
        run_search(storage=f"sqlite:///{tmp_path / 'new.db'}", lr=(1, 0.1), progress=False)

    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_a_notebook_fails_the_running_trial_says_so_and_raises(
    tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    real_run_trial = runner_module._run_trial
    calls = []

    def run_trial(study, trial, objective):
        calls.append(trial.number)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the kernel, mid-trial
        real_run_trial(study, trial, objective)

    monkeypatch.setattr(runner_module, "_run_trial", run_trial)

    with pytest.raises(KeyboardInterrupt):
        run_search(trials=10, jobs=1, storage=url, **SMALL)

    assert "Interrupted after 2 of 10 trials" in capsys.readouterr().err
    study = optuna.load_study(study_name="default", storage=url)
    counts = record.count_states(study.trials)
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.FAIL] == 1
    assert finished(study) == 2


def test_the_package_loads_the_search_only_when_asked():
    assert hpo.run_search is run_search and "run_search" in hpo.__all__
    with pytest.raises(AttributeError):
        hpo.no_such_name  # noqa: B018


@pytest.mark.parametrize("debug", [False, True], ids=["default", "--debug"])
def test_an_unexpected_error_is_one_line_unless_debug_asks_for_the_traceback(
    tmp_path, monkeypatch, capsys, debug
):
    def broken(args):
        raise RuntimeError("the disk caught fire\nsecond line")

    monkeypatch.setattr(search, "prepare_search", broken)
    argv = ["--storage", f"sqlite:///{tmp_path / 's.db'}", "-q", *(["--debug"] if debug else [])]

    if debug:
        with pytest.raises(RuntimeError, match="the disk caught fire"):
            search.main(argv)
        return
    assert search.main(argv) == 1
    assert capsys.readouterr().err == (
        "hpo.search: error: unexpected RuntimeError: the disk caught fire "
        "(--debug shows the traceback)\n"
    )


def test_one_job_is_reproducible_same_seed_same_trials(tmp_path):
    runs = [
        run_search(trials=4, jobs=1, storage=f"sqlite:///{tmp_path / f'{i}.db'}", **SMALL)
        for i in range(2)
    ]

    first, second = ([(t.params, t.state, t.value) for t in r.trials] for r in runs)
    assert first == second


def test_the_default_jobs_are_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)

    assert progress.n_workers(None) == progress.n_workers(-1) == 3
    assert progress.n_workers(1) == 1
    assert "(3 here)" in " ".join(search.build_parser().format_help().split())
