"""The parameter table (hpo.params) and the checks of a search space before a study is written:
the table agrees with ``models``, bad spaces exit 2 with one line and write nothing, good ones
pass."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from hpo import checks, search
from hpo.checks import check_space, corners
from hpo.config import SearchConfig
from hpo.objective import trial_setup
from hpo.params import NETWORK, OPTIMIZER, PARAMS, TRAINER
from hpo.space import DEFAULT_SPACE, KNOWN_PARAMS, Param, load_space, space_to_dict
from models import OPTIMIZERS, MultiLayerNet, Trainer, get_optimizer, init_std
from models.network import ACTIVATIONS

from .conftest import BN_DROPOUT_SPACE, db_checksum

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--train-size", "100", "--epochs", "2", "-q", "--hidden", "10", "--jobs", "1"]
CALLS = {NETWORK: MultiLayerNet, OPTIMIZER: get_optimizer, TRAINER: Trainer}


# The table agrees with models.


@pytest.mark.parametrize("name", PARAMS)
def test_every_parameter_feeds_a_keyword_its_models_call_accepts(name):
    spec = PARAMS[name]
    assert spec.kind in ("float", "int", "categorical", "bool")
    assert spec.scale in ("log", "linear")
    if spec.feeds == OPTIMIZER and spec.keyword != "name":
        # get_optimizer passes it on: every optimizer it applies to takes it, and no other does.
        applies_to = spec.applies.get("optimizer", tuple(OPTIMIZERS))
        for optimizer, cls in OPTIMIZERS.items():
            takes = spec.keyword in inspect.signature(cls).parameters
            assert takes == (optimizer in applies_to), (name, optimizer)
    else:
        assert spec.keyword in inspect.signature(CALLS[spec.feeds]).parameters


def test_the_choices_are_the_names_models_knows():
    assert set(PARAMS["optimizer"].names) == set(OPTIMIZERS)
    assert set(PARAMS["activation"].names) == set(ACTIVATIONS)
    for name in PARAMS["weight_init_std"].names:
        assert init_std(name, 4) > 0
    assert PARAMS["use_batchnorm"].names == PARAMS["use_dropout"].names == (False, True)


def test_every_applies_rule_names_values_of_a_categorical_parameter():
    for spec in PARAMS.values():
        for other, values in spec.applies.items():
            assert PARAMS[other].kind in ("categorical", "bool")
            assert set(values) <= set(PARAMS[other].names)


def test_the_readme_lists_exactly_the_tables_parameters():
    readme = (ROOT / "README.md").read_text()
    line = readme[readme.index("Known parameters:") :].split("\n\n")[0]
    assert re.findall(r"`(\w+)`", line) == list(PARAMS) == list(KNOWN_PARAMS)


# (parameter, value, whether models accepts it): the table's bounds are where models' are.
EDGES = [
    ("lr", 0.0, False),
    ("lr", 1e-300, True),
    ("weight_decay", 0.0, True),
    ("weight_decay", -1e-12, False),
    ("momentum", 0.0, True),
    ("momentum", 1.0, False),
    ("dropout_ratio", 0.0, True),
    ("dropout_ratio", 1.0, False),
    ("batch_size", 1, True),
    ("batch_size", 0, False),
    ("hidden_size", 1, True),
    ("hidden_size", 0, False),
    ("n_layers", 1, True),  # models would take 0 hidden layers too; 1..20 is the table's limit
    ("weight_init_std", 1e-300, True),
    ("weight_init_std", 0.0, False),
]


@pytest.mark.parametrize(("name", "value", "accepted"), EDGES)
def test_the_tables_ranges_end_where_models_starts_refusing(name, value, accepted):
    assert (value in PARAMS[name].interval) == accepted
    params = {name: value}
    if name == "momentum":
        params["optimizer"] = "momentum"
    try:
        checks._try_corner(SearchConfig(hidden=[3]), params)
    except ValueError:
        assert not accepted
    else:
        assert accepted


@pytest.mark.parametrize("name", PARAMS)
def test_a_sampled_parameter_reaches_the_keyword_the_table_names(name):
    spec = PARAMS[name]
    value = {"float": 0.25, "int": 3, "bool": True}.get(spec.kind) or spec.names[-1]
    params = {name: value, **({"optimizer": "momentum"} if name == "momentum" else {})}
    setup = trial_setup(SearchConfig(), params, seed=0)
    fed = {NETWORK: setup.network, OPTIMIZER: setup.optimizer, TRAINER: setup.trainer}
    got = fed[spec.feeds][spec.keyword]
    if spec.keyword == "hidden_size_list":
        assert got == ([3] * 6 if name == "hidden_size" else [100] * 3)
    else:
        assert got == value


# Bad spaces: exit 2, one line, nothing written.

REFUSED = [
    # (space file or None, extra flags, what the one-line message must say)
    ('[optimizer]\nchoices = ["sgd", "bogus"]', [], "`optimizer.choices` must be names"),
    ('[activation]\nchoices = ["relu", "swish"]', [], "(relu, sigmoid, tanh), but got 'swish'"),
    ('[weight_init_std]\nchoices = ["he", "hee"]', [], "but got 'hee'"),
    ('[use_dropout]\nchoices = ["true"]', [], "must be true or false, but got 'true'"),
    ("[use_batchnorm]\nchoices = [1]", [], "must be true or false, but got 1"),
    ("[optimizer]\nlow = 1\nhigh = 2", [], "`optimizer` is categorical: it takes `choices`"),
    ("[batch_size]\nchoices = [32.5]", [], "must be an integer"),
    ("[dropout_ratio]\nlow = 0.1\nhigh = 1.5", [], "must lie in [0, 1)"),
    ("[momentum]\nlow = -0.5\nhigh = 0.9", ["--optimizer", "momentum"], "but got low=-0.5"),
    ("[lr]\nlow = 0.0\nhigh = 0.1", [], "`lr.low` must lie in (0, inf)"),
    ("[weight_decay]\nlow = -1.0\nhigh = 0.1", [], "`weight_decay.low` must lie in [0, inf)"),
    ("[hidden_size]\nlow = 10\nhigh = 10000", [], "`hidden_size.high` must lie in [1, 4096]"),
    ("[hidden_size]\nlow = 10.5\nhigh = 100", [], "`hidden_size.low` must be an integer"),
    ("[n_layers]\nlow = 0\nhigh = 3", [], "`n_layers.low` must lie in [1, 20]"),
    ("[n_layers]\nlow = 2\nhigh = 21", [], "`n_layers.high` must lie in [1, 20]"),
    ("[batch_size]\nlow = 0\nhigh = 100", [], "`batch_size.low` must lie in [1, inf)"),
    ("[lr]\nlow = 1e-3\nhigh = inf", [], "`lr.high` must be a finite number"),
    (None, ["--lr", "1", "inf"], "--lr: LOW and HIGH must be finite numbers"),
    (None, ["--weight-decay", "nan", "1e-4"], "--weight-decay: LOW and HIGH must be finite"),
    ("[hidden_size]\nlow = 100\nhigh = 50", [], "`low < high` must hold for `hidden_size`"),
    ("[weight_decay]\nlow = 0.0\nhigh = 1e-4\nlog = true", [], "A log scale needs `low > 0`"),
    ('[lr]\nlow = 1e-4\nhigh = 1e-1\nlog = "no"', [], "`lr.log` must be true or false"),
    ("[lr]\nlow = 1e-4\nhigh = 1e-1\nstep = true", [], "`lr.step` must be a number"),
    ("[hidden_size]\nlow = 10\nhigh = 100\nstep = 0.5", [], "must be a whole number"),
    ("[dropout_ratio]\nlow = 0.1\nhigh = 0.2\nstep = 0.5", [], "`dropout_ratio.step <= high"),
    (
        "[momentum]\nlow = 0.1\nhigh = 0.9\nwhen = {momentum = [0.5]}",
        ["--optimizer", "momentum"],
        "names `momentum` itself",
    ),
    (
        '[momentum]\nlow = 0.1\nhigh = 0.9\nwhen = {optimizer = ["momentum"]}',
        [],
        "`momentum.when` names `optimizer`, which the space does not sample",
    ),
    (
        '[optimizer]\nchoices = ["sgd", "momentum"]\n'
        '[momentum]\nlow = 0.1\nhigh = 0.9\nwhen = {optimizer = ["bogus"]}',
        [],
        "`momentum.when` must list values of `optimizer`",
    ),
    (
        '[optimizer]\nchoices = ["sgd", "momentum"]\n'
        '[momentum]\nlow = 0.1\nhigh = 0.9\nwhen = {optimizer = ["nesterov"]}',
        [],
        "so that momentum is ever sampled",
    ),
    (
        '[optimizer]\nchoices = ["sgd", "adam"]\n[momentum]\nlow = 0.5\nhigh = 0.99',
        [],
        "but optimizer may be sgd, adam only, so momentum would never be used",
    ),
    (
        '[optimizer]\nchoices = ["sgd", "momentum", "adam"]\n[momentum]\nlow = 0.5\nhigh = 0.99',
        [],
        "momentum applies only to optimizer momentum/nesterov, but optimizer may be sgd, adam; "
        'add `when = {optimizer = ["momentum", "nesterov"]}` to [momentum].',
    ),
    (
        '[optimizer]\nchoices = ["sgd", "momentum"]\n'
        '[momentum]\nlow = 0.5\nhigh = 0.99\nwhen = {optimizer = ["momentum", "sgd"]}',
        [],
        'but optimizer may be sgd; set `when = {optimizer = ["momentum", "nesterov"]}` in',
    ),
    ("[momentum]\nlow = 0.5\nhigh = 0.99", [], "optimizer is sgd in this study (--optimizer)"),
    (
        "[use_dropout]\nchoices = [true, false]\n[dropout_ratio]\nlow = 0.1\nhigh = 0.5",
        [],
        "add `when = {use_dropout = [true]}` to [dropout_ratio]",
    ),
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A database that already holds a study made by a tiny search."""
    db = tmp_path_factory.mktemp("stored") / "s.db"
    assert search.main(["--storage", f"sqlite:///{db}", "--trials", "2", *TINY]) == 0
    return db


