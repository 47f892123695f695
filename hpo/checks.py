"""Semantic checks of a search space before a study is written (DESIGN.md, "Reliability rules").

:func:`check_space` runs in :func:`hpo.arguments.validate`, before the study is created:

1. every parameter against its row of :data:`hpo.params.PARAMS` (:func:`hpo.space.check_param`),
   also those built from flags (``--lr``) or by narrowing;
2. where a parameter applies: one that only some choices use (momentum: the momentum and nesterov
   optimizers; dropout_ratio: use_dropout true) must carry a ``when`` that excludes the others;
3. as a backstop, the space's corners (every combination of choices, with every range at its low
   end and at its high end) are built as a trial builds them, network, optimizer and trainer at
   tiny sizes, and trained for one step; any exception becomes a ValueError naming the corner.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import optuna

from hpo.config import SearchConfig
from hpo.objective import trial_setup
from hpo.params import PARAMS, same_value, toml, value_of
from hpo.space import Param, check_param, space_from_dict, suggest
from models import MultiLayerNet, Trainer, get_optimizer

logger = logging.getLogger(__name__)

# The backstop tries every combination of choices up to this many; beyond it, each choice once.
MAX_CORNERS = 256
_TINY = 3  # input and hidden width of the corner networks: sizes never change what may fail


def check_space(config: SearchConfig) -> None:
    """Check the configuration's space against everything a trial will do with it.

    Raises:
        ValueError: One line naming the parameter, the rule and the value (and the fix, where
            there is one).
    """
    space = space_from_dict(config.space)
    for name, param in space.items():
        check_param(name, param)
    for name, param in space.items():
        _check_applies(space, name, param, config)
    for corner in corners(space):
        _try_corner(config, corner)


def _check_applies(space: dict[str, Param], name: str, param: Param, config: SearchConfig) -> None:
    for other, applicable in PARAMS[name].applies.items():
        possible = _values_when_sampled(space, name, other, config)
        bad = [v for v in possible if not any(same_value(v, a) for a in applicable)]
        if not bad:
            continue
        rule = f"{name} applies only to {other} {'/'.join(map(_plain, applicable))}"
        when = f"`when = {{{other} = [{', '.join(map(toml, applicable))}]}}`"
        if other not in space:
            raise ValueError(
                f"{rule}, but {other} is {_plain(bad[0])} in this study (--{other}); use "
                f"--{other} {' or '.join(map(_plain, applicable))}, or sample {other} and add "
                f"{when} to [{name}]."
            )
        if len(bad) == len(possible):
            raise ValueError(
                f"{rule}, but {other} may be {', '.join(map(_plain, bad))} only, so {name} would "
                f"never be used; remove [{name}], or add {'/'.join(map(_plain, applicable))} to "
                f"[{other}] choices and {when} to [{name}]."
            )
        fix = f"set {when} in" if other in param.when else f"add {when} to"
        raise ValueError(
            f"{rule}, but {other} may be {', '.join(map(_plain, bad))}; {fix} [{name}]."
        )


def _values_when_sampled(
    space: dict[str, Param], name: str, other: str, config: SearchConfig
) -> list[Any]:
    """The values ``other`` may have in a trial that samples ``name``."""
    default = value_of(other, config, {name: None})
    if other not in space:
        return [default]
    param, source = space[name], space[other]
    values = list(source.choices) if source.choices is not None else []
    if other in param.when:
        values = [v for v in values if any(same_value(v, w) for w in param.when[other])]
    # Sampled whenever `name` is, if `name`'s condition names `other` or implies its condition.
    implied = other in param.when or all(
        k in param.when and all(any(same_value(v, w) for w in vs) for v in param.when[k])
        for k, vs in source.when.items()
    )
    if not implied and not any(same_value(default, v) for v in values):
        values.append(default)
    return values


def _plain(value: Any) -> str:
    return toml(value) if isinstance(value, bool) else str(value)


def corners(space: dict[str, Param]) -> list[dict[str, Any]]:
    """The trial parameters at the space's corners, as :func:`hpo.space.suggest` samples them.

    Every combination of the categorical parameters' choices (each choice once, on top of the
    first choices, when there are more than :data:`MAX_CORNERS`), each with every range at its
    low end and at its high end. Conditions (``when``) apply as in a trial; duplicates are dropped.
    """
    choices = {n: list(p.choices) for n, p in space.items() if p.choices is not None}
    ends = {n: _ends(p) for n, p in space.items() if p.choices is None}
    names = list(choices)
    combos = list(itertools.product(*choices.values()))
    if len(combos) * 2 > MAX_CORNERS:
        first = [values[0] for values in choices.values()]
        combos = [tuple(first)] + [
            tuple(first[:i]) + (value,) + tuple(first[i + 1 :])
            for i, values in enumerate(choices.values())
            for value in values[1:]
        ]
    found: dict[str, dict[str, Any]] = {}
    for combo in combos:
        for end in (0, 1):
            fixed = {**dict(zip(names, combo, strict=True)), **{n: e[end] for n, e in ends.items()}}
            params = suggest(optuna.trial.FixedTrial(fixed), space)
            found.setdefault(repr(sorted(params.items())), params)
    return list(found.values())


def _ends(param: Param) -> tuple[Any, Any]:
    # The distribution's ends: Optuna moves `high` onto the step grid.
    distribution = param.distribution()
    return distribution.low, distribution.high


def _try_corner(config: SearchConfig, params: dict[str, Any]) -> None:
    """Build one corner's trial at tiny sizes and train it one step; ValueError if it fails."""
    try:
        setup = trial_setup(config, params, seed=0)
        network = dict(setup.network)
        network["input_size"] = _TINY
        network["hidden_size_list"] = [min(w, _TINY) for w in network["hidden_size_list"]]
        net = MultiLayerNet(**network)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, _TINY))
        t = np.arange(4) % network["output_size"]
        trainer = Trainer(
            net, get_optimizer(**setup.optimizer), x, t, x, t, **{**setup.trainer, "epochs": 1}
        )
        trainer.train()
    except Exception as e:  # noqa: BLE001 -- every failure is the space's, reported as such
        corner = ", ".join(f"{k}={v!r}" for k, v in params.items())
        detail = " ".join(str(e).split())
        raise ValueError(
            f"The search space fails at its corner ({corner}): {type(e).__name__}: {detail}"
        ) from e
