"""The study's Markdown note: its configuration, shown by optuna-dashboard above the trials.

optuna-dashboard keeps notes in study system attrs: ``dashboard:note_ver`` plus the body in
``dashboard:note_str:<i>`` chunks. They are written here in that layout, so that hpo works
without the dashboard installed and a dashboard installed later shows the note too.
"""

from __future__ import annotations

import math

import optuna

from hpo.config import SearchConfig

_CHUNK = 2045  # optuna_dashboard._note.SYSTEM_ATTR_MAX_LENGTH
_VERSION = "dashboard:note_ver"
_PREFIX = "dashboard:note_str:"


def _range(spec: dict) -> str:
    if "choices" in spec:
        text = "one of " + ", ".join(f"`{c}`" for c in spec["choices"])
    else:
        scale = "log scale" if spec.get("log") else "linear"
        step = f", step {spec['step']}" if spec.get("step") is not None else ""
        text = f"[{spec['low']:g}, {spec['high']:g}], {scale}{step}"
    when = spec.get("when") or {}
    if when:
        text += " when " + " and ".join(f"`{k}` in {list(v)}" for k, v in when.items())
    return text


def study_note(name: str, config: SearchConfig) -> str:
    """The Markdown note of a study: data, network, training, search and where the curves are."""
    n_val = int(config.train_size * config.val_rate)
    hidden = config.hidden
    widths = (
        f"{hidden[0]} x {len(hidden)}" if len(set(hidden)) == 1 else " - ".join(map(str, hidden))
    )
    lines = [
        f"## {name}",
        "",
        "Made by `python -m hpo.search`. Objective **val_acc**: validation accuracy after the last "
        "epoch, maximized.",
        "",
        "| | |",
        "| --- | --- |",
        f"| data | `{config.dataset}`: {config.train_size} samples, "
        f"{config.train_size - n_val} train / {n_val} validation, split seed {config.seed} |",
        f"| network | 784 - {widths} - 10, `{config.activation}`, init "
        f"`{config.weight_init_std}`, {config.dtype} |",
        f"| training | `{config.optimizer}`, batch {config.batch_size}, "
        f"{config.epochs} epoch{'' if config.epochs == 1 else 's'} |",
        f"| search | `{config.sampler}` sampler, `{config.pruner}` pruner (at creation) |",
        "",
        "Search space:",
        "",
        *(f"- `{param}`: {_range(spec)}" for param, spec in config.space.items()),
        "",
        "Intermediate values are the per-epoch validation accuracy (the learning curves). Trial "
        "user attrs: `train_acc`, `train_loss`, `val_loss` per epoch, `seed`, `epochs` run, and "
        "`diverged` (epoch and reason) for a trial whose loss became NaN or infinite. The study's "
        "user attr `config` holds the whole configuration; `python -m hpo.train --study "
        f"{name} --replay --trial N` reruns any trial exactly.",
    ]
    return "\n".join(lines) + "\n"


def save_study_note(study: optuna.Study, body: str) -> None:
    """Store ``body`` as the study's optuna-dashboard note.

    The attrs are written directly, in the layout ``optuna_dashboard.save_note`` uses, rather than
    through it: importing optuna-dashboard costs about two seconds, on every study created.

    Chunks left over from a longer earlier note are blanked, as optuna-dashboard does: its reader
    joins every ``dashboard:note_str:<i>`` attr, so a stale chunk would trail the new body.
    """
    storage, study_id = study._storage, study._study_id
    attrs = storage.get_study_system_attrs(study_id)
    storage.set_study_system_attr(study_id, _VERSION, attrs.get(_VERSION, 0) + 1)
    n_chunks = math.ceil(len(body) / _CHUNK)
    for i in range(n_chunks):
        storage.set_study_system_attr(
            study_id, f"{_PREFIX}{i}", body[i * _CHUNK : (i + 1) * _CHUNK]
        )
    n_stored = sum(key.startswith(_PREFIX) for key in attrs)
    for i in range(n_chunks, n_stored):
        storage.set_study_system_attr(study_id, f"{_PREFIX}{i}", "")
