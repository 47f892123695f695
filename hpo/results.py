"""Reading results back out of a study database, without ever writing to it.

``best_params`` gives training code the best parameters in one line; ``trial_config`` gives the
full configuration of any trial (network, optimizer, trainer, data), rebuilt from the study's
stored configuration and the trial's stored parameters and seed (:func:`hpo.objective.trial_setup`,
the same function the search ran). Storages are opened read-only and a missing SQLite file is an
error, never created as a side effect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo import record
from hpo._server_storage import with_retries
from hpo.config import SearchConfig
from hpo.objective import TrialSetup, trial_seed, trial_setup
from hpo.storage import check_storage, display_url, opened_storage
from hpo.study import stored_config

logger = logging.getLogger(__name__)

Storage = str | optuna.storages.BaseStorage


@dataclass(frozen=True)
class StoredTrial:
    """One trial of a study made by ``hpo.search``, with what rebuilds it.

    Attributes:
        study_name: The study's name.
        config: The study's stored search configuration.
        trial: The trial as stored (state, value, params, intermediate values, user attrs).
        setup: The trial's training configuration.
    """

    study_name: str
    config: SearchConfig
    trial: FrozenTrial
    setup: TrialSetup

    @property
    def stored_curves(self) -> dict[str, list[float]]:
        """The per-epoch curves the search stored: ``val_acc`` from the intermediate values,
        ``train_acc``, ``train_loss`` and ``val_loss`` from the user attrs (when present)."""
        return record.curves(self.trial)


@contextmanager
def open_readonly(storage: Storage) -> Iterator[optuna.storages.BaseStorage]:
    """An existing storage opened read-only; a URL's engine is disposed of afterwards.

    Raises:
        ValueError: If the URL is malformed, its SQLite file does not exist or holds no
            Optuna tables.
    """
    if not isinstance(storage, str):
        yield storage
        return
    if not check_storage(storage, create=False):
        raise ValueError(f"Storage {display_url(storage)} holds no studies.")
    with opened_storage(storage, read_only=True) as opened:
        yield opened


def _where(storage: Storage) -> str:
    return display_url(storage) if isinstance(storage, str) else type(storage).__name__


def load_study(storage: optuna.storages.BaseStorage, name: str, where: str) -> optuna.Study:
    """The study ``name``; an unknown name raises ValueError listing the studies in ``where``."""
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        listed = ", ".join(repr(n) for n in names) or "none"
        raise ValueError(f"Study {name!r} is not in {where}; the studies there: {listed}.")
    return optuna.load_study(study_name=name, storage=storage)


def _states(trials: list[FrozenTrial]) -> str:
    counts = sorted((s.name.lower(), n) for s, n in record.count_states(trials).items())
    return ", ".join(f"{n} {state}" for state, n in counts) or "no trials"


def _pick(study: optuna.Study, number: int | None, where: str) -> FrozenTrial:
    if number is None:
        best = best_trial(study)
        if best is None:
            trials = study.get_trials(deepcopy=False)
            raise ValueError(
                f"Study {study.study_name!r} in {where} has no complete trial yet "
                f"({_states(trials)})."
            )
        return best
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        span = f"0..{len(trials) - 1}" if trials else "none: the study has no trials"
        raise ValueError(
            f"Trial numbers of study {study.study_name!r} are {span}, but got {number}."
        )
    return by_number[number]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best trial by :func:`hpo.record.ranked`, or None, without loading the whole study.

    An RDB storage is asked for the complete trials' values only; full trials are then read one
    at a time from the best value down until one ranks (almost always the first). Reading every
    trial took 5.7 ms per trial on PostgreSQL (50 intermediate values each: 1.8 s at 300 trials,
    benchmarks/bench_scale.py).
    """
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # under Optuna's _CachedStorage
    maximize = study.directions[0] == StudyDirection.MAXIMIZE
    if not isinstance(storage, optuna.storages.RDBStorage) or len(study.directions) != 1:
        return record.best(study.get_trials(deepcopy=False), maximize=maximize)
    sign = -1.0 if maximize else 1.0
    for trial_id, _, _ in sorted(_complete_values(storage, study._study_id),
                                 key=lambda row: (sign * row[2], row[1])):  # fmt: skip
        trial = storage.get_trial(trial_id)
        if record.ranked([trial], maximize=maximize):
            return trial
    return None


