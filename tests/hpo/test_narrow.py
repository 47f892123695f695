"""Narrowing a stage to its best trials, the child stage it creates, and the --stages pipeline."""

from __future__ import annotations

import math
import shutil

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo import narrow, runner, search
from hpo.config import SearchConfig
from hpo.narrowing import narrow_param, narrow_space, top_trials
from hpo.space import DEFAULT_SPACE, Param, space_from_dict
from hpo.stages import seed_trials
from hpo.storage import open_storage
from hpo.study import create_study

TINY = ["--epochs", "3", "--train-size", "100", "-q", "--jobs", "1"]
LR = FloatDistribution(1e-6, 1e-2, log=True)
WD = FloatDistribution(1e-8, 1e-4, log=True)


def trial(state=TrialState.COMPLETE, value=0.5, lr=1e-3, wd=1e-6, **user_attrs):
    """A finished trial of the book's space, with a 3-epoch curve ending at ``value``."""
    curve = {1: value / 3, 2: value / 2, 3: value} if value is not None else {}
    return create_trial(
        state=state,
        value=value if state != TrialState.FAIL else None,
        params={"lr": lr, "weight_decay": wd},
        distributions={"lr": LR, "weight_decay": WD},
        intermediate_values=curve if state != TrialState.FAIL else {},
        user_attrs={"epochs": 3, "train_acc": [0.2, 0.4, 0.6], **user_attrs},
    )


def random_history(seed: int, n: int = 40) -> list:
    """Random lr/wd trials; the value peaks near lr 3e-3, wd 1e-6; a third are pruned."""
    rng = np.random.default_rng(seed)
    trials = []
    for number in range(n):
        lr, wd = 10 ** rng.uniform(-6, -2), 10 ** rng.uniform(-8, -4)
        value = float(np.exp(-((math.log10(lr) + 2.5) ** 2) - 0.1 * (math.log10(wd) + 6) ** 2))
        state = TrialState.PRUNED if rng.random() < 0.33 else TrialState.COMPLETE
        trials.append(trial(state, round(value, 2), lr, wd))
        trials[-1].number = number
    return trials


def make_study(url: str, name: str, trials: list, config: SearchConfig | None = None) -> None:
    storage = open_storage(url)
    study = create_study(storage, name, config or SearchConfig(train_size=100, epochs=3))
    study.add_trials(trials)
    storage.engine.dispose()


