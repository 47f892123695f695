"""``python -m hpo.report``: the book's figures and table for a study, and what the stages did.

Writes five PNG files (matplotlib's Agg renderer, no display needed) into ``--out`` (default
``studies/<study>/``) and prints the book's table of the best trials:

1. ``best_curves.png``: the book's "Best-20" grid (ch. 6.5.3, fig. 6-24): validation accuracy
   (solid) and training accuracy (dashed) per epoch of the 20 best trials, 4 x 5 panels, y 0..1;
2. ``param_map.png``: learning rate x weight decay on log axes, every trial coloured by its
   validation accuracy, pruned, diverged and failed trials marked apart, and the ranges of every
   stage drawn as a rectangle (stages are found through the parent links of ``hpo.narrow``);
3. ``history.png``: best-so-far validation accuracy against trial number, stages marked;
4. ``importance.png``: parameter importances (fANOVA) in the study's own ranges;
5. ``epochs.png``: epochs each trial trained, against the full budget: what pruning saved.

The grid and the table rank the study's own trials (for a later stage: with the trials seeded from
its parent); the map, the history and the epochs show every stage up to the study, each trial once.
The storage is opened read-only. The figures are :func:`hpo.report_figures`'s; from Python,
``hpo.best_curves(storage, study)`` and the others return each as a ``Figure`` (inline in a
notebook).

Example::

    python -m hpo.report --study book-s2 --storage sqlite:///studies/hpo.db
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from hpo import cli
from hpo.results import open_readonly
from hpo.stages import load_search_study
from hpo.storage import DEFAULT_STORAGE
from hpo.study import folder_name
from hpo.study_figures import DEFAULT_TOP, FIGURES, report_figures

logger = logging.getLogger(__name__)

FILES = tuple(f"{name}.png" for name in FIGURES)


def write_report(
    storage: optuna.storages.BaseStorage, study_name: str, out_dir: Path, *, top: int = DEFAULT_TOP
) -> list[Path]:
    """Draw the five figures of a study (:func:`hpo.study_figures.report_figures`) into
    ``out_dir`` (created if missing).

    Returns:
        The paths written, in the order of the module docstring.

    Raises:
        ValueError: If the study has no complete trial, or a parent link is broken.
    """
    figures = report_figures(storage, study_name, top)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
        logger.debug("Wrote %s", path)
    return paths


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m hpo.report",
        description="Draw a study's figures (PNG) and print the book's table of its best trials.",
    )
    p.add_argument("--study", required=True, help="the study (for a later stage: its last stage)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB storage URL")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where the PNG files go; default: studies/<study>/ (the name made a safe folder name)",
    )
    p.add_argument(
        "--top", type=cli.positive_int, default=DEFAULT_TOP, help="trials in the grid and the table"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    return p


@cli.guarded("hpo.report")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else 0)
    # A folder of its own for any study name, inside studies/ ("../x", "", 5,000 characters).
    out = Path(args.out) if args.out is not None else Path("studies") / folder_name(args.study)
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out must be a folder, but {str(out)!r} is a file.")
        with open_readonly(args.storage) as storage:
            load_search_study(storage, args.study, args.storage)
            paths = write_report(storage, args.study, out, top=args.top)
            trials = optuna.load_study(study_name=args.study, storage=storage).get_trials()
    except ValueError as e:
        return cli.fail("hpo.report", e)
    for line in cli.best_lines(trials, args.top):
        print(line)
    if not args.quiet:
        print(f"Figures of {args.study!r} in {out}/: {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