def _complete_values(storage: optuna.storages.RDBStorage, study_id: int) -> list[tuple]:
    """(trial_id, number, value) of the study's complete trials with a finite value."""
    from optuna.storages._rdb import models

    trial, value = models.TrialModel, models.TrialValueModel
    query = (
        sqlalchemy.select(trial.trial_id, trial.number, value.value)
        .join(value, value.trial_id == trial.trial_id)
        .where(
            trial.study_id == study_id,
            trial.state == TrialState.COMPLETE,
            value.objective == 0,
            value.value_type == value.TrialValueType.FINITE,
        )
    )

    def read() -> list[tuple]:
        with storage.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]

    # The engine's own query, so tried again while a database server restarts, as the storage's
    # own reads are (hpo/_server_storage.py).
    return with_retries(read, "reading the complete trials' values")


def find_trial(storage: Storage, study: str, trial: int | None = None) -> FrozenTrial:
    """A stored trial of any study, hpo's or not.

    Args:
        storage: A storage URL (opened read-only; it must exist) or an Optuna storage.
        study: The study's name.
        trial: The trial's number; None for the best complete trial.

    Raises:
        ValueError: If the storage does not exist, the study is not in it (the message lists
            those that are), the trial number is unknown, or ``trial`` is None and no trial is
            complete.
    """
    where = _where(storage)
    with open_readonly(storage) as opened:
        return _pick(load_study(opened, study, where), trial, where)


def load_trial(storage: Storage, study: str, trial: int | None = None) -> StoredTrial:
    """A stored trial and its training configuration.

    Args:
        storage: A storage URL (opened read-only; it must exist) or an Optuna storage.
        study: The study's name.
        trial: The trial's number; None for the best complete trial.

    Returns:
        The trial with the study's configuration and the trial's :class:`TrialSetup`.

    Raises:
        ValueError: If the storage does not exist, the study is not in it (the message lists
            those that are), the study was not made by ``hpo.search``, the trial number is
            unknown, or ``trial`` is None and no trial is complete.
    """
    where = _where(storage)
    with open_readonly(storage) as opened:
        loaded = load_study(opened, study, where)
        config = stored_config(loaded)
        if config is None:
            raise ValueError(
                f"Study {study!r} in {where} has no stored configuration (user attr `config`), "
                "so it was not made by hpo.search and its trials cannot be rebuilt."
            )
        chosen = _pick(loaded, trial, where)
    seed = record.stored_seed(chosen)
    if seed is None:
        # Studies made before the seed was stored: the objective derives it the same way.
        seed = trial_seed(config.seed, chosen.number)
    return StoredTrial(study, config, chosen, trial_setup(config, chosen.params, int(seed)))


def best_params(storage: Storage, study: str) -> dict[str, Any]:
    """The best trial's parameters, named as the ``models`` keywords they feed.

    Example::

        from hpo import best_params
        params = best_params("sqlite:///studies/hpo.db", study="default")
        # {"lr": 0.0092..., "weight_decay": 3.9e-07}, plus whatever else the space searched

    Args:
        storage: A storage URL (opened read-only; it must exist) or an Optuna storage.
        study: The study's name.

    Returns:
        A plain dict ``{name: value}``.

    Raises:
        ValueError: If the storage does not exist, the study is not in it (the message lists
            those that are), or the study has no complete trial.
    """
    return dict(find_trial(storage, study).params)


def trial_config(storage: Storage, study: str, trial: int | None = None) -> TrialSetup:
    """The full training configuration of a trial (by default the best one).

    ``MultiLayerNet(**cfg.network)``, ``get_optimizer(**cfg.optimizer)`` and ``Trainer(net, opt,
    x_train, t_train, x_val, t_val, **cfg.trainer)`` rebuild the trial; ``cfg.data`` names the
    data set and the split, ``search_split(load_dataset(cfg.data["dataset"]),
    cfg.data["train_size"], cfg.data["val_rate"], cfg.data["seed"])``.

    Args:
        storage: A storage URL (opened read-only; it must exist) or an Optuna storage.
        study: The study's name.
        trial: The trial's number; None for the best complete trial.

    Raises:
        ValueError: As :func:`load_trial`.
    """
    return load_trial(storage, study, trial).setup