def exit_code(main, argv: list[str]) -> int:
    """``main(argv)``, or the code of the SystemExit argparse raises for a bad flag."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("top", "top_fraction", "margin"),
    [(None, None, 0.1), (1, None, 0.05), (5, None, 0.2), (None, 0.3, 0.01), (None, 1.0, 0.5)],
)
def test_narrowed_ranges_contain_the_top_trials_and_sit_inside_the_parents(
    seed, top, top_fraction, margin
):
    trials = random_history(seed)
    result = narrow_space(DEFAULT_SPACE, trials, top=top, top_fraction=top_fraction, margin=margin)
    best = [t for t in trials if t.number in result.top_trials]
    assert len(best) == len(result.top_trials) >= 1
    for name, parent in DEFAULT_SPACE.items():
        new = result.space[name]
        assert parent.low <= new.low < new.high <= parent.high
        assert new.log and new.when == parent.when
        for t in best:
            assert new.low <= t.params[name] <= new.high


def test_the_top_trials_are_the_best_complete_ones_and_a_fraction_counts_finished_trials():
    trials = [trial(value=v) for v in (0.3, 0.9, 0.5, 0.7)] + [
        trial(TrialState.PRUNED, 0.95) for _ in range(16)
    ]
    best, rule = top_trials(trials, top_fraction=0.1)  # 10% of 20 finished: 2 trials
    assert [t.value for t in best] == [0.9, 0.7]
    assert "top 2 of 4 complete trials" in rule
    best, _ = top_trials(trials, top=10)  # capped at the complete trials
    assert [t.value for t in best] == [0.9, 0.7, 0.5, 0.3]


def test_pruned_diverged_and_failed_trials_never_define_a_range():
    good = [trial(value=0.8, lr=3e-3, wd=1e-6), trial(value=0.7, lr=5e-3, wd=3e-6)]
    bad = [
        # A pruned trial's value is its last intermediate value: high, but not a result.
        trial(TrialState.PRUNED, 0.99, lr=1e-6, wd=1e-8),
        trial(TrialState.PRUNED, 0.98, lr=1e-2, wd=1e-4, diverged={"epoch": 2, "reason": "nan"}),
        trial(TrialState.FAIL, None, lr=2e-6, wd=2e-8),
        # Even a complete trial marked diverged is not a result.
        trial(value=0.97, lr=1.5e-6, wd=1e-4, diverged={"epoch": 3, "reason": "inf"}),
    ]
    result = narrow_space(DEFAULT_SPACE, bad + good, top=10, margin=0.05)
    assert result.top_trials == [t.number for t in good]
    for t in bad:
        lr, wd = result.space["lr"], result.space["weight_decay"]
        inside = (
            lr.low <= t.params["lr"] <= lr.high and wd.low <= t.params["weight_decay"] <= wd.high
        )
        assert not inside


def test_narrowing_a_study_without_a_complete_trial_says_so():
    trials = [trial(TrialState.PRUNED, 0.5), trial(TrialState.FAIL, None)]
    with pytest.raises(
        ValueError, match="at least one complete trial.*0 complete, 1 pruned, 1 fail"
    ):
        narrow_space(DEFAULT_SPACE, trials)


@pytest.mark.parametrize(
    ("param", "values", "expected"),
    [
        (Param(1, 100), [40, 42], (30, 52)),  # int: widened by 0.1 x 99, rounded outward
        (Param(16, 512, log=True), [100], (70, 142)),  # 100 / and x 32**0.1
        (Param(0.0, 1.0, step=0.05), [0.5, 0.55], (0.4, 0.65)),
        (Param(0.0, 1.0), [0.0], (0.0, 0.1)),  # clipped to the parent
        (Param(choices=("sgd", "adam")), [], ("sgd", "adam")),
    ],
)
def test_int_stepped_and_categorical_parameters_keep_their_kind(param, values, expected):
    new = narrow_param(param, values, margin=0.1)
    if param.choices is not None:
        assert new.choices == expected
        return
    assert (new.low, new.high) == pytest.approx(expected)
    assert type(new.low) is type(param.low) and new.step == param.step


def test_seeded_trials_are_the_parents_finished_ones_inside_the_child_space():
    inside = [trial(value=0.8, lr=3e-3), trial(TrialState.PRUNED, 0.4, lr=4e-3)]
    outside = [trial(value=0.2, lr=1e-6)]
    failed = [trial(TrialState.FAIL, None, lr=3e-3)]
    space = {"lr": Param(1e-3, 1e-2, log=True), "weight_decay": DEFAULT_SPACE["weight_decay"]}
    for number, t in enumerate(inside + outside + failed):
        t.number = number
    seeds = seed_trials(inside + outside + failed, space, parent="p")
    assert [s.user_attrs["seeded_from"] for s in seeds] == [
        {"study": "p", "trial": 0},
        {"study": "p", "trial": 1},
    ]
    assert [s.state for s in seeds] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert seeds[0].distributions["lr"] == FloatDistribution(1e-3, 1e-2, log=True)
    assert seeds[1].intermediate_values == inside[1].intermediate_values


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A database with a stored stage "hand" (30 trials of a random history, in a 3-epoch,
    100-sample experiment), "pruned" (no complete trial) and "taken" (empty)."""
    path = tmp_path_factory.mktemp("template") / "t.db"
    url = f"sqlite:///{path}"
    make_study(url, "hand", random_history(0, 30))
    make_study(url, "pruned", [trial(TrialState.PRUNED, 0.5), trial(TrialState.FAIL, None)])
    make_study(url, "taken", [])
    return path


@pytest.fixture
def hand_built(template, tmp_path):
    """A fresh copy of the template database: its URL and path."""
    path = tmp_path / "t.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}", path


