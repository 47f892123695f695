"""The report's five figures in one call each, from a storage and a study's name.

A notebook shows the returned ``Figure`` inline (as a cell's last expression, once the notebook's
matplotlib support is on: ``%matplotlib inline``); ``python -m hpo.report`` saves the same
figures as PNG files (:func:`report_figures`). The figures are ``matplotlib.figure.Figure``
objects drawn without pyplot, so library code never selects a backend, let alone a GUI one.

Example::

    from hpo import best_curves
    best_curves("sqlite:///studies/hpo.db", "book-s2")   # the book's Best-20 grid

The storage is opened read-only and a missing SQLite file is an error, never created. The grid
ranks the study's own trials (for a later stage: with the trials seeded from its parent); the map,
the history and the epochs show every stage up to the study, each trial once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from hpo import record
from hpo.config import SearchConfig
from hpo.figures import (
    STATE_STYLE,
    Stage,
    plot_best_curves,
    plot_epochs,
    plot_history,
    plot_importances,
    plot_param_map,
)
from hpo.results import Storage, open_readonly
from hpo.stages import STAGE_ATTR, is_seeded, lineage, load_search_study
from hpo.study import stored_config

__all__ = [
    "DEFAULT_TOP",
    "FIGURES",
    "best_curves",
    "epochs",
    "history",
    "importances",
    "load_stages",
    "param_map",
    "report_figures",
]

DEFAULT_TOP = 20  # the book's grid: Best-1 .. Best-20
# The keys of report_figures, in the report's order; python -m hpo.report writes KEY.png.
FIGURES = ("best_curves", "param_map", "history", "importance", "epochs")


def load_stages(storage: optuna.storages.BaseStorage, name: str) -> list[Stage]:
    """The study ``name`` and the stages before it (parent links), stage 1 first."""
    stages = []
    for i, study in enumerate(lineage(storage, name), start=1):
        config = stored_config(study) or SearchConfig()
        own = [t for t in study.get_trials(deepcopy=False) if not is_seeded(t)]
        stages.append(
            Stage(study.study_name, int(study.user_attrs.get(STAGE_ATTR, i)), config, own)
        )
    return stages


def _counts(trials: Sequence[FrozenTrial]) -> str:
    kinds = record.count_outcomes(trials)
    return ", ".join(f"{kinds[k]} {k}" for k in STATE_STYLE) if trials else "no trials"


class _Report:
    """A study made by hpo, its trials and its stages, read once for any of the figures."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, where: str) -> None:
        self.study = load_search_study(storage, name, where)
        self.trials = self.study.get_trials(deepcopy=False)
        self.stages = load_stages(storage, name)

    def best_curves(self, top: int) -> Figure:
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"`top >= 1` (an integer) must hold, but got {top=}.")
        if not record.ranked(self.trials):
            raise ValueError(
                f"A report needs a complete trial, but study {self.study.study_name!r} has "
                f"{_counts(self.trials)}."
            )
        budget = self.stages[-1].config.epochs
        return plot_best_curves(self.study.study_name, self.trials, top, budget)

    def param_map(self) -> Figure:
        return plot_param_map(self.stages)

    def history(self) -> Figure:
        return plot_history(self.stages)

    def importance(self) -> Figure:
        return plot_importances(self.study)

    def epochs(self) -> Figure:
        return plot_epochs(self.stages)


@contextmanager
def _report(storage: Storage, study: str) -> Iterator[_Report]:
    where = storage if isinstance(storage, str) else type(storage).__name__
    with open_readonly(storage) as opened:
        yield _Report(opened, study, where)


def best_curves(storage: Storage, study: str, top: int = DEFAULT_TOP) -> Figure:
    """The book's Best-N grid (ch. 6.5.3, fig. 6-24): per epoch, validation accuracy (solid) and
    training accuracy (dashed) of the ``top`` best trials, best first, 5 panels a row, y 0..1.

    Args:
        storage: A storage URL (opened read-only; it must exist) or an Optuna storage.
        study: The study's name (for a later stage: its seeded trials rank too).
        top: Panels: the best this-many complete trials (fewer if fewer are complete).

    Raises:
        ValueError: If the storage does not exist, the study is not in it or was not made by
            hpo, ``top`` is not a positive integer, or no trial is complete.
    """
    with _report(storage, study) as report:
        return report.best_curves(top)


def param_map(storage: Storage, study: str) -> Figure:
    """Learning rate x weight decay on log axes: every trial of every stage, complete ones
    coloured by validation accuracy, the best starred, pruned, diverged and failed marked apart,
    and each stage's ranges as a rectangle.

    Raises:
        ValueError: As :func:`best_curves`, except that no complete trial is needed.
    """
    with _report(storage, study) as report:
        return report.param_map()


def history(storage: Storage, study: str) -> Figure:
    """Best-so-far validation accuracy against trial number, over all stages, stages marked.

    Raises:
        ValueError: As :func:`param_map`.
    """
    with _report(storage, study) as report:
        return report.history()


def importances(storage: Storage, study: str) -> Figure:
    """fANOVA importances of the study's parameters for validation accuracy, in its own ranges,
    or a note saying why there are none.

    Raises:
        ValueError: As :func:`param_map`.
    """
    with _report(storage, study) as report:
        return report.importance()


def epochs(storage: Storage, study: str) -> Figure:
    """Epochs each trial of every stage trained, coloured by outcome, against the full budget:
    what pruning saved.

    Raises:
        ValueError: As :func:`param_map`.
    """
    with _report(storage, study) as report:
        return report.epochs()


def report_figures(storage: Storage, study: str, top: int = DEFAULT_TOP) -> dict[str, Figure]:
    """All five figures of the report, reading the storage once.

    Returns:
        ``{"best_curves": ..., "param_map": ..., "history": ..., "importance": ...,
        "epochs": ...}`` (:data:`FIGURES`, in that order); ``python -m hpo.report`` saves each
        as ``KEY.png``.

    Raises:
        ValueError: As :func:`best_curves`.
    """
    with _report(storage, study) as report:
        return {
            "best_curves": report.best_curves(top),
            "param_map": report.param_map(),
            "history": report.history(),
            "importance": report.importance(),
            "epochs": report.epochs(),
        }
