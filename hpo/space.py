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
other parameters' values, the way Optuna's define-by-run spaces are. What each parameter is, feeds
and accepts is one table, :data:`hpo.params.PARAMS`; every choice and bound is checked against it.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpo.params import PARAMS, ParamSpec, same_value, toml

# Every parameter a search may sample, and what it feeds (the table: hpo.params.PARAMS).
KNOWN_PARAMS: dict[str, str] = {name: spec.help for name, spec in PARAMS.items()}
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
        ValueError: If the name or a key is unknown, a value has the wrong type, or the range or a
            choice breaks a rule of :data:`hpo.params.PARAMS` (what ``models`` accepts).
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
    when = _when_from_dict(name, spec.get("when", {}))

    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) - {"choices", "when"}:
            raise ValueError(f"`{name}` has `choices`, so it takes no range, but got {spec!r}.")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"`{name}.choices` must be a non-empty list, but got {choices!r}.")
        return check_param(name, Param(choices=tuple(choices), when=when))

    table = PARAMS[name]
    if table.interval is None:
        raise ValueError(
            f"`{name}` is {table.kind}: it takes `choices` from "
            f"{', '.join(map(toml, table.names))}, not a range, but got {spec!r}."
        )
    low, high, log, step = (
        spec.get("low"),
        spec.get("high"),
        spec.get("log", False),
        spec.get("step"),
    )
    for key, value in (("low", low), ("high", high)):
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"`{name}.{key}` must be a finite number, but got {value!r}.")
    if not isinstance(log, bool):
        raise ValueError(f"`{name}.log` must be true or false, but got log={log!r}.")
    if step is not None and not _is_number(step):
        raise ValueError(f"`{name}.step` must be a number, but got step={step!r}.")
    if table.kind == "float":
        # A float parameter stays one, even with bounds written as integers (lr from 1 to 10).
        low, high = float(low), float(high)
    return check_param(name, Param(low, high, log=log, step=step, when=when))


def check_param(name: str, param: Param) -> Param:
    """Check one parameter against its row of :data:`hpo.params.PARAMS`; return it unchanged.

    Raises:
        ValueError: If a choice or bound is not a value ``models`` accepts, or the range breaks a
            rule of ranges; the message names the parameter, the rule and the value.
    """
    table = PARAMS[name]
    if name in param.when:
        raise ValueError(
            f"`{name}.when` must name other parameters, but names `{name}` itself, so it would "
            "never be sampled."
        )
    if param.choices is not None:
        for choice in param.choices:
            _check_value(name, table, "choices", choice)
        return param
    if table.interval is None:
        raise ValueError(
            f"`{name}` is {table.kind}: it takes `choices` from "
            f"{', '.join(map(toml, table.names))}, not a range, but got {param.to_dict()!r}."
        )
    low, high, step = param.low, param.high, param.step
    for key, value in (("low", low), ("high", high)):
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"`{name}.{key}` must be a finite number, but got {key}={value!r}.")
        _check_value(name, table, key, value)
    if not low < high:
        raise ValueError(f"`low < high` must hold for `{name}`, but got ({low=}, {high=}).")
    if param.log and low <= 0:
        raise ValueError(f"A log scale needs `low > 0` for `{name}`, but got {low=}.")
    if step is None:
        return param
    if table.kind == "int" and not (_is_number(step) and step == int(step)):
        raise ValueError(
            f"`{name}.step` must be a whole number ({name} is an int parameter), but got {step=}."
        )
    if not (_is_number(step) and math.isfinite(step) and step > 0) or param.log:
        raise ValueError(f"`{name}.step` must be > 0 and not on a log scale, but got {step=}.")
    if not step <= high - low:
        raise ValueError(
            f"`{name}.step <= high - low` must hold (a grid of one value is no range), but got "
            f"({step=}, {low=}, {high=})."
        )
    return param


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(name: str, table: ParamSpec, key: str, value: Any) -> None:
    """One choice or bound of ``name``: a value of its kind that ``models`` accepts."""
    got = f"{value!r}" if key == "choices" else f"{key}={value!r}"
    if table.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"`{name}.{key}` must be true or false, but got {got}.")
        return
    if isinstance(value, str) and table.names:
        if value not in table.names:
            raise ValueError(
                f"`{name}.{key}` must be names that {table.feeds} accepts as {table.keyword} "
                f"({', '.join(table.names)}), but got {got}."
            )
        return
    if table.interval is None or not _is_number(value):
        what = f"one of {', '.join(table.names)}" if table.names else "a number"
        raise ValueError(f"`{name}.{key}` must be {what}, but got {got}.")
    if table.kind == "int" and not isinstance(value, int):
        raise ValueError(
            f"`{name}.{key}` must be an integer ({name} is an int parameter), but got {got}."
        )
    if not (math.isfinite(value) and value in table.interval):
        raise ValueError(
            f"`{name}.{key}` must lie in {table.interval} ({name} feeds {table.feeds}'s "
            f"{table.keyword}), but got {got}."
        )


def _when_from_dict(name: str, when: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(when, dict) or any(k not in KNOWN_PARAMS for k in when):
        raise ValueError(f"`{name}.when` must map parameter names to values, but got {when!r}.")
    return {k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}


def space_from_dict(spec: dict[str, Any]) -> dict[str, Param]:
    """Build a space from ``{name: table}`` (a parsed TOML file or a stored configuration).

    Raises:
        ValueError: If a table is bad (:func:`param_from_dict`), or a ``when`` names a parameter
            the space does not sample, a value that parameter never has, or none that the space
            samples.
    """
    space = {name: param_from_dict(name, table) for name, table in spec.items()}
    for name, param in space.items():
        for other, values in param.when.items():
            if other not in space:
                raise ValueError(f"`{name}.when` names `{other}`, which the space does not sample.")
            for value in values:
                try:
                    _check_value(other, PARAMS[other], "choices", value)
                except ValueError:
                    raise ValueError(
                        f"`{name}.when` must list values of `{other}` "
                        f"({_known_text(PARAMS[other])}), but got {other}={value!r}."
                    ) from None
            if not any(_can_take(space[other], value) for value in values):
                raise ValueError(
                    f"`{name}.when` must list a value `{other}` can take "
                    f"({_values_text(space[other])}), so that {name} is ever sampled, but got "
                    f"{other} = {list(values)!r}."
                )
    return space


def _can_take(param: Param, value: Any) -> bool:
    if param.choices is not None:
        return any(same_value(value, c) for c in param.choices)
    if not _is_number(value) or (param.is_int and not isinstance(value, int)):
        return False
    return param.low <= value <= param.high


def _values_text(param: Param) -> str:
    if param.choices is not None:
        return ", ".join(map(toml, param.choices))
    return f"{param.low} to {param.high}"


def _known_text(table: ParamSpec) -> str:
    names = ", ".join(map(toml, table.names))
    if table.interval is None:
        return names
    return f"{names} or a number in {table.interval}" if names else f"a number in {table.interval}"


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
    return merge_space(spec, base)


def merge_space(spec: Mapping[str, Any], base: dict[str, Param] | None = None) -> dict[str, Param]:
    """The tables of a search-space file, given as a dict, on top of ``base``.

    Raises:
        ValueError: If they describe a bad space.
    """
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