def test_a_child_study_carries_its_parent_link_its_config_and_seeded_trials(hand_built, capsys):
    url, _ = hand_built
    assert narrow.main(["--storage", url, "--study", "hand", "--top", "4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "hand (stage 1)" in out and "hand-s2 (stage 2)" in out  # ranges side by side
    parent, child = load(url, "hand"), load(url, "hand-s2")
    assert child.user_attrs["parent_study"] == "hand"
    assert child.user_attrs["stage"] == 2
    derived = child.user_attrs["narrowing"]
    assert len(derived["top_trials"]) == 4 and derived["margin"] == 0.1
    config = child.user_attrs["config"]
    assert config["sampler"] == "tpe" and config["epochs"] == 3
    space = space_from_dict(config["space"])
    assert space["lr"].low == derived["ranges"]["lr"]["new"][0]
    seeded = child.get_trials()
    assert seeded and all(t.user_attrs["seeded_from"]["study"] == "hand" for t in seeded)
    by_number = {t.number: t for t in parent.get_trials()}
    for t in seeded:
        original = by_number[t.user_attrs["seeded_from"]["trial"]]
        assert (t.state, t.value, t.params) == (original.state, original.value, original.params)
        assert all(space[n].low <= v <= space[n].high for n, v in t.params.items())
    inside = [
        t
        for t in parent.get_trials()
        if all(space[n].low <= v <= space[n].high for n, v in t.params.items())
    ]
    assert len(seeded) == len(inside)


def test_trials_on_a_seeded_child_adds_exactly_that_many_new_trials(hand_built):
    url, _ = hand_built
    assert narrow.main(["--storage", url, "--study", "hand", "--trials", "4", *TINY]) == 0
    trials = load(url, "hand-s2").get_trials()
    new = [t for t in trials if "seeded_from" not in t.user_attrs]
    assert len(trials) > len(new) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in new)


def test_stages_run_as_linked_studies_named_by_stage_and_the_same_command_resumes(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    argv = ["--storage", url, "--study", "book", "--stages", "2", "--trials", "6", *TINY]
    assert search.main(argv) == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["book-s1", "book-s2"]
    s1, s2 = load(url, "book-s1"), load(url, "book-s2")
    assert s1.user_attrs["config"]["sampler"] == "random"  # stage 1 as the book does
    assert s2.user_attrs["config"]["sampler"] == "tpe"
    assert s2.user_attrs["parent_study"] == "book-s1" and s2.user_attrs["stage"] == 2
    own = [t for t in s2.get_trials() if "seeded_from" not in t.user_attrs]
    assert len(s1.get_trials()) == 6 and len(own) == 6
    before = len(s2.get_trials())
    assert search.main(argv) == 0  # nothing left to do
    assert len(load(url, "book-s2").get_trials()) == before


def test_sampler_tpe_continues_a_random_study_over_all_its_stored_trials(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/t.db"
    base = ["--storage", url, "--study", "cont", *TINY]
    assert search.main([*base, "--sampler", "random", "--trials", "12"]) == 0
    seen = []
    real = runner.make_sampler

    def spying(name, seed):
        sampler = real(name, seed)
        if isinstance(sampler, optuna.samplers.TPESampler):
            sample = sampler.sample_relative

            def sample_relative(study, trial, space):
                finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
                seen.append(len(finished))
                return sample(study, trial, space)

            sampler.sample_relative = sample_relative
        return sampler

    monkeypatch.setattr(runner, "make_sampler", spying)
    assert search.main([*base, "--sampler", "tpe", "--trials", "3"]) == 0
    study = load(url, "cont")
    assert study.user_attrs["config"]["sampler"] == "tpe"
    assert len(study.get_trials()) == 15
    assert seen[:1] == [12]  # TPE's first trial already sees the 12 random ones


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "nope"], "Study 'nope' is not in"),
        (["--study", "pruned"], "at least one complete trial"),
        (["--study", "hand", "--top", "0"], "--top: must be a positive integer"),
        (["--study", "hand", "--top", "2", "--top-fraction", "0.5"], "not allowed with"),
        (["--study", "hand", "--margin", "0"], "--margin: must be a positive number"),
        (["--study", "hand", "--lr", "1e-4", "1e-3"], "--lr: narrowing derives the ranges"),
        (["--study", "hand", "--epochs", "5"], "exists with epochs=3"),
        (["--study", "hand", "--child", "taken"], "Study 'taken' exists already"),
        (["--study", "hand", "--stages", "2"], "more than one stage needs --trials"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_the_database_as_it_was(
    hand_built, capsys, argv, message
):
    url, path = hand_built
    before = path.read_bytes()
    assert exit_code(narrow.main, ["--storage", url, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "hpo.narrow: error:" in err
    assert path.read_bytes() == before


def test_a_missing_storage_is_an_error_and_is_not_created(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/missing.db"
    assert narrow.main(["--storage", url, "--study", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_help_shows_the_narrowing_flags_and_hides_the_ranges_it_derives(capsys):
    assert exit_code(narrow.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--top-fraction" in out and "--margin" in out and "--child" in out
    assert "--weight-decay" not in out


def test_a_pipeline_stops_with_a_message_when_a_stage_has_nothing_to_narrow_from(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/t.db"
    make_study(url, "p-s1", [trial(TrialState.PRUNED, 0.1), trial(TrialState.PRUNED, 0.2)])
    argv = ["--storage", url, "--study", "p", "--stages", "2", "--trials", "2", *TINY]
    assert search.main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot narrow 'p-s1': Narrowing needs at least one complete trial" in err
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["p-s1"]
