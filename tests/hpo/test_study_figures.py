"""The one-call figures of a stored study: what each draws, checked against the stored trials."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Rectangle
from optuna.trial import TrialState

import hpo
from hpo import record
from hpo.figures import STATE_STYLE
from hpo.space import space_from_dict
from hpo.stages import is_seeded, lineage
from hpo.storage import open_storage
from hpo.study import stored_config
from hpo.study_figures import FIGURES, load_stages
from tests.hpo.test_report import mixed_history, template  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def url(template):  # noqa: F811 (the imported fixture)
    """The hand-built studies of test_report (read only): "mixed" has 24 complete trials, its
    child "mixed-s2" one more of its own, "one" a single trial, "pruned" none complete."""
    return f"sqlite:///{template}"


def stored(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials()


def own_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """Every stage's own (not seeded) trials up to ``study``, stage 1 first: what the map, the
    history and the epochs draw."""
    storage = open_storage(url, read_only=True)
    try:
        return [t for s in lineage(storage, study) for t in s.get_trials() if not is_seeded(t)]
    finally:
        storage.engine.dispose()


def visible(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize(
    ("study", "top", "panels"),
    [("mixed", 20, 20), ("mixed", 3, 3), ("mixed", 30, 24), ("mixed-s2", 20, 20), ("one", 20, 1)],
)
def test_best_curves_draws_the_stored_curves_of_the_best_trials_in_rank_order(
    url, study, top, panels
):
    fig = hpo.best_curves(url, study, top=top)
    assert isinstance(fig, Figure)
    axes = visible(fig)
    assert len(axes) == panels
    best = record.ranked(stored(url, study))[:top]
    for i, (ax, trial) in enumerate(zip(axes, best, strict=True)):
        val, train = ax.get_lines()
        curves = record.curves(trial)
        assert list(val.get_xdata()) == sorted(trial.intermediate_values)
        assert list(val.get_ydata()) == curves["val_acc"]
        assert (val.get_linestyle(), train.get_linestyle()) == ("-", "--")
        assert list(train.get_xdata()) == list(range(1, len(curves["train_acc"]) + 1))
        assert list(train.get_ydata()) == curves["train_acc"]
        assert ax.get_title() == f"Best-{i + 1}"
        assert ax.get_ylim() == (0, 1)
        assert ax.texts[0].get_text().startswith(f"val {trial.value:.2f}\n")
    n_complete = len(record.ranked(stored(url, study)))
    assert f"{study}: Best-1" in fig.get_suptitle()
    assert f"of {n_complete} complete trial" in fig.get_suptitle()


def test_best_curves_of_a_real_search_show_its_complete_trials(studies):
    fig = hpo.best_curves(studies.url, "tiny")
    best = record.ranked(stored(studies.url, "tiny"))
    assert 0 < len(best) < 20
    axes = visible(fig)
    assert len(axes) == len(best)
    for ax, trial in zip(axes, best, strict=True):
        val, train = ax.get_lines()
        assert list(val.get_ydata()) == record.curves(trial)["val_acc"]
        assert list(train.get_ydata()) == trial.user_attrs["train_acc"]
        assert len(val.get_ydata()) == 3  # the fixture's epochs


def scatter(ax) -> dict[str, PathCollection]:
    return {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}


@pytest.mark.parametrize("study", ["mixed", "mixed-s2"])
def test_param_map_places_every_trial_of_every_stage_at_its_lr_and_weight_decay(url, study):
    fig = hpo.param_map(url, study)
    ax = fig.axes[0]
    trials = own_trials(url, study)
    points = scatter(ax)
    star = next(c for label, c in points.items() if label.startswith("best: val acc"))
    drawn = sorted(
        tuple(xy) for label, c in points.items() if c is not star for xy in c.get_offsets()
    )
    assert drawn == sorted((t.params["lr"], t.params["weight_decay"]) for t in trials)
    complete = sorted((t for t in trials if record.outcome(t) == "complete"), key=lambda t: t.value)
    coloured = points[f"complete ({len(complete)}), coloured by val acc"]
    assert list(coloured.get_array()) == [t.value for t in complete]  # the best drawn last
    best = record.ranked(trials)[0]
    assert [tuple(xy) for xy in star.get_offsets()] == [
        (best.params["lr"], best.params["weight_decay"])
    ]
    kinds = record.count_outcomes(trials)
    for kind in ("pruned", "diverged", "failed"):
        assert (
            len(points[f"{STATE_STYLE[kind]['label']} ({kinds[kind]})"].get_offsets())
            == (kinds[kind])
        )
    # One rectangle per stage: the stage's lr x weight-decay ranges.
    storage = open_storage(url, read_only=True)
    spaces = [space_from_dict(stored_config(s).space) for s in lineage(storage, study)]
    storage.engine.dispose()
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    np.testing.assert_allclose(
        [
            (b.get_x(), b.get_y(), b.get_x() + b.get_width(), b.get_y() + b.get_height())
            for b in boxes
        ],
        [
            (s["lr"].low, s["weight_decay"].low, s["lr"].high, s["weight_decay"].high)
            for s in spaces
        ],
        rtol=1e-12,
    )
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlabel() == "learning rate (log scale)"
    assert ax.get_ylabel() == "weight decay (L2 lambda) (log scale)"
    stages = f" in {len(spaces)} stages" if len(spaces) > 1 else ""
    assert ax.get_title() == (
        f"{study}: {len(trials)} trials{stages}, learning rate x weight decay (L2 lambda)"
    )


def running_best(trials) -> list[float]:
    best, out = -math.inf, []
    for t in trials:
        if record.outcome(t) == "complete":
            best = max(best, t.value)
        out.append(best if best > -math.inf else math.nan)
    return out


@pytest.mark.parametrize("source", ["mixed", "mixed-s2", "real"])
def test_history_draws_the_running_best_over_every_stage(url, studies, source):
    url, study = (studies.url, "tiny") if source == "real" else (url, source)
    fig = hpo.history(url, study)
    ax = fig.axes[0]
    trials = own_trials(url, study)
    step = ax.get_lines()[0]
    assert step.get_drawstyle() == "steps-post"
    assert list(step.get_xdata()) == list(range(1, len(trials) + 1))
    np.testing.assert_array_equal(step.get_ydata(), running_best(trials))
    # A dot per complete and per pruned trial, at its trial number and value.
    dots = sorted(tuple(c.get_offsets()[0]) for c in ax.collections)
    assert dots == sorted(
        (i, t.value)
        for i, t in enumerate(trials, start=1)
        if record.outcome(t) in ("complete", "pruned")
    )
    best = max(t.value for t in trials if record.outcome(t) == "complete")
    assert ax.get_title() == f"{study}: search history over {len(trials)} trials; best {best:.3g}"
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "trial (in the order the stages ran)",
        "validation accuracy",
    )
    stage_lines = ax.get_lines()[1:]  # a dashed line where each later stage starts
    assert len(stage_lines) == len(load_stages_of(url, study)) - 1


def load_stages_of(url: str, study: str):
    storage = open_storage(url, read_only=True)
    try:
        return load_stages(storage, study)
    finally:
        storage.engine.dispose()


def test_importances_are_fanovas_for_the_two_parameters_of_a_real_search(studies):
    fig = hpo.importances(studies.url, "tiny")
    ax = fig.axes[0]
    study = optuna.load_study(study_name="tiny", storage=studies.url)
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    labels = {"lr": "learning rate", "weight_decay": "weight decay (L2 lambda)"}
    bars = {
        t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches, strict=True)
    }
    assert bars == pytest.approx({labels[n]: v for n, v in expected.items()})
    assert sum(bars.values()) == pytest.approx(1.0)
    assert ax.get_title().startswith("tiny: parameter importance for validation accuracy")


@pytest.mark.parametrize(
    ("study", "note"),
    [
        ("one", "Importances need at least 2 complete trials; the study has 1."),
        ("pruned", "Importances need at least 2 complete trials; the study has 0."),
    ],
)
def test_importances_without_enough_to_measure_say_why(url, study, note):
    ax = hpo.importances(url, study).axes[0]
    assert [t.get_text() for t in ax.texts] == [note]
    assert not ax.patches


@pytest.mark.parametrize("study", ["mixed-s2", "pruned"])
def test_epochs_draws_a_bar_per_trial_of_its_epochs_coloured_by_outcome(url, study):
    ax = hpo.epochs(url, study).axes[0]
    trials = own_trials(url, study)
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    assert [round(b.get_x() + b.get_width() / 2) for b in bars] == list(range(1, len(trials) + 1))
    assert [b.get_height() for b in bars] == [record.epochs_run(t) for t in trials]
    assert [b.get_facecolor() for b in bars] == [
        to_rgba(STATE_STYLE[record.outcome(t)]["color"]) for t in trials
    ]
    budget = sum(s.config.epochs for s in load_stages_of(url, study) for _ in s.trials)
    total = sum(record.epochs_run(t) for t in trials)
    assert ax.get_title().startswith(f"{study}: epochs trained, {total} of {budget}; pruning saved")


def test_report_figures_are_the_five_figures_in_the_reports_order(url):
    figures = hpo.report_figures(url, "mixed-s2", top=4)
    assert tuple(figures) == FIGURES
    assert all(isinstance(f, Figure) for f in figures.values())
    assert len(visible(figures["best_curves"])) == 4
    assert figures["history"].axes[0].get_title().startswith("mixed-s2: search history over")


def test_an_optuna_storage_object_works_as_well_as_a_url(url):
    storage = open_storage(url, read_only=True)
    try:
        fig = hpo.best_curves(storage, "mixed", top=2)
    finally:
        storage.engine.dispose()
    assert len(visible(fig)) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda u: hpo.best_curves(u, "nope"), "Study 'nope' is not in sqlite:///"),
        (lambda u: hpo.history(u, "nope"), "the studies there: 'mixed', "),
        (
            lambda u: hpo.best_curves(u, "pruned"),
            "A report needs a complete trial, but study 'pruned' has 0 complete, 1 pruned",
        ),
        (lambda u: hpo.report_figures(u, "pruned"), "A report needs a complete trial"),
        (lambda u: hpo.best_curves(u, "mixed", top=0), "`top >= 1` (an integer) must hold"),
    ],
)
def test_bad_input_raises_value_error_saying_what_is_wrong(url, call, message):
    with pytest.raises(ValueError, match=None) as error:
        call(url)
    assert message in str(error.value)


def test_a_missing_storage_is_an_error_and_is_not_created(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        hpo.param_map(f"sqlite:///{tmp_path}/missing.db", "x")
    assert not (tmp_path / "missing.db").exists()


def test_the_figures_need_no_pyplot_and_no_gui_backend(url):
    # hpo loads matplotlib only when a figure function is first asked for; saving a figure uses
    # the Agg canvas, and nothing ever imports pyplot (which would pick a backend, maybe a GUI).
    code = (
        "import io, sys; import hpo; assert 'matplotlib' not in sys.modules; "
        f"figures = hpo.report_figures({url!r}, 'mixed-s2'); "
        "[f.savefig(io.BytesIO(), format='png') for f in figures.values()]; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "print(sorted(m for m in sys.modules if m.startswith('matplotlib.backends.backend_')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['matplotlib.backends.backend_agg']"]


def test_the_mixed_study_has_every_outcome(url):
    # What the tests above rely on: "mixed" is hand-built with every outcome, 24 complete.
    kinds = record.count_outcomes(stored(url, "mixed"))
    assert kinds["complete"] == 24 and len(stored(url, "mixed")) == len(mixed_history())
    assert all(kinds[k] for k in STATE_STYLE)
    assert {t.state for t in stored(url, "mixed")} >= {TrialState.PRUNED, TrialState.FAIL}


def test_a_figure_shows_inline_in_a_notebook_without_pyplot(url):
    # IPython (what Jupyter runs) displays an object by its _repr_png_; a bare Figure has none.
    formatters = pytest.importorskip("IPython.core.formatters")
    fig = hpo.history(url, "mixed")
    data, _ = formatters.DisplayFormatter().format(fig)
    assert set(data) == {"text/plain", "image/png"}
    image = imread(io.BytesIO(data["image/png"]))
    assert image.ndim == 3 and image.shape[1] > 500  # a real image, about the figure's width
