"""The search space: which trial parameters exist, their ranges, and when each one applies.

A space is a dict ``{name: Param}``. The default is the book's (ch. 6.5): ``lr`` and
``weight_decay`` on log scales. A TOML file widens it, one table per parameter::

    [lr]
    low = 1e-4
    high = 1e-1
    log = true

    [optimizer]
    choices = ["sgd", "momentum", "adam"]

    [momentum]                       # only sampled when the optimizer has a momentum
    low = 0.5
    high = 0.99
    when = { optimizer = ["momentum", "nesterov"] }

Parameter names are the keywords they feed (DESIGN.md); ``when`` makes a parameter conditional on
other parameters' values, the way Optuna's define-by-run spaces are.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

import optuna

# Every parameter a search may sample, and what it feeds.
KNOWN_PARAMS: dict[str, str] = {
    "lr": "the optimizer's learning rate",
    "weight_decay": "the network's L2 strength (weight_decay_lambda)",
    "optimizer": "the optimizer's name (sgd, momentum, nesterov, adagrad, rmsprop, adam)",
    "momentum": "momentum of the momentum and nesterov optimizers",
    "batch_size": "samples per mini-batch",
    "n_layers": "number of hidden layers",
    "hidden_size": "width of every hidden layer",
    "activation": "relu, sigmoid or tanh",
    "weight_init_std": "relu/he, sigmoid/xavier, or a fixed standard deviation",
    "use_batchnorm": "BatchNorm after each hidden Affine layer",
    "use_dropout": "Dropout after each hidden activation",
    "dropout_ratio": "probability that Dropout drops a unit",
}
_PARAM_KEYS = {"low", "high", "log", "step", "choices", "when"}


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a float or int range, or a list of choices.

    Args:
        low, high: Range bounds (inclusive) for numeric parameters.
        log: Sample on a log scale; needs ``low > 0``.
        step: Grid step for int parameters (and optionally floats); None for continuous floats.
        choices: Values of a categorical parameter, instead of a range.
        when: Sample only if every named parameter has one of the given values.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-friendly dict that :func:`param_from_dict` reads back."""
        if self.choices is not None:
            out: dict[str, Any] = {"choices": list(self.choices)}
        else:
            out = {"low": self.low, "high": self.high, "log": self.log}
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution this parameter is sampled from."""
        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.is_int:
            step = 1 if self.step is None else int(self.step)
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=step
            )
        return optuna.distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log, step=self.step
        )


DEFAULT_SPACE: dict[str, Param] = {
    # The book's ranges (ch. 6.5.3): weight decay 10^-8..10^-4, learning rate 10^-6..10^-2.
    "lr": Param(1e-6, 1e-2, log=True),
    "weight_decay": Param(1e-8, 1e-4, log=True),
}


def param_from_dict(name: str, spec: dict[str, Any]) -> Param:
    """Build and validate one parameter from its table.

    Raises:
        ValueError: If the name is unknown, a key is unknown, or the range breaks a rule.
    """
    if name not in KNOWN_PARAMS:
        raise ValueError(f"Unknown search parameter {name!r}; known: {', '.join(KNOWN_PARAMS)}.")
    if not isinstance(spec, dict):
        raise ValueError(f"`{name}` must be a table, but got {spec!r}.")
    unknown = set(spec) - _PARAM_KEYS
    if unknown:
        raise ValueError(
            f"`{name}` has unknown keys {sorted(unknown)}; allowed: {sorted(_PARAM_KEYS)}."
        )
    when = spec.get("when", {})
    if not isinstance(when, dict) or any(k not in KNOWN_PARAMS for k in when):
        raise ValueError(f"`{name}.when` must map parameter names to values, but got {when!r}.")
    when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}

    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) - {"choices", "when"}:
            raise ValueError(f"`{name}` has `choices`, so it takes no range, but got {spec!r}.")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"`{name}.choices` must be a non-empty list, but got {choices!r}.")
        return Param(choices=tuple(choices), when=when)

    low, high, log, step = (
        spec.get("low"),
        spec.get("high"),
        spec.get("log", False),
        spec.get("step"),
    )
    for key, value in (("low", low), ("high", high)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"`{name}.{key}` must be a finite number, but got {value!r}.")
    if not low < high:
        raise ValueError(f"`low < high` must hold for `{name}`, but got ({low=}, {high=}).")
    if log and low <= 0:
        raise ValueError(f"A log scale needs `low > 0` for `{name}`, but got {low=}.")
    if step is not None and (not step > 0 or log):
        raise ValueError(f"`{name}.step` must be > 0 and not on a log scale, but got {step=}.")
    return Param(low, high, log=bool(log), step=step, when=when)


def space_from_dict(spec: dict[str, Any]) -> dict[str, Param]:
    """Build a space from ``{name: table}`` (a parsed TOML file or a stored configuration)."""
    space = {name: param_from_dict(name, table) for name, table in spec.items()}
    for name, param in space.items():
        for other in param.when:
            if other not in space:
                raise ValueError(f"`{name}.when` names `{other}`, which the space does not sample.")
    return space


def space_to_dict(space: dict[str, Param]) -> dict[str, dict[str, Any]]:
    return {name: param.to_dict() for name, param in space.items()}


def load_space(path: str | os.PathLike, base: dict[str, Param] | None = None) -> dict[str, Param]:
    """Read a TOML search-space file; its tables add to (or replace ranges of) ``base``.

    Raises:
        ValueError: If the file cannot be read, is not valid TOML, or describes a bad space.
    """
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"Cannot read search-space file {os.fspath(path)!r}: {e.strerror}.") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"Search-space file {os.fspath(path)!r} is not valid TOML: {e}.") from e
    merged = space_to_dict(DEFAULT_SPACE if base is None else base)
    merged.update(spec)
    return space_from_dict(merged)


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """Sample every parameter whose condition holds, in the space's order (define-by-run)."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if any(params.get(other) not in values for other, values in param.when.items()):
            continue
        params[name] = _suggest_one(trial, name, param)
    return params


def _suggest_one(trial: optuna.Trial, name: str, param: Param) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(name, list(param.choices))
    if param.is_int:
        step = 1 if param.step is None else int(param.step)
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
