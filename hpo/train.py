"""``python -m hpo.train``: retrain a stored trial, test it once, save it; or replay it exactly.

Examples::

    python -m hpo.train --study default --save model.npz --plot curves.png
    python -m hpo.train --study default --trial 17 --train-on-val --save model.npz
    python -m hpo.train --study default --trial 3 --replay

A retrain rebuilds the trial's network, optimizer and trainer from the database (the same
:func:`hpo.objective.trial_setup` and seed the search used), trains on the search's training split
(or on training plus validation), and evaluates the held-out test set once, at the end: the book
(ch. 6.5.1) keeps the test data for the final check, so no choice is ever made on it.

``--replay`` reruns a trial (complete or pruned) with its stored seed and checks that every epoch's
validation accuracy, and the train and loss curves, equal the stored values bit for bit.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from hpo import cli, record
from hpo.objective import build, load_split
from hpo.results import StoredTrial, load_trial
from models import MultiLayerNet, TrainResult, save_network
from models.datasets import Split

logger = logging.getLogger(__name__)

SAVE_SUFFIXES = (".npz",)
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


class _StopReplay(Exception):
    """Ends a replay at the epoch where the stored (pruned) trial stopped."""


@dataclass(frozen=True)
class Retrained:
    """A retrained network and what it scored.

    Attributes:
        network: The trained network.
        result: Its training history.
        train_acc, val_acc: Accuracy after the last epoch.
        test_acc: Accuracy on the held-out test set, evaluated once; None if training diverged.
        n_train, n_test: Samples trained on and tested on.
    """

    network: MultiLayerNet
    result: TrainResult
    train_acc: float | None
    val_acc: float | None
    test_acc: float | None
    n_train: int
    n_test: int


@dataclass(frozen=True)
class Replay:
    """A trial's stored curves next to the replayed ones."""

    stored: dict[str, list[float]]
    history: dict[str, list[float]]
    stored_diverged: dict | None = None
    replayed_diverged: dict | None = None
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def require_state(stored: StoredTrial, *, replaying: bool) -> None:
    """A model comes only from a complete trial; a replay needs a stored curve (complete or pruned).

    Raises:
        ValueError: If the trial's state does not allow it.
    """
    trial = stored.trial
    if replaying and trial.state not in record.FINISHED:
        raise ValueError(
            f"A replay needs a complete or pruned trial (one with a stored curve), but trial "
            f"{trial.number} is {trial.state.name}."
        )
    if not replaying and trial.state != TrialState.COMPLETE:
        raise ValueError(
            f"A model is trained only from a complete trial, but trial {trial.number} is "
            f"{trial.state.name}; --replay reruns it as it ran."
        )


def _compare(stored: StoredTrial, result: TrainResult) -> Replay:
    curves = stored.stored_curves
    history = {name: list(values) for name, values in result.history.items()}
    differences = []
    for name, values in curves.items():
        again = history[name]
        if len(again) != len(values):
            differences.append(f"{name} has {len(again)} epochs, stored {len(values)}")
            continue
        for epoch, (a, b) in enumerate(zip(values, again, strict=True), start=1):
            if a != b:  # float equality on purpose: a replay is the same arithmetic
                differences.append(f"{name} in epoch {epoch}: stored {a!r}, replayed {b!r}")
                break
    stored_div = record.diverged(stored.trial)
    replayed_div = (
        record.divergence(result.diverged_epoch, result.reason) if result.diverged else None
    )
    if stored_div != replayed_div:
        differences.append(f"divergence: stored {stored_div}, replayed {replayed_div}")
    return Replay(curves, history, stored_div, replayed_div, differences)


