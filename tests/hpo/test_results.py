"""Results out of a study: best_params, trial_config, hpo.export, hpo.train and exact replay.

Every study comes from the session database of conftest.py (tiny real searches); tests that need
to change a database work on a copy.
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from collections.abc import Callable, Sequence

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from hpo import TrialSetup, best_params, trial_config
from hpo import export as export_cli
from hpo import train as train_cli
from hpo.config import SearchConfig
from hpo.objective import load_split
from hpo.results import load_trial
from hpo.storage import open_storage
from hpo.study import create_study
from models import (
    MultiLayerNet,
    Trainer,
    get_optimizer,
    load_dataset,
    load_network,
    save_network,
    search_split,
)

from .conftest import StudyDB, copy_db, db_checksum, run_search


def run_cli(main: Callable[[Sequence[str]], int], argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``main(argv)``; argparse's exits count as returns."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def load(db: StudyDB, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db.url)


# best_params and trial_config


def test_best_params_is_a_plain_dict_of_the_best_trials_params(studies):
    params = best_params(studies.url, "tiny")

    best = load(studies, "tiny").best_trial
    assert type(params) is dict
    assert params == best.params
    assert set(params) == {"lr", "weight_decay"}
    assert all(type(v) is float for v in params.values())


def test_best_params_include_everything_the_space_searched(studies):
    params = best_params(studies.url, "bn-dropout")

    assert set(params) == {"lr", "weight_decay", "use_batchnorm", "use_dropout", "dropout_ratio"}
    assert params["use_batchnorm"] is True and params["use_dropout"] is True


def test_trial_config_defaults_to_the_best_trial_and_maps_params_onto_keywords(studies):
    cfg = trial_config(studies.url, "bn-dropout")

    best = load(studies, "bn-dropout").best_trial
    assert isinstance(cfg, TrialSetup)
    assert cfg == trial_config(studies.url, "bn-dropout", best.number)
    assert cfg.seed == best.user_attrs["seed"]
    assert cfg.network["weight_decay_lambda"] == best.params["weight_decay"]
    assert cfg.network["dropout_ratio"] == best.params["dropout_ratio"]
    assert cfg.network["use_batchnorm"] and cfg.network["use_dropout"]
    assert cfg.network["hidden_size_list"] == [30, 30, 30]
    assert cfg.optimizer == {"name": "sgd", "lr": best.params["lr"]}
    assert cfg.trainer["epochs"] == 3
    assert cfg.data == {"dataset": "mnist-5k", "train_size": 100, "val_rate": 0.2, "seed": 0}


@pytest.mark.parametrize("study", ["tiny", "bn-dropout"])
def test_the_models_library_alone_rebuilds_the_best_trial_from_trial_config(studies, study):
    # The recipe of trial_config's docstring, with nothing from hpo but the configuration.
    cfg = trial_config(studies.url, study)
    data = load_dataset(cfg.data["dataset"], dtype=cfg.network["dtype"])
    split = search_split(data, cfg.data["train_size"], cfg.data["val_rate"], cfg.data["seed"])
    net = MultiLayerNet(**cfg.network)
    trainer = Trainer(
        net,
        get_optimizer(**cfg.optimizer),
        split.x_train,
        split.t_train,
        split.x_val,
        split.t_val,
        **cfg.trainer,
    )
    with threadpool_limits(limits=1):
        result = trainer.train()

    best = load(studies, study).best_trial
    assert result.history["val_acc"] == [best.intermediate_values[e] for e in (1, 2, 3)]
    assert result.history["val_loss"] == best.user_attrs["val_loss"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda url: best_params(url, "nope"), r"Study 'nope' is not in .*'tiny', 'bn-dropout'"),
        (lambda url: trial_config(url, "nope"), r"Study 'nope' is not in .*'diverged', 'pruned'"),
        (lambda url: best_params(url, "pruned"), r"no complete trial yet \(2 pruned\)"),
        (lambda url: best_params(url, "diverged"), r"no complete trial yet \(2 pruned\)"),
        (lambda url: trial_config(url, "tiny", 6), r"Trial numbers of study 'tiny' are 0\.\.5"),
    ],
    ids=["unknown study", "unknown study (config)", "all pruned", "all diverged", "no trial 6"],
)
def test_reading_bad_names_raises_a_value_error_that_says_what_exists(studies, call, match):
    before = db_checksum(studies.path)
    with pytest.raises(ValueError, match=match):
        call(studies.url)
    assert db_checksum(studies.path) == before


@pytest.mark.parametrize("read", [best_params, trial_config])
def test_a_missing_storage_is_an_error_and_is_not_created(tmp_path, read):
    path = tmp_path / "missing.db"
    with pytest.raises(ValueError, match=r"Storage sqlite:///.*missing\.db does not exist"):
        read(f"sqlite:///{path}", "tiny")
    assert not path.exists()


def test_a_study_not_made_by_hpo_exports_params_but_has_no_trial_config(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(storage=url, study_name="other", direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 0, 1), n_trials=1)

    assert best_params(url, "other") == study.best_params
    argv = ["--storage", url, "--study", "other"]
    code, out, _ = run_cli(export_cli.main, argv, capsys)
    assert (code, json.loads(out)) == (0, study.best_params)
    with pytest.raises(ValueError, match="no stored configuration"):
        trial_config(url, "other")
    code, _, err = run_cli(export_cli.main, [*argv, "--full"], capsys)
    assert code == 2 and "no stored configuration" in err


def test_a_trial_run_by_a_parallel_worker_process_replays_exactly(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_search(url, "two", "--trials", "4", "--jobs", "2", "--pruner", "none")

    for trial in optuna.load_study(study_name="two", storage=url).trials:
        stored = load_trial(url, "two", trial.number)
        result = train_cli.replay(stored, load_split(stored.config))
        assert result.identical, result.differences
        assert len(result.history["val_acc"]) == 3


def test_an_empty_study_says_it_has_no_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    storage = open_storage(url, heartbeat=False)
    create_study(storage, "empty", SearchConfig())
    storage.engine.dispose()

    with pytest.raises(ValueError, match=r"no complete trial yet \(no trials\)"):
        best_params(url, "empty")


def test_reading_results_leaves_the_database_byte_identical(studies):
    before = db_checksum(studies.path)
    best_params(studies.url, "tiny")
    trial_config(studies.url, "bn-dropout", 0)
    assert db_checksum(studies.path) == before


# Replay: the stored curve, reproduced bit for bit


@pytest.mark.parametrize("study", ["tiny", "bn-dropout", "pruned", "diverged"])
def test_replaying_every_trial_reproduces_its_stored_curves_exactly(studies, study, capsys):
    trials = load(studies, study).trials
    for trial in trials:
        argv = ["--storage", studies.url, "--study", study, "--trial", str(trial.number)]
        code, out, _ = run_cli(train_cli.main, [*argv, "--replay"], capsys)
        assert code == 0, out
        assert f"Replay of trial {trial.number}: IDENTICAL" in out

    states = {t.state for t in trials}
    expected = {
        "tiny": {TrialState.COMPLETE},  # and, with the default pruner, usually pruned ones
        "bn-dropout": {TrialState.COMPLETE},
        "pruned": {TrialState.PRUNED},
        "diverged": {TrialState.PRUNED},
    }[study]
    assert expected <= states


def test_a_replay_compares_every_stored_curve_with_float_equality(studies):
    for study in ("bn-dropout", "pruned", "diverged"):
        for trial in load(studies, study).trials:
            stored = load_trial(studies.url, study, trial.number)
            result = train_cli.replay(stored, load_split(stored.config))

            assert result.identical, result.differences
            n = len(trial.intermediate_values)
            assert result.history["val_acc"] == [trial.intermediate_values[e + 1] for e in range(n)]
            for name in ("train_acc", "train_loss", "val_loss"):
                assert result.history[name] == trial.user_attrs[name]
            assert result.replayed_diverged == trial.user_attrs.get("diverged")


def test_a_pruned_trial_replays_only_the_epochs_it_ran(studies):
    stored = load_trial(studies.url, "pruned", 0)
    result = train_cli.replay(stored, load_split(stored.config))

    assert stored.config.epochs == 3
    assert len(result.history["val_acc"]) == 2


def test_a_replay_that_differs_from_the_stored_curve_fails_with_exit_1(studies, tmp_path, capsys):
    db = tmp_path / "changed.db"
    copy_db(studies.path, db)
    best = load(studies, "bn-dropout").best_trial
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "UPDATE trial_intermediate_values SET intermediate_value = intermediate_value + 1e-12 "
            "WHERE trial_id = ? AND step = 2",
            (best._trial_id,),
        )
    con.close()

    argv = ["--storage", f"sqlite:///{db}", "--study", "bn-dropout", "--replay"]
    code, out, _ = run_cli(train_cli.main, argv, capsys)

    assert code == 1
    assert f"Replay of trial {best.number}: DIFFERENT" in out
    assert "val_acc in epoch 2" in out
    assert "<- differs" in out


# Retrain, test once, save, plot


def test_train_retrains_the_best_trial_tests_once_and_saves_a_loadable_model(
    studies, tmp_path, capsys
):
    model, plot = tmp_path / "model.npz", tmp_path / "curves.png"
    argv = ["--storage", studies.url, "--study", "bn-dropout", "--save", str(model)]
    code, out, _ = run_cli(train_cli.main, [*argv, "--plot", str(plot), "-q"], capsys)

    assert code == 0
    best = load(studies, "bn-dropout").best_trial
    assert f"Trial {best.number} of study 'bn-dropout'" in out
    assert f"val acc:{best.value:.4f}" in out  # the same run as in the search
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    net = load_network(model)
    cfg = trial_config(studies.url, "bn-dropout")
    assert net.config == {k: v for k, v in cfg.network.items() if k != "rng"}
    split = load_split(load_trial(studies.url, "bn-dropout").config)
    test_acc = net.accuracy(split.x_test, split.t_test)
    assert f"test acc:{test_acc:.4f} ({len(split.x_test)} test samples, evaluated once)" in out


def test_train_on_val_trains_on_training_and_validation_samples(studies):
    stored = load_trial(studies.url, "tiny")
    split = load_split(stored.config)

    plain = train_cli.retrain(stored, split)
    both = train_cli.retrain(stored, split, train_on_val=True)

    assert (plain.n_train, both.n_train) == (80, 100)
    assert plain.result.history["val_acc"] == stored.stored_curves["val_acc"]
    assert both.test_acc is not None and both.n_test == plain.n_test == 4900


@pytest.mark.parametrize("replay", [False, True], ids=["train", "replay"])
def test_a_failed_trial_is_neither_trained_nor_replayed(tmp_path, capsys, replay):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    storage = open_storage(url, heartbeat=False)
    study = create_study(storage, "failing", SearchConfig())
    lr = optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL, params={"lr": 1e-3}, distributions={"lr": lr}
        )
    )
    storage.engine.dispose()

    argv = ["--storage", url, "--study", "failing", "--trial", "0"]
    code, out, err = run_cli(train_cli.main, [*argv, "--replay"] if replay else argv, capsys)

    assert (code, out) == (2, "")
    assert "but trial 0 is FAIL" in err


def test_retraining_a_pruned_trial_is_refused(studies):
    stored = load_trial(studies.url, "pruned", 1)
    with pytest.raises(ValueError, match="only from a complete trial, but trial 1 is PRUNED"):
        train_cli.retrain(stored, load_split(stored.config))


# Export


def test_export_prints_the_best_params_as_json(studies, capsys):
    code, out, _ = run_cli(export_cli.main, ["--storage", studies.url, "--study", "tiny"], capsys)

    assert code == 0
    assert json.loads(out) == best_params(studies.url, "tiny")


@pytest.mark.parametrize("study", ["tiny", "bn-dropout", "pruned"])
def test_export_full_toml_and_json_hold_the_same_configuration(studies, study, capsys):
    argv = ["--storage", studies.url, "--study", study, "--trial", "1", "--full"]
    code_json, out_json, _ = run_cli(export_cli.main, [*argv, "--format", "json"], capsys)
    code_toml, out_toml, _ = run_cli(export_cli.main, [*argv, "--format", "toml"], capsys)

    assert code_json == code_toml == 0
    as_json, as_toml = json.loads(out_json), tomllib.loads(out_toml)
    assert as_toml == {k: v for k, v in as_json.items() if v is not None}
    cfg = trial_config(studies.url, study, 1)
    assert as_toml["network"] == cfg.network
    assert as_toml["trainer"] == cfg.trainer
    assert as_toml["params"] == load(studies, study).trials[1].params
    assert (as_toml["study"], as_toml["trial"], as_toml["seed"]) == (study, 1, cfg.seed)


def test_exported_toml_params_read_back_bit_for_bit(studies, capsys):
    argv = ["--storage", studies.url, "--study", "bn-dropout", "--format", "toml"]
    code, out, _ = run_cli(export_cli.main, argv, capsys)

    assert code == 0
    assert tomllib.loads(out) == best_params(studies.url, "bn-dropout")


# Bad input: exit 2, one line, nothing touched

MISSING = "MISSING"  # stands for a storage URL whose file does not exist

BAD_INPUT = [
    (export_cli, ["--study", "nope"], "Study 'nope' is not in"),
    (export_cli, ["--study", "tiny", "--trial", "99"], "are 0..5, but got 99"),
    (export_cli, ["--study", "tiny", "--trial", "-1"], "must be a trial number >= 0"),
    (export_cli, ["--study", "tiny", "--format", "yaml"], "invalid choice: 'yaml'"),
    (export_cli, ["--study", "pruned"], "no complete trial yet"),
    (export_cli, ["--study", "tiny", "--storage", MISSING], "does not exist"),
    (export_cli, ["--trial", "1"], "the following arguments are required: --study"),
    (train_cli, ["--study", "nope"], "the studies there: 'tiny', 'bn-dropout'"),
    (train_cli, ["--study", "tiny", "--trial", "99"], "are 0..5, but got 99"),
    (train_cli, ["--study", "pruned", "--trial", "0"], "only from a complete trial"),
    (train_cli, ["--study", "tiny", "--storage", MISSING], "does not exist"),
    (train_cli, ["--study", "tiny", "--save", "{tmp}/no/m.npz"], "--save: the folder must exist"),
    (train_cli, ["--study", "tiny", "--plot", "{tmp}/no/c.png"], "--plot: the folder must exist"),
    (train_cli, ["--study", "tiny", "--save", "{tmp}/m.pkl"], "--save must end in .npz"),
    (train_cli, ["--study", "tiny", "--plot", "{tmp}/c.gif"], "--plot must end in .png or"),
    (train_cli, ["--study", "tiny", "--save", "{tmp}/m.npz", "--replay"], "takes neither --save"),
    (train_cli, ["--study", "tiny", "--replay", "--train-on-val"], "takes neither --save"),
]


@pytest.mark.parametrize(
    ("cli", "args", "message"),
    BAD_INPUT,
    ids=[f"{c.__name__.split('.')[-1]} {' '.join(a)}" for c, a, _ in BAD_INPUT],
)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(
    studies, tmp_path, capsys, cli, args, message
):
    missing = tmp_path / "missing.db"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    args = [f"sqlite:///{missing}" if a == MISSING else a for a in args]
    if "--storage" not in args:
        args = ["--storage", studies.url, *args]
    before = db_checksum(studies.path)
    files_before = sorted(tmp_path.iterdir())

    code, out, err = run_cli(cli.main, args, capsys)

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert message in err
    assert "error: " in err
    assert db_checksum(studies.path) == before
    assert sorted(tmp_path.iterdir()) == files_before  # no storage, model or plot file created


@pytest.mark.parametrize("cli", [export_cli, train_cli])
def test_every_command_has_help(cli, capsys):
    code, out, _ = run_cli(cli.main, ["--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: python -m hpo.{cli.__name__.split('.')[-1]}")
    assert "--study" in out and "--trial" in out


def test_a_model_saved_by_train_predicts_like_the_retrained_network(studies, tmp_path):
    stored = load_trial(studies.url, "tiny")
    split = load_split(stored.config)
    model = train_cli.retrain(stored, split)
    path = tmp_path / "m.npz"
    save_network(model.network, path)

    loaded = load_network(path)
    np.testing.assert_array_equal(loaded.predict(split.x_test), model.network.predict(split.x_test))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_best_trial_is_read_without_loading_every_trial_and_agrees_with_the_ranking(
    tmp_path, direction, monkeypatch
):
    from optuna.distributions import FloatDistribution

    from hpo import record
    from hpo.results import best_trial

    url = f"sqlite:///{tmp_path / 'best.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s", direction=direction)
    best_value = 0.9 if direction == "maximize" else 0.1
    dist = {"lr": FloatDistribution(1e-6, 1e-2, log=True)}
    rows = [  # (state, value, diverged): ties, a diverged "best", infinities, pruned
        (TrialState.COMPLETE, 0.5, False),
        (TrialState.COMPLETE, best_value, True),
        (TrialState.COMPLETE, float("inf") if direction == "maximize" else -float("inf"), False),
        (TrialState.PRUNED, None, False),
        (TrialState.COMPLETE, best_value, False),
        (TrialState.COMPLETE, best_value, False),
        (TrialState.COMPLETE, 0.7, False),
    ]
    study.add_trials(
        optuna.trial.create_trial(
            state=state,
            value=value,
            params={"lr": 1e-4 * (i + 1)},
            distributions=dist,
            intermediate_values={1: 0.3},
            user_attrs={record.DIVERGED_ATTR: "x"} if div else {},
        )
        for i, (state, value, div) in enumerate(rows)
    )
    expected = record.best(study.get_trials(), maximize=direction == "maximize")
    assert expected.number == 4

    def no_full_read(*args, **kwargs):
        raise AssertionError("every trial was loaded")

    monkeypatch.setattr(study._storage, "get_all_trials", no_full_read)
    monkeypatch.setattr(study._storage._backend, "get_all_trials", no_full_read)
    assert best_trial(study).number == 4
    monkeypatch.undo()
    assert best_params(url, "s") == expected.params


def test_a_study_without_a_rankable_trial_still_says_which_states_it_has(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s", direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1})
    )
    with pytest.raises(ValueError, match="no complete trial yet .*1 pruned"):
        best_params(url, "s")
