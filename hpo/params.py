"""The searchable parameters in one table: what each one is, what it feeds in ``models``, which
values ``models`` accepts, and when it applies.

Search-space files (:func:`hpo.space.param_from_dict`), the checks before a study is written
(:func:`hpo.checks.check_space`) and the mapping of a trial's parameters onto ``models`` keywords
(:func:`hpo.objective.trial_setup`) all read :data:`PARAMS`, so that they cannot disagree; tests
check the table against the signatures and registries of ``models``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.network import ACTIVATIONS
from models.optimizers import OPTIMIZERS

KINDS = ("float", "int", "categorical", "bool")

# The calls a parameter feeds: MultiLayerNet(**network), get_optimizer(**optimizer),
# Trainer(net, opt, *split, **trainer); see hpo.objective.TrialSetup.
NETWORK, OPTIMIZER, TRAINER = "MultiLayerNet", "get_optimizer", "Trainer"

# models.init_std's spellings (the book's "relu"/"sigmoid", and "he"/"xavier").
INIT_NAMES = ("relu", "he", "sigmoid", "xavier")


@dataclass(frozen=True)
class Interval:
    """The numbers ``models`` accepts: ``low`` to ``high``, each end included unless open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        def text(v: float) -> str:
            return "inf" if v == math.inf else f"{v:g}"

        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{text(self.low)}, {text(self.high)}{right}"


POSITIVE = Interval(0.0, math.inf, low_open=True, high_open=True)
NON_NEGATIVE = Interval(0.0, math.inf, high_open=True)
UNIT = Interval(0.0, 1.0, high_open=True)  # models' momentum and dropout ratio: [0, 1)


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter.

    Attributes:
        kind: "float", "int", "categorical" or "bool": what a range or a choice of it must be.
        scale: "log" or "linear": the scale it is usually searched on (a space picks with `log`).
        feeds: The ``models`` call it feeds: :data:`NETWORK`, :data:`OPTIMIZER` or :data:`TRAINER`.
        keyword: The keyword of that call it sets.
        help: What it is, in words.
        interval: The numbers that call accepts (float and int parameters, and weight_init_std's
            fixed standard deviation); None: no number.
        names: The values that call accepts by name (categorical and bool parameters).
        applies: The parameter is used only when every named parameter has one of the listed
            values (momentum only for the momentum and nesterov optimizers); a space that may
            sample it otherwise must say so with ``when``.
        default: ``default(config, params)`` is its value when a trial does not sample it; None
            leaves the keyword out, so that the ``models`` default applies (the optimizer's lr).
    """

    kind: str
    scale: str
    feeds: str
    keyword: str
    help: str
    interval: Interval | None = None
    names: tuple[Any, ...] = ()
    applies: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    default: Callable[[Any, dict[str, Any]], Any] | None = None


PARAMS: dict[str, ParamSpec] = {
    "lr": ParamSpec(
        "float", "log", OPTIMIZER, "lr", "the optimizer's learning rate", interval=POSITIVE
    ),
    "weight_decay": ParamSpec(
        "float",
        "log",
        NETWORK,
        "weight_decay_lambda",
        "the network's L2 strength (weight_decay_lambda)",
        interval=NON_NEGATIVE,
        default=lambda config, params: 0.0,
    ),
    "optimizer": ParamSpec(
        "categorical",
        "linear",
        OPTIMIZER,
        "name",
        f"the optimizer's name ({', '.join(OPTIMIZERS)})",
        names=tuple(OPTIMIZERS),
        default=lambda config, params: config.optimizer,
    ),
    "momentum": ParamSpec(
        "float",
        "linear",
        OPTIMIZER,
        "momentum",
        "momentum of the momentum and nesterov optimizers",
        interval=UNIT,
        applies={"optimizer": ("momentum", "nesterov")},
    ),
    "batch_size": ParamSpec(
        "int",
        "log",
        TRAINER,
        "batch_size",
        "samples per mini-batch",
        interval=Interval(1, math.inf, high_open=True),
        default=lambda config, params: config.batch_size,
    ),
    # n_layers and hidden_size together make hidden_size_list (hpo.objective.hidden_sizes). Their
    # upper limits are sanity limits of this project (a 20 x 4096 net is 2.6 GB of float64
    # weights), and n_layers >= 1 keeps a hidden layer, which models does not require.
    "n_layers": ParamSpec(
        "int",
        "linear",
        NETWORK,
        "hidden_size_list",
        "number of hidden layers",
        interval=Interval(1, 20),
        default=lambda config, params: len(config.hidden),
    ),
    "hidden_size": ParamSpec(
        "int",
        "log",
        NETWORK,
        "hidden_size_list",
        "width of every hidden layer",
        interval=Interval(1, 4096),
        default=lambda config, params: config.hidden[0],
    ),
    "activation": ParamSpec(
        "categorical",
        "linear",
        NETWORK,
        "activation",
        ", ".join(ACTIVATIONS),
        names=tuple(ACTIVATIONS),
        default=lambda config, params: config.activation,
    ),
    "weight_init_std": ParamSpec(
        "categorical",
        "log",
        NETWORK,
        "weight_init_std",
        "relu/he, sigmoid/xavier, or a fixed standard deviation",
        interval=POSITIVE,
        names=INIT_NAMES,
        default=lambda config, params: config.weight_init_std,
    ),
    "use_batchnorm": ParamSpec(
        "bool",
        "linear",
        NETWORK,
        "use_batchnorm",
        "BatchNorm after each hidden Affine layer",
        names=(False, True),
        default=lambda config, params: False,
    ),
    "use_dropout": ParamSpec(
        "bool",
        "linear",
        NETWORK,
        "use_dropout",
        "Dropout after each hidden activation",
        names=(False, True),
        # A sampled dropout ratio turns Dropout on, unless the space samples use_dropout too.
        default=lambda config, params: "dropout_ratio" in params,
    ),
    "dropout_ratio": ParamSpec(
        "float",
        "linear",
        NETWORK,
        "dropout_ratio",
        "probability that Dropout drops a unit",
        interval=UNIT,
        applies={"use_dropout": (True,)},
        default=lambda config, params: 0.5,
    ),
}


def value_of(name: str, config: Any, params: dict[str, Any]) -> Any:
    """A parameter's value in a trial: sampled, else its default (None: the ``models`` default)."""
    if name in params:
        return params[name]
    default = PARAMS[name].default
    return None if default is None else default(config, params)


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same kind: ``True`` is not ``1`` here, although Python says so."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def toml(value: Any) -> str:
    """A value as a search-space file writes it, for messages that show the fix."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