def replay(stored: StoredTrial, split: Split) -> Replay:
    """Rerun a finished trial with its stored seed and compare its curves with the stored ones.

    Args:
        stored: A complete or pruned trial.
        split: The study's data split (:func:`hpo.objective.load_split`).

    Raises:
        ValueError: If the trial is neither complete nor pruned (so it has no final curve).
    """
    require_state(stored, replaying=True)
    trial = stored.trial
    n_stored = len(trial.intermediate_values)
    pruned_by_pruner = record.outcome(trial) == "pruned"

    def stop_where_stored(epoch: int, metrics: dict[str, float]) -> None:
        # The pruner stopped the trial after this epoch's report; stop the replay there too.
        if pruned_by_pruner and epoch >= n_stored:
            raise _StopReplay

    logger.info("Replaying trial %d with its stored seed %d.", trial.number, stored.setup.seed)
    _, trainer = build(stored.setup, split, stop_where_stored)
    # One BLAS thread, as in the search's workers: the same arithmetic in the same order.
    with threadpool_limits(limits=1):
        try:
            trainer.train()
        except _StopReplay:
            pass
    return _compare(stored, trainer.result)


def retrain(stored: StoredTrial, split: Split, *, train_on_val: bool = False) -> Retrained:
    """Train the trial's network again, then evaluate the held-out test set once.

    Args:
        stored: A complete trial.
        split: The study's data split.
        train_on_val: Train on training plus validation samples; the validation curve is then
            measured on samples the network trained on.

    Raises:
        ValueError: If the trial is not complete (a pruned trial is no model to keep).
    """
    require_state(stored, replaying=False)
    trial = stored.trial
    if train_on_val:
        split = Split(
            np.concatenate([split.x_train, split.x_val]),
            np.concatenate([split.t_train, split.t_val]),
            split.x_val,
            split.t_val,
            split.x_test,
            split.t_test,
        )
    net, trainer = build(stored.setup, split)
    logger.info(
        "Retraining trial %d for %d epochs on %d samples%s.",
        trial.number,
        trainer.epochs,
        len(split.x_train),
        " (training + validation)" if train_on_val else "",
    )
    with threadpool_limits(limits=1):
        result = trainer.train()
        if result.diverged:
            logger.warning("Training diverged: %s.", result.reason)
            return Retrained(net, result, None, None, None, len(split.x_train), len(split.x_test))
        # The one and only look at the test set.
        _, test_acc = net.evaluate(split.x_test, split.t_test)
    history = result.history
    return Retrained(
        net,
        result,
        history["train_acc"][-1],
        history["val_acc"][-1],
        test_acc,
        len(split.x_train),
        len(split.x_test),
    )


def plot_curves(
    history: dict[str, list[float]],
    path: str | os.PathLike,
    title: str,
    stored_val_acc: list[float] | None = None,
) -> None:
    """Accuracy (val solid, train dashed, as the book draws them) and loss per epoch, to a file."""
    # The object-oriented API with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    acc, loss = fig.subplots(1, 2)
    epochs = np.arange(1, len(history["val_acc"]) + 1)
    acc.plot(epochs, history["val_acc"], ".-", label="val")
    acc.plot(epochs, history["train_acc"], ".--", label="train")
    if stored_val_acc is not None:
        stored_epochs = np.arange(1, len(stored_val_acc) + 1)
        acc.plot(stored_epochs, stored_val_acc, "o", mfc="none", label="val (stored)")
    acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    acc.legend()
    loss.plot(epochs, history["val_loss"], ".-", label="val")
    loss.plot(epochs, history["train_loss"], ".--", label="train")
    loss.set(xlabel="epoch", ylabel="loss")
    loss.legend()
    for ax in (acc, loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m hpo.train",
        description=(
            "Retrain a stored trial, evaluate the held-out test set once, save the network; "
            "or --replay a trial and check that its curve is reproduced exactly."
        ),
    )
    cli.add_trial_arguments(p)
    p.add_argument(
        "--save", default=None, metavar="FILE.npz", help="save the weights and architecture here"
    )
    p.add_argument(
        "--plot", default=None, metavar="FILE.png", help="plot the curves here (.png, .pdf, .svg)"
    )
    p.add_argument(
        "--train-on-val",
        action="store_true",
        help="train on training + validation samples (the validation curve is then not held out)",
    )
    p.add_argument(
        "--replay",
        action="store_true",
        help="rerun the trial with its stored seed and check its stored curves are reproduced",
    )
    p.add_argument(
        "--data-dir", default=None, help="folder with the IDX files of mnist or fashion-mnist"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the results")
    return p


def check_output(path: str | None, flag: str, suffixes: tuple[str, ...]) -> None:
    """Fail before any work if ``path`` cannot be written as asked.

    Raises:
        ValueError: If the suffix is not one of ``suffixes``, the folder does not exist, or the
            path is a folder.
    """
    if path is None:
        return
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} must end in {' or '.join(suffixes)}, but got {path!r}.")
    if not target.parent.is_dir():
        raise ValueError(f"{flag}: the folder must exist, but {str(target.parent)!r} does not.")
    if target.is_dir():
        raise ValueError(f"{flag} must name a file, but {path!r} is a folder.")


