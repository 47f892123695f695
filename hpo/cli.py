"""What every ``python -m hpo.<command>`` shares: one-line errors with exit code 2, flag types,
logging set-up, and the book's one-line trial format."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any, NoReturn

import optuna

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input found after parsing; ``main`` prints it on one line and returns 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and exit with 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog.removeprefix('python -m ')}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


def jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be -1 or a positive integer, but got {text!r}"
        ) from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all cores) or >= 1, but got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, but got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, but got {text!r}")
    return value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), but got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), but got {text!r}")
    return value


def configure_logging(verbosity: int) -> None:
    """-q: warnings only; default: info from hpo; -v: debug from hpo, info from Optuna."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(logging.INFO if verbosity > 0 else logging.WARNING)
    optuna.logging.enable_propagation()


def format_params(params: dict[str, Any]) -> str:
    """``lr:0.0097, weight decay:6.5e-08``, the book's spelling, other parameters after."""
    parts = []
    for name, value in params.items():
        label = "weight decay" if name == "weight_decay" else name
        parts.append(f"{label}:{value:.3g}" if isinstance(value, float) else f"{label}:{value}")
    return ", ".join(parts)


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """The book's per-trial line, ``val acc:0.81 | lr:0.0097, weight decay:6.5e-08``."""
    values = trial.intermediate_values
    if trial.value is not None:
        acc = trial.value
    elif values:
        acc = values[max(values)]
    else:
        acc = float("nan")
    line = f"val acc:{acc:.3g} | {format_params(trial.params)}"
    if trial.state == optuna.trial.TrialState.PRUNED:
        diverged = trial.user_attrs.get("diverged")
        epochs = trial.user_attrs.get("epochs", len(values))
        line += (
            f" (diverged in epoch {diverged['epoch']})"
            if diverged
            else f" (pruned after epoch {epochs})"
        )
    elif trial.state == optuna.trial.TrialState.FAIL:
        line += " (failed)"
    return line


def best_lines(trials: list[optuna.trial.FrozenTrial], top: int) -> list[str]:
    """The book's ``Best-1(val acc:0.83) | lr:0.0092, weight decay:3.86e-07`` lines."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    ranked = sorted(complete, key=lambda t: t.value, reverse=True)[:top]
    return [
        f"Best-{i}(val acc:{t.value:.3g}) | {format_params(t.params)}"
        for i, t in enumerate(ranked, start=1)
    ]
