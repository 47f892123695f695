"""Samplers, pruners, and creating or resuming a study with its stored configuration."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import warnings

import optuna

from hpo import record
from hpo.config import SearchConfig

logger = logging.getLogger(__name__)

SAMPLERS = ("random", "tpe", "qmc", "cmaes", "gp")
PRUNERS = ("loss", "median", "percentile", "sha", "hyperband", "none")
# Optional samplers need packages beyond Optuna's own; the extra that installs them.
_SAMPLER_NEEDS = {"cmaes": (("cmaes",), "cmaes"), "gp": (("torch", "scipy"), "gp")}


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``, seeded.

    TPE runs multivariate (lr and weight decay interact) and with the constant liar, so that
    parallel workers do not all sample the point that currently looks best.

    Raises:
        ValueError: If the name is unknown or the sampler's package is not installed.
    """
    if name not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}, but got {name!r}.")
    packages, extra = _SAMPLER_NEEDS.get(name, ((), ""))
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ValueError(
            f"The {name} sampler needs {', '.join(missing)}: pip install -e '.[{extra}]'."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        return optuna.samplers.GPSampler(seed=seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner called ``name``, its schedule scaled to ``epochs``.

    The best learning rates of the book's experiment start slowly: their validation accuracy
    stays near chance for the first ~10 of 50 epochs, where a net that predicts one class
    scores as well (~0.1), so an early ranking of trials is noise. The median, halving and
    Hyperband pruners wait a fifth of the epochs before they judge a trial. The percentile
    pruner judges from epoch 8 of 50 on, every 5 epochs, by the trial's best value so far
    against the completed trials and the other workers' running ones at that epoch
    (hpo.pruning.PeerPercentilePruner): once a few good trials are known it keeps only trials
    in their top quarter. The default, "loss", first asks a pruner that needs no
    accuracy (hpo.pruning.LossFallPruner): at epoch 3 of 50 it prunes a trial whose training
    loss has fallen less than half as much as the best trials' (completed, and the other
    workers' running ones), then the percentile pruner as above. benchmarks/bench_search.py
    chose it, over 5 seeds with 2 jobs: 1122 epochs in median against the book procedure's
    5000, a best of 0.80-0.85 (book 0.80-0.84); on seed 0 with 1 job it trained 871 epochs
    where the percentile pruner alone trained 1648.
    Successive halving from epoch 5, as cheap, collapsed to 0.21 in one seed of five.

    Raises:
        ValueError: If the name is unknown.
    """
    from hpo.pruning import AnyOf, AtSteps, LossFallPruner, PeerPercentilePruner, rung_steps

    if name not in PRUNERS:
        raise ValueError(f"`pruner` must be one of {PRUNERS}, but got {name!r}.")
    warmup = max(epochs // 5, 1)
    # Each pruner but Hyperband is asked only at the steps where it can decide (hpo/pruning.py):
    # asking it at every epoch costs a storage read each time and changes nothing.
    if name == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        return AtSteps(pruner, range(warmup, epochs))
    if name in ("percentile", "loss"):
        start, interval = max(epochs // 6, 1), max(epochs // 10, 1)
        pruner = PeerPercentilePruner(
            25.0, n_startup_trials=5, n_warmup_steps=start, interval_steps=interval
        )
        percentile = AtSteps(pruner, range(start, epochs, interval))
        if name == "percentile":
            return percentile
        # The training loss's fall judges first, at epoch 3 of 50, where the accuracy is noise.
        step = max(epochs // 16, 2)
        if step >= start:
            return percentile
        return AnyOf(LossFallPruner(step), percentile)
    if name == "sha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=3)
        return AtSteps(pruner, rung_steps(warmup, 3, epochs))
    if name == "hyperband":
        # Unwrapped: Optuna shows each trial's sampler only the trials of its bracket when
        # `isinstance(study.pruner, HyperbandPruner)` (optuna.pruners._filter_study); a wrapper
        # would hide the brackets and make every sampler see every trial.
        return optuna.pruners.HyperbandPruner(
            min_resource=warmup, max_resource=epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def stored_config(study: optuna.Study) -> SearchConfig | None:
    """The configuration a study was created with, or None for a study made elsewhere."""
    data = study.user_attrs.get(record.CONFIG_ATTR)
    return None if data is None else SearchConfig.from_dict(data)


def store_config(study: optuna.Study, config: SearchConfig) -> None:
    """Store ``config`` as the study's configuration (user attr ``config``)."""
    study.set_user_attr(record.CONFIG_ATTR, config.to_dict())


def create_study(storage: optuna.storages.BaseStorage, name: str, config: SearchConfig):
    """Create a study that stores ``config``, so that its ``.db`` alone rebuilds any trial."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    store_config(study, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([record.OBJECTIVE_METRIC])
    # The Markdown note optuna-dashboard shows above the trials: the configuration at a glance.
    from hpo.note import save_study_note, study_note

    save_study_note(study, study_note(name, config))
    return study


# Optuna's tables keep a study name in a VARCHAR(512) column: PostgreSQL refuses a longer one
# (SQLite would store it), so it is refused up front, on every back end alike.
MAX_STUDY_NAME = 512


def check_study_name(name: str, flag: str = "--study") -> None:
    """Refuse a study name the storage cannot keep; any other name is stored verbatim.

    Raises:
        ValueError: If the name is longer than ``MAX_STUDY_NAME`` characters.
    """
    if len(name) > MAX_STUDY_NAME:
        raise ValueError(
            f"{flag}: a study name may have at most {MAX_STUDY_NAME} characters (Optuna's "
            f"tables keep no more), but got one of {len(name)}."
        )


def folder_name(study: str) -> str:
    """A folder name for files derived from a study (its report figures), one path component.

    The name itself where it is safe (letters, digits, ``.``, ``_``, ``-``; not starting with a
    dot; at most 100 characters); otherwise its safe characters, shortened, with a hash of the
    whole name, so that different names never share a folder and none leaves ``studies/``.
    """
    if _SAFE.fullmatch(study) and len(study) <= _MAX_FOLDER and not study.startswith("."):
        return study
    digest = hashlib.sha256(study.encode()).hexdigest()[:12]
    kept = re.sub(r"[^A-Za-z0-9._-]+", "_", study).lstrip(".")[: _MAX_FOLDER - 13]
    return f"{kept}-{digest}" if kept else digest


_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_MAX_FOLDER = 100