def _header(stored: StoredTrial) -> str:
    trial = stored.trial
    return f"Trial {trial.number} of study {stored.study_name!r}: {cli.trial_line(trial)}"


def _print_replay(stored: StoredTrial, result: Replay, quiet: bool) -> None:
    stored_acc, replayed_acc = result.stored["val_acc"], result.history["val_acc"]
    if not quiet and (stored_acc or replayed_acc):
        print(f"{'epoch':>5}  {'stored val_acc':<22}  replayed val_acc")
        for epoch in range(1, max(len(stored_acc), len(replayed_acc)) + 1):
            a = stored_acc[epoch - 1] if epoch <= len(stored_acc) else None
            b = replayed_acc[epoch - 1] if epoch <= len(replayed_acc) else None
            mark = "" if a == b else "  <- differs"
            print(f"{epoch:>5}  {a!r:<22}  {b!r:<22}{mark}".rstrip())
    number = stored.trial.number
    if result.identical:
        n = len(stored_acc)
        found = []
        if n:
            epochs = "the 1 epoch" if n == 1 else f"all {n} epochs"
            found.append(f"{epochs} of {', '.join(result.stored)} equal the stored values exactly")
        if result.replayed_diverged:
            div = result.replayed_diverged
            found.append(f"it diverged again in epoch {div['epoch']} ({div['reason']})")
        summary = "; ".join(found)
        print(f"Replay of trial {number}: IDENTICAL. {summary[0].upper()}{summary[1:]}.")
    else:
        print(f"Replay of trial {number}: DIFFERENT. First difference: {result.differences[0]}.")


@cli.guarded("hpo.train")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replay and (args.save or args.train_on_val):
        parser.error("--replay checks a stored trial; it takes neither --save nor --train-on-val")
    cli.configure_logging(-1 if args.quiet else 0)
    try:
        check_output(args.save, "--save", SAVE_SUFFIXES)
        check_output(args.plot, "--plot", PLOT_SUFFIXES)
        stored = load_trial(args.storage, args.study, args.trial)
        require_state(stored, replaying=args.replay)
        split = load_split(stored.config, args.data_dir)
    except ValueError as e:
        return cli.fail("hpo.train", e)

    print(_header(stored))
    if args.replay:
        result = replay(stored, split)
        _print_replay(stored, result, args.quiet)
        if args.plot:
            plot_curves(
                result.history,
                args.plot,
                f"{stored.study_name}: trial {stored.trial.number}, replayed",
                result.stored["val_acc"],
            )
            print(f"Plotted the curves to {args.plot}")
        return 0 if result.identical else 1

    model = retrain(stored, split, train_on_val=args.train_on_val)
    if model.test_acc is None:
        print(f"Training diverged: {model.result.reason}; nothing saved.", file=sys.stderr)
        return 1
    val_note = " (trained on)" if args.train_on_val else ""
    print(
        f"train acc:{model.train_acc:.4f} | val acc{val_note}:{model.val_acc:.4f} | "
        f"test acc:{model.test_acc:.4f} ({model.n_test} test samples, evaluated once)"
    )
    if not args.train_on_val:
        same = model.result.history["val_acc"] == stored.stored_curves["val_acc"]
        logger.info(
            "The validation curve %s the search's stored one.",
            "equals" if same else "differs from",
        )
    if args.save:
        save_network(model.network, args.save)
        print(f"Saved the network with its architecture to {args.save} (models.load_network)")
    if args.plot:
        suffix = ", trained on train + val" if args.train_on_val else ""
        plot_curves(
            model.result.history,
            args.plot,
            f"{stored.study_name}: trial {stored.trial.number}, retrained{suffix}",
        )
        print(f"Plotted the curves to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
