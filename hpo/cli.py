"""What every ``python -m hpo.<command>`` shares: the one rule for errors and exit codes, flag
types, logging set-up, and the book's one-line trial format.

The rule: bad input ends a command with one line ``hpo.<command>: error: <message>`` on stderr and
exit code 2, before anything is stored (:func:`fail`, and :class:`Parser` for bad flags); library
functions raise ``ValueError`` for it and ``main`` turns that into the line.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import optuna

from hpo import record
from hpo.storage import DEFAULT_STORAGE, quiet_storage_fallbacks

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

Main = Callable[[Sequence[str] | None], int]


def fail(prog: str, message: object, code: int = EXIT_BAD_INPUT) -> int:
    """Print the one-line error ``<prog>: error: <message>`` to stderr and return ``code``.

    Args:
        prog: The command, ``hpo.<command>``.
        message: What is wrong (a ``ValueError`` prints as its message).
        code: The exit code: 2 (bad input) unless the command says otherwise.

    Returns:
        ``code``, for ``return cli.fail(...)`` in ``main``.
    """
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and exit with 2; every
    command's parser has ``--debug`` (see :func:`guarded`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", help="show the traceback of an unexpected error"
        )

    def error(self, message: str) -> NoReturn:
        self.exit(fail(self.prog.removeprefix("python -m "), message))


def guarded(prog: str) -> Callable[[Main], Main]:
    """Decorate a command's ``main``: an unexpected error ends it with one line and exit 1.

    The line names the error and how to see more; ``--debug`` lets the traceback through
    instead. Ctrl-C before a run has started (a run prints its own message) exits with 130.
    """

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def guarded_main(argv: Sequence[str] | None = None) -> int:
            debug = "--debug" in (sys.argv[1:] if argv is None else argv)
            try:
                return main(argv)
            except KeyboardInterrupt:
                if debug:
                    raise
                return fail(prog, "interrupted.", code=EXIT_INTERRUPTED)
            except Exception as e:
                if debug:
                    raise
                text = str(e).strip().splitlines()
                reason = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
                return fail(
                    prog, f"unexpected {reason} (--debug shows the traceback)", code=EXIT_FAILED
                )

        return guarded_main

    return decorate


def _number(convert: Callable[[str], Any], rule: str, holds: Callable[[Any], bool]):
    """An argparse type: ``convert(text)``, which must satisfy ``holds``; else "must be <rule>"."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not holds(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, but got {text!r}")
        return value

    return parse


positive_int = _number(int, "a positive integer", lambda v: v >= 1)
jobs = _number(int, "-1 (all cores) or a positive integer", lambda v: v == -1 or v >= 1)
positive_float = _number(float, "a positive number", lambda v: v > 0 and math.isfinite(v))
rate = _number(float, "a number in (0, 1)", lambda v: 0 < v < 1)
fraction = _number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
trial_number = _number(int, "a trial number >= 0", lambda v: v >= 0)


def add_trial_arguments(parser: argparse.ArgumentParser) -> None:
    """``--study``, ``--trial`` and ``--storage``: which stored trial a command works on."""
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--trial", type=trial_number, default=None, help="trial number; default: the best trial"
    )
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB storage URL")


def configure_logging(verbosity: int) -> None:
    """-q: warnings only; default: info from hpo; -v: debug from hpo, info from Optuna."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(logging.INFO if verbosity > 0 else logging.WARNING)
    optuna.logging.enable_propagation()
    quiet_storage_fallbacks()


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
        diverged = record.diverged(trial)
        line += (
            f" (diverged in epoch {diverged['epoch']})"
            if diverged
            else f" (pruned after epoch {record.epochs_run(trial)})"
        )
    elif trial.state == optuna.trial.TrialState.FAIL:
        line += " (failed)"
    return line


def best_lines(trials: list[optuna.trial.FrozenTrial], top: int) -> list[str]:
    """The book's ``Best-1(val acc:0.83) | lr:0.0092, weight decay:3.86e-07`` lines."""
    return [
        f"Best-{i}(val acc:{t.value:.3g}) | {format_params(t.params)}"
        for i, t in enumerate(record.ranked(trials)[:top], start=1)
    ]
