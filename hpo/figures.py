"""The report's figures (``python -m hpo.report``), each drawn from a study's stages.

Matplotlib's object-oriented API with no pyplot state, so no display is needed; every function
returns a ``Figure`` (:class:`InlineFigure`) for the caller to save or a notebook to show. A
trial's outcome (:func:`hpo.record.outcome`) is drawn the same in every figure
(:data:`STATE_STYLE`), and "best" is :func:`hpo.record.ranked`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from hpo import cli, record
from hpo.config import SearchConfig
from hpo.record import epochs_run, outcome, ranked
from hpo.space import Param, space_from_dict
from hpo.stages import PARENT_ATTR

__all__ = [
    "STATE_STYLE",
    "InlineFigure",
    "Stage",
    "plot_best_curves",
    "plot_epochs",
    "plot_history",
    "plot_importances",
    "plot_param_map",
]

logger = logging.getLogger(__name__)

COLUMNS = 5  # panels per row of the grid (the book's 4 x 5)
DPI = 110

# How a trial's outcome is drawn, the same in every figure.
STATE_STYLE = {
    "complete": {"color": "tab:blue", "marker": "o", "label": "complete"},
    "pruned": {"color": "0.6", "marker": "x", "label": "pruned"},
    "diverged": {"color": "tab:red", "marker": "v", "label": "diverged (NaN/inf loss)"},
    "failed": {"color": "black", "marker": "+", "label": "failed"},
}


class InlineFigure(Figure):
    """A ``Figure`` that Jupyter shows inline as a cell's value, with or without pyplot.

    A bare ``Figure`` displays as text until the notebook turns on matplotlib's inline support
    (``%matplotlib inline`` or importing pyplot); IPython asks any object for ``_repr_png_``.
    """

    def _repr_png_(self) -> bytes:
        png = io.BytesIO()
        self.savefig(png, format="png", bbox_inches="tight")  # as matplotlib's inline backend
        return png.getvalue()


@dataclass(frozen=True)
class Stage:
    """One stage of a search: a study, its configuration and the trials it ran itself."""

    name: str
    number: int
    config: SearchConfig
    trials: list[FrozenTrial]  # own trials (not seeded), by trial number


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_best_curves(study_name: str, trials: Sequence[FrozenTrial], top: int, epochs: int):
    """The book's grid: per epoch, validation (solid) and training (dashed) accuracy."""
    best = ranked(trials)[:top]
    n_complete = len(ranked(trials))
    columns = min(COLUMNS, max(len(best), 2))
    rows = max(1, math.ceil(len(best) / columns))
    fig = InlineFigure(figsize=(3.0 * columns, 2.3 * rows + 1.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    x_max = max([epochs, *(max(t.intermediate_values, default=0) for t in best)])
    for i, ax in enumerate(axes.flat):
        if i >= len(best):
            ax.set_visible(False)
            continue
        t = best[i]
        steps = sorted(t.intermediate_values)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], "-", color="tab:blue")
        train = record.curves(t).get("train_acc") or []
        ax.plot(range(1, len(train) + 1), train, "--", color="tab:orange")
        ax.set_title(f"Best-{i + 1}", fontsize=11)
        # Upper left: where rising curves leave room (they start low and end high).
        ax.text(
            0.03,
            0.96,
            f"val {t.value:.2f}\n{cli.format_params(t.params)}".replace(", ", "\n"),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="0.25",
        )
        ax.set_ylim(0, 1)
        ax.set_xlim(0, x_max)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i % columns == 0:
            ax.set_ylabel("accuracy")
        if i + columns >= len(best):
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
    shown = "Best-1" if len(best) == 1 else f"Best-1 .. Best-{len(best)}"
    plural = "s" if n_complete > 1 else ""
    fig.suptitle(
        f"{study_name}: {shown} of {n_complete} complete trial{plural}, accuracy per epoch",
        fontsize=13,
    )
    fig.legend(
        handles=[
            Line2D([], [], color="tab:blue", ls="-", label="validation accuracy"),
            Line2D([], [], color="tab:orange", ls="--", label="training accuracy"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    return fig


def _map_params(stages: Sequence[Stage]) -> tuple[str, str] | None:
    """The two axes of the map: lr and weight decay, else the first two numeric parameters."""
    space = space_from_dict(stages[0].config.space)
    if "lr" in space and "weight_decay" in space:
        return "lr", "weight_decay"
    numeric = [n for n, p in space.items() if p.choices is None]
    return (numeric[0], numeric[1]) if len(numeric) >= 2 else None


def _label(name: str) -> str:
    return {"lr": "learning rate", "weight_decay": "weight decay (L2 lambda)"}.get(name, name)


def plot_param_map(stages: Sequence[Stage]):
    """Every trial in the lr x weight-decay plane, coloured by validation accuracy."""
    fig = InlineFigure(figsize=(8.5, 6.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    axes = _map_params(stages)
    if axes is None:
        ax.set_title(f"{stages[-1].name}: parameter map")
        _note(ax, "The space has fewer than two numeric parameters: nothing to map.")
        return fig
    px, py = axes
    first = space_from_dict(stages[0].config.space)
    trials = [t for s in stages for t in s.trials if px in t.params and py in t.params]
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        groups.setdefault(outcome(t), []).append(t)

    complete = groups.pop("complete", [])
    values = [t.value for t in complete]
    norm = Normalize(min(values, default=0.0), max(values, default=1.0))
    for kind, members in groups.items():
        style = STATE_STYLE.get(kind, {"color": "0.4", "marker": ".", "label": kind})
        ax.scatter(
            [t.params[px] for t in members],
            [t.params[py] for t in members],
            s=28 if kind == "pruned" else 40,
            linewidths=1.2,
            zorder=2,
            **{**style, "label": f"{style['label']} ({len(members)})"},
        )
    if complete:
        order = sorted(complete, key=lambda t: t.value)  # the best drawn on top
        points = ax.scatter(
            [t.params[px] for t in order],
            [t.params[py] for t in order],
            c=[t.value for t in order],
            cmap="viridis",
            norm=norm,
            s=46,
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
            label=f"complete ({len(complete)}), coloured by val acc",
        )
        fig.colorbar(points, ax=ax, label="validation accuracy (complete trials)")
        best = ranked(complete)[0]
        ax.scatter(
            best.params[px],
            best.params[py],
            marker="*",
            s=320,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            zorder=4,
            label=f"best: val acc {best.value:.3g}",
        )

    for i, stage in enumerate(stages):
        space = space_from_dict(stage.config.space)
        if px not in space or py not in space:
            continue
        x0, x1, y0, y1 = space[px].low, space[px].high, space[py].low, space[py].high
        color = f"C{(i + 1) % 10}"
        ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=color,
                linewidth=2.0 if i else 1.2,
                linestyle="-" if i else ":",
                zorder=1,
                label=f"stage {stage.number} ranges: {stage.name} ({stage.config.sampler})",
            )
        )
    for name, set_scale, set_lim, set_label in (
        (px, ax.set_xscale, ax.set_xlim, ax.set_xlabel),
        (py, ax.set_yscale, ax.set_ylim, ax.set_ylabel),
    ):
        bounds = [p for s in stages if (p := space_from_dict(s.config.space).get(name))]
        param = Param(min(b.low for b in bounds), max(b.high for b in bounds), log=first[name].log)
        if param.log:
            set_scale("log")
            pad = (param.high / param.low) ** 0.03
            set_lim(param.low / pad, param.high * pad)
            set_label(f"{_label(name)} (log scale)")
        else:
            pad = 0.03 * (param.high - param.low)
            set_lim(param.low - pad, param.high + pad)
            set_label(_label(name))
    n_stages = f" in {len(stages)} stages" if len(stages) > 1 else ""
    ax.set_title(f"{stages[-1].name}: {len(trials)} trials{n_stages}, {_label(px)} x {_label(py)}")
    ax.grid(alpha=0.25, which="major")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1), ncols=2, fontsize=8, frameon=False)
    return fig


def _stage_bounds(ax, stages: Sequence[Stage], y_text: float) -> None:
    """Dashed lines where each later stage starts, and each stage's name above its trials."""
    start = 0
    for i, stage in enumerate(stages):
        if i:
            ax.axvline(start + 0.5, color="0.3", ls="--", lw=1)
        ax.text(
            start + 1,
            y_text,
            f"stage {stage.number}: {stage.name}\n{stage.config.sampler}, {stage.config.pruner}",
            fontsize=8,
            va="top",
            color="0.25",
        )
        start += len(stage.trials)


def plot_history(stages: Sequence[Stage]):
    """Best-so-far validation accuracy against trial number, over all stages."""
    fig = InlineFigure(figsize=(10, 5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    trials = [t for s in stages for t in s.trials]
    x = np.arange(1, len(trials) + 1)
    best, best_so_far = -math.inf, []
    for i, t in enumerate(trials):
        kind = outcome(t)
        if kind == "complete":
            best = max(best, t.value)
        best_so_far.append(best if best > -math.inf else np.nan)
        value = t.value if t.value is not None else np.nan
        if kind in ("complete", "pruned"):
            style = STATE_STYLE[kind]
            ax.scatter(
                x[i],
                value,
                s=16 if kind == "pruned" else 22,
                color=style["color"],
                marker=style["marker"],
                alpha=0.7,
                zorder=2,
            )
    ax.step(x, best_so_far, where="post", color="black", lw=2, zorder=3)
    _stage_bounds(ax, stages, 0.98)
    ax.legend(
        handles=[
            Line2D([], [], color="black", lw=2, label="best so far (complete trials)"),
            Line2D([], [], ls="", marker="o", color="tab:blue", label="complete trial"),
            Line2D(
                [], [], ls="", marker="x", color="0.6", label="pruned trial (at its last epoch)"
            ),
        ],
        loc="lower right",
        fontsize=9,
    )
    ax.set_ylim(0, 1.0)
    ax.set_xlim(0, len(trials) + 1)
    ax.set_xlabel("trial (in the order the stages ran)")
    ax.set_ylabel("validation accuracy")
    final = f"; best {best:.3g}" if best > -math.inf else ""
    ax.set_title(f"{stages[-1].name}: search history over {len(trials)} trials{final}")
    ax.grid(alpha=0.3)
    return fig


def plot_importances(study: optuna.Study):
    """fANOVA parameter importances in the study's ranges, or a note why there are none."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = sorted({n for t in trials for n in t.distributions})
    fig = InlineFigure(figsize=(7, 1.9 + 0.45 * max(len(params), 2)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ranges = (
        "the narrowed ranges of this stage" if PARENT_ATTR in study.user_attrs else "its ranges"
    )
    ax.set_title(
        f"{study.study_name}: parameter importance for validation accuracy\n"
        f"(what varies val acc within {ranges})",
        fontsize=11,
    )
    if len(trials) < 2:
        _note(ax, f"Importances need at least 2 complete trials; the study has {len(trials)}.")
        return fig
    if len(params) < 2:
        _note(
            ax,
            f"The study varies one parameter ({', '.join(params) or 'none'}): "
            "its importance is 1 by definition.",
        )
        return fig
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError, ImportError) as e:
        # fANOVA needs scikit-learn (installed with mlxtend); a missing one costs this figure only.
        logger.warning("No importances for %r: %s", study.study_name, e)
        _note(ax, f"No importances: {e}")
        return fig
    names = list(importances)[::-1]
    bars = ax.barh(
        [_label(n) for n in names], [importances[n] for n in names], height=0.5, color="tab:blue"
    )
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(
        f"share of the variance of val acc explained (fANOVA, {len(trials)} complete trials)"
    )
    return fig


def plot_epochs(stages: Sequence[Stage]):
    """Epochs each trial trained, coloured by outcome, against the full budget."""
    fig = InlineFigure(figsize=(10, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    trials = [t for s in stages for t in s.trials]
    budget = [s.config.epochs for s in stages for _ in s.trials]
    ran = [epochs_run(t) for t in trials]
    kinds = [outcome(t) for t in trials]
    x = np.arange(1, len(trials) + 1)
    for kind, style in STATE_STYLE.items():
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if idx:
            ax.bar(
                x[idx],
                [ran[i] for i in idx],
                width=0.8,
                color=style["color"],
                label=f"{style['label']} ({len(idx)})",
            )
    ax.step(
        np.r_[x - 0.5, x[-1:] + 0.5] if len(x) else [],
        np.r_[budget, budget[-1:]] if budget else [],
        where="post",
        color="black",
        lw=1,
        ls=":",
        label="full training",
    )
    total, full = sum(ran), sum(budget)
    saved = f"; pruning saved {1 - total / full:.0%}" if full else ""
    ax.set_title(f"{stages[-1].name}: epochs trained, {total} of {full}{saved}")
    _stage_bounds(ax, stages, max(budget, default=1) * 1.22)
    ax.set_ylim(0, max(budget, default=1) * 1.25)
    ax.set_xlim(0, len(trials) + 1)
    ax.set_xlabel("trial (in the order the stages ran)")
    ax.set_ylabel("epochs trained")
    ax.legend(loc="upper right", bbox_to_anchor=(1, -0.12), ncols=5, fontsize=8, frameon=False)
    return fig
