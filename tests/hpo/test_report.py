"""The report's figures and table, for real and hand-built studies, and its refusals."""

from __future__ import annotations

import io
import shutil

import numpy as np
import optuna
import pytest
from matplotlib.image import imread
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo import report, search, stages
from hpo.config import SearchConfig
from hpo.narrowing import narrow_space
from hpo.space import space_from_dict
from hpo.storage import open_storage
from hpo.study import create_study
from hpo.study_figures import load_stages, report_figures

EPOCHS = 5
LR = FloatDistribution(1e-6, 1e-2, log=True)
WD = FloatDistribution(1e-8, 1e-4, log=True)


def trial(state, value, lr, wd=1e-6, epochs=EPOCHS, **user_attrs):
    """A trial of the book's space whose curves rise to ``value`` over ``epochs`` epochs."""
    curve = {e: value * e / epochs for e in range(1, epochs + 1)} if value is not None else {}
    return create_trial(
        state=state,
        value=value,
        params={"lr": lr, "weight_decay": wd},
        distributions={"lr": LR, "weight_decay": WD},
        intermediate_values=curve,
        user_attrs={
            "epochs": epochs,
            "train_acc": [v + 0.05 for v in curve.values()],
            **user_attrs,
        },
    )


def mixed_history(seed: int = 0) -> list:
    """Complete, pruned, diverged and failed trials."""
    rng = np.random.default_rng(seed)
    trials = [
        trial(TrialState.COMPLETE, round(rng.uniform(0.1, 0.9), 2), 10 ** rng.uniform(-6, -2))
        for _ in range(24)
    ]
    trials += [trial(TrialState.PRUNED, 0.1, 10 ** rng.uniform(-6, -2), epochs=2) for _ in range(8)]
    trials.append(
        trial(TrialState.PRUNED, 0.1, 1e-2, epochs=3, diverged={"epoch": 3, "reason": "nan loss"})
    )
    trials.append(trial(TrialState.FAIL, None, 1e-3, epochs=1))
    return trials


def store(storage, name: str, trials: list, config: SearchConfig | None = None) -> optuna.Study:
    study = create_study(storage, name, config or SearchConfig(epochs=EPOCHS))
    study.add_trials(trials)
    return study


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A database: "mixed" (every outcome), its narrowed child "mixed-s2" with own trials,
    "one" (a single complete trial of a one-parameter space) and "pruned" (none complete)."""
    path = tmp_path_factory.mktemp("template") / "t.db"
    storage = open_storage(f"sqlite:///{path}")
    parent = store(storage, "mixed", mixed_history())
    config = SearchConfig(epochs=EPOCHS)
    plan = narrow_space(space_from_dict(config.space), parent.get_trials(), parent="mixed", top=5)
    seeds = stages.seed_trials(parent.get_trials(), plan.space, "mixed")
    child = stages.create_stage(storage, "mixed-s2", config, plan, seeds)
    low, high = plan.space["lr"].low, plan.space["lr"].high
    child.add_trials(
        [
            create_trial(
                value=0.95,
                params={"lr": (low * high) ** 0.5, "weight_decay": 1e-6},
                distributions={n: p.distribution() for n, p in plan.space.items()},
                intermediate_values={e: 0.19 * e for e in range(1, EPOCHS + 1)},
                user_attrs={"epochs": EPOCHS, "train_acc": [0.2] * EPOCHS},
            )
        ]
    )
    one_space = {"lr": {"low": 1e-6, "high": 1e-2, "log": True}}
    one = create_trial(
        value=0.5,
        params={"lr": 1e-3},
        distributions={"lr": LR},
        intermediate_values={1: 0.3, 2: 0.5},
        user_attrs={"epochs": 2, "train_acc": [0.4, 0.6]},
    )
    store(storage, "one", [one], SearchConfig(epochs=2, space=one_space))
    store(storage, "pruned", [trial(TrialState.PRUNED, 0.2, 1e-3, epochs=2)])
    storage.engine.dispose()
    return path


@pytest.fixture
def db(template, tmp_path):
    path = tmp_path / "t.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}", path


def written(out, url: str, study: str) -> list[str]:
    """The files of the report in ``out``, each checked to be the figure of
    :func:`hpo.report_figures` saved as a PNG, of that figure's size."""
    files = sorted(p.name for p in out.iterdir())
    for name, fig in report_figures(url, study).items():
        data = (out / f"{name}.png").read_bytes()
        saved = io.BytesIO()
        fig.savefig(saved, format="png")
        assert data == saved.getvalue(), name
        width, height = fig.get_size_inches() * fig.dpi
        assert imread(io.BytesIO(data)).shape[:2] == (round(height), round(width))
    return files


@pytest.mark.parametrize("study", ["mixed", "mixed-s2", "one"])
def test_every_figure_is_written_for_studies_with_every_outcome_a_child_and_a_single_trial(
    db, tmp_path, capsys, study
):
    url, _ = db
    out = tmp_path / "out"
    assert report.main(["--storage", url, "--study", study, "--out", str(out)]) == 0
    assert written(out, url, study) == sorted(report.FILES)
    lines = capsys.readouterr().out.splitlines()
    # The book's table: the best complete trials, best first, then where the figures went.
    complete = [
        t
        for t in optuna.load_study(study_name=study, storage=url).get_trials()
        if t.state == TrialState.COMPLETE
    ]
    best = sorted(complete, key=lambda t: -t.value)
    assert len(lines) == min(len(best), report.DEFAULT_TOP) + 1
    assert lines[0] == f"Best-1(val acc:{best[0].value:.3g}) | " + ", ".join(
        f"{'weight decay' if n == 'weight_decay' else n}:{v:.3g}" for n, v in best[0].params.items()
    )
    assert [line.split("(")[0] for line in lines[:-1]] == [
        f"Best-{i}" for i in range(1, len(lines))
    ]
    assert lines[-1].startswith(f"Figures of {study!r}")


def test_a_later_stage_reports_its_parents_trials_once_each(db):
    url, _ = db
    storage = open_storage(url, read_only=True)
    stages = load_stages(storage, "mixed-s2")
    assert [(s.name, s.number) for s in stages] == [("mixed", 1), ("mixed-s2", 2)]
    assert len(stages[0].trials) == len(mixed_history())
    assert len(stages[1].trials) == 1  # its seeded trials are stage 1's
    storage.engine.dispose()


def test_a_real_search_study_gets_its_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/t.db"
    argv = ["--storage", url, "--study", "real", "--trials", "6", "--epochs", "3"]
    assert search.main([*argv, "--train-size", "100", "--pruner", "none", "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert report.main(["--storage", url, "--study", "real", "--out", str(out)]) == 0
    assert written(out, url, "real") == sorted(report.FILES)
    assert capsys.readouterr().out.count("Best-") == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "nope"], "Study 'nope' is not in"),
        (
            ["--study", "pruned"],
            "A report needs a complete trial, but study 'pruned' has 0 complete",
        ),
        (["--study", "mixed", "--top", "0"], "--top: must be a positive integer"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(db, tmp_path, capsys, argv, message):
    url, path = db
    before = path.read_bytes()
    out = tmp_path / "out"
    try:
        code = report.main(["--storage", url, "--out", str(out), *argv])
    except SystemExit as e:  # argparse's refusal of a bad flag value
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "hpo.report: error:" in err
    assert path.read_bytes() == before
    assert not out.exists()


def test_a_missing_storage_is_an_error_and_is_not_created(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/missing.db"
    assert report.main(["--storage", url, "--study", "x", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--study", "--storage", "--out", "--top"))
