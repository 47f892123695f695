"""``python -m hpo.export``: a trial's parameters (or full configuration) as JSON or TOML.

For training code that reads a file rather than importing :func:`hpo.best_params`::

    python -m hpo.export --study default > best.json
    python -m hpo.export --study default --trial 17 --full --format toml > trial17.toml
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from hpo import cli
from hpo.results import StoredTrial, find_trial, load_trial

FORMATS = ("json", "toml")


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m hpo.export",
        description="Print a trial's parameters, or its full training configuration, to stdout.",
    )
    cli.add_trial_arguments(p)
    p.add_argument(
        "--full",
        action="store_true",
        help="the full configuration (network, optimizer, trainer, data, seed), not only params",
    )
    p.add_argument("--format", choices=FORMATS, default="json", help="output format")
    return p


def full_dict(stored: StoredTrial) -> dict[str, Any]:
    """The trial's identity, result, parameters and training configuration."""
    params = dict(stored.trial.params)
    setup = stored.setup
    return {
        "study": stored.study_name,
        "trial": stored.trial.number,
        "state": stored.trial.state.name,
        "value": stored.trial.value,
        "seed": setup.seed,
        "params": params,
        "network": setup.network,
        "optimizer": setup.optimizer,
        "trainer": setup.trainer,
        "data": setup.data,
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-trip form; TOML reads 1e-05 and 0.1 alike
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"Cannot write {type(value).__name__} {value!r} as TOML.")


def to_toml(data: dict[str, Any]) -> str:
    """``data`` as TOML: scalars first, then one table per nested dict; None values are left out
    (TOML has no null)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | None)]
    for key, table in data.items():
        if not isinstance(table, dict):
            continue
        lines += ["", f"[{key}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "toml":
        return to_toml(data)
    return json.dumps(data, indent=2) + "\n"


@cli.guarded("hpo.export")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.full:
            data = full_dict(load_trial(args.storage, args.study, args.trial))
        else:
            # Parameters alone need no stored configuration: any Optuna study will do.
            data = dict(find_trial(args.storage, args.study, args.trial).params)
    except ValueError as e:
        return cli.fail("hpo.export", e)
    sys.stdout.write(render(data, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