def exit_code(argv: list[str]) -> int:
    try:
        return search.main(argv)
    except SystemExit as e:  # argparse's errors
        return e.code


@pytest.mark.parametrize("where", ["existing database", "fresh path"])
@pytest.mark.parametrize(("toml", "flags", "message"), REFUSED)
def test_a_bad_space_exits_2_with_one_line_and_writes_nothing(
    stored, tmp_path, capsys, where, toml, flags, message
):
    db = stored if where == "existing database" else tmp_path / "fresh.db"
    before = db_checksum(db) if db.exists() else None
    args = list(flags)
    if toml is not None:
        (tmp_path / "space.toml").write_text(toml + "\n")
        args += ["--space", str(tmp_path / "space.toml")]
    capsys.readouterr()

    # A new study in the existing database, so that the check, not a conflict, speaks.
    code = exit_code(["--storage", f"sqlite:///{db}", "--study", "new", *TINY, *args])

    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("hpo.search: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in out + err
    if before is None:
        assert [p.name for p in tmp_path.iterdir()] == (["space.toml"] if toml else [])
    else:
        assert db_checksum(db) == before


# The backstop: corners built as trials build them.


def test_the_backstop_catches_what_the_table_misses(monkeypatch):
    # Without its applies rule, momentum beside SGD is only found by building the optimizer.
    monkeypatch.setitem(PARAMS, "momentum", dataclasses.replace(PARAMS["momentum"], applies={}))
    space = {
        "lr": Param(1e-3, 1e-1, log=True),
        "optimizer": Param(choices=("momentum", "sgd")),
        "momentum": Param(0.5, 0.9),
    }
    with pytest.raises(ValueError, match=r"corner \(lr=0\.001, optimizer='sgd', momentum=0\.5\)"):
        check_space(SearchConfig(space=space_to_dict(space)))


@pytest.mark.filterwarnings("ignore:The distribution is specified by:UserWarning")
def test_corners_take_every_choice_and_both_ends_of_every_range_under_their_conditions():
    space = {
        "optimizer": Param(choices=("sgd", "momentum")),
        "momentum": Param(0.5, 0.9, when={"optimizer": ("momentum",)}),
        "batch_size": Param(16, 100, step=16),
    }
    got = corners(space)
    assert got == [
        {"optimizer": "sgd", "batch_size": 16},
        {"optimizer": "sgd", "batch_size": 96},  # Optuna's end of the step grid
        {"optimizer": "momentum", "momentum": 0.5, "batch_size": 16},
        {"optimizer": "momentum", "momentum": 0.9, "batch_size": 96},
    ]


def test_too_many_combinations_take_each_choice_once(monkeypatch):
    monkeypatch.setattr(checks, "MAX_CORNERS", 8)
    space = {
        "optimizer": Param(choices=tuple(OPTIMIZERS)),
        "activation": Param(choices=tuple(ACTIVATIONS)),
    }
    got = corners(space)
    assert len(got) == 1 + (len(OPTIMIZERS) - 1) + (len(ACTIVATIONS) - 1)
    assert {c["optimizer"] for c in got} == set(OPTIMIZERS)
    assert {c["activation"] for c in got} == set(ACTIVATIONS)


# Good spaces still pass.


def readme_spaces() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def docstring_space() -> str:
    from hpo import space

    block = space.__doc__.split("::")[1].split("Parameter names")[0]
    return "\n".join(line.strip() for line in block.splitlines())


GOOD = [
    *readme_spaces(),
    docstring_space(),
    BN_DROPOUT_SPACE,
    '[optimizer]\nchoices = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]\n'
    '[momentum]\nlow = 0.0\nhigh = 0.99\nwhen = {optimizer = ["momentum", "nesterov"]}\n'
    '[activation]\nchoices = ["relu", "sigmoid", "tanh"]\n'
    '[weight_init_std]\nchoices = ["relu", "he", "sigmoid", "xavier", 0.01]\n'
    "[use_batchnorm]\nchoices = [true, false]\n[use_dropout]\nchoices = [true, false]\n"
    "[dropout_ratio]\nlow = 0.0\nhigh = 0.5\nwhen = {use_dropout = [true]}\n"
    "[batch_size]\nlow = 1\nhigh = 512\nlog = true\n[n_layers]\nlow = 1\nhigh = 20\n"
    "[hidden_size]\nlow = 1\nhigh = 4096\nlog = true\n[lr]\nlow = 1\nhigh = 10\n",
    "[dropout_ratio]\nlow = 0.1\nhigh = 0.5\n",  # a sampled ratio turns Dropout on
    "[hidden_size]\nlow = 16\nhigh = 256\nstep = 16\n[weight_init_std]\nlow = 0.001\nhigh = 0.1",
]


def test_the_readme_has_a_space_to_check():
    assert readme_spaces()


@pytest.mark.parametrize("toml", GOOD, ids=[f"good{i}" for i in range(len(GOOD))])
def test_a_good_space_passes_every_check(tmp_path, toml):
    (tmp_path / "space.toml").write_text(toml)
    space = load_space(tmp_path / "space.toml")
    check_space(SearchConfig(space=space_to_dict(space)))


def test_the_default_space_passes_and_integer_bounds_of_a_float_parameter_stay_float(tmp_path):
    check_space(SearchConfig(space=space_to_dict(DEFAULT_SPACE)))
    (tmp_path / "space.toml").write_text("[lr]\nlow = 1\nhigh = 10\n")
    lr = load_space(tmp_path / "space.toml")["lr"]
    assert not lr.is_int and isinstance(lr.low, float)


def test_a_good_space_runs_its_search(tmp_path, capsys):
    (tmp_path / "space.toml").write_text(readme_spaces()[0])
    args = ["--storage", f"sqlite:///{tmp_path / 's.db'}", *TINY, "--trials", "1"]
    assert search.main([*args, "--space", str(tmp_path / "space.toml")]) == 0
    assert "error" not in capsys.readouterr().err
