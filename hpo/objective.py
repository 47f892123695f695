"""The objective: suggest -> build -> train with a per-epoch report/prune step -> return.

Data are loaded once per process and passed in; a trial only builds a network and trains it. The
same :func:`trial_setup` rebuilds any stored trial for retraining and exact replay.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from hpo import record
from hpo.config import SearchConfig
from hpo.params import NETWORK, OPTIMIZER, PARAMS, TRAINER, value_of
from hpo.pruning import TRAIN_LOSS, curve_steps, decision_steps
from hpo.space import space_from_dict, suggest
from models import MultiLayerNet, Trainer, get_optimizer
from models.datasets import Split, load_dataset, search_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSetup:
    """Everything needed to rebuild one trial's training.

    ``MultiLayerNet(**setup.network)``, ``get_optimizer(**setup.optimizer)`` and
    ``Trainer(net, opt, *split..., **setup.trainer)`` rebuild it; ``setup.data`` names the data
    set and the split (:func:`load_split`).
    """

    network: dict[str, Any]
    optimizer: dict[str, Any]
    trainer: dict[str, Any]
    data: dict[str, Any]
    seed: int


def trial_seed(seed: int, number: int) -> int:
    """A trial's own seed, derived from the study seed and the trial number."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def trial_setup(config: SearchConfig, params: dict[str, Any], seed: int) -> TrialSetup:
    """Map a trial's parameters onto ``models`` keywords, over the configuration's defaults.

    Each parameter feeds the call and keyword its row of :data:`hpo.params.PARAMS` names; one the
    trial did not sample takes that row's default, or is left out for the ``models`` default.
    """
    kwargs: dict[str, dict[str, Any]] = {NETWORK: {}, OPTIMIZER: {}, TRAINER: {}}
    for name, spec in PARAMS.items():
        value = value_of(name, config, params)
        if value is not None and spec.keyword != "hidden_size_list":
            kwargs[spec.feeds][spec.keyword] = value
    network_rng, trainer_rng = np.random.SeedSequence(seed).spawn(2)
    network = {
        "input_size": 784,
        "hidden_size_list": hidden_sizes(config, params),
        "output_size": 10,
        **kwargs[NETWORK],
        "rng": int(network_rng.generate_state(1)[0]),
        "dtype": config.dtype,
    }
    trainer = {
        "epochs": config.epochs,
        "train_metrics": config.train_metrics,
        **kwargs[TRAINER],
        "rng": int(trainer_rng.generate_state(1)[0]),
    }
    data = {
        "dataset": config.dataset,
        "train_size": config.train_size,
        "val_rate": config.val_rate,
        "seed": config.seed,
    }
    return TrialSetup(
        _in_order(network, MultiLayerNet),
        _in_order(kwargs[OPTIMIZER], get_optimizer),
        _in_order(trainer, Trainer),
        data,
        seed,
    )


def hidden_sizes(config: SearchConfig, params: dict[str, Any]) -> list[int]:
    """``hidden_size_list`` from ``n_layers`` and ``hidden_size``; neither: ``config.hidden``."""
    if "n_layers" not in params and "hidden_size" not in params:
        return list(config.hidden)
    n_layers = value_of("n_layers", config, params)
    return [value_of("hidden_size", config, params)] * n_layers


def _in_order(kwargs: dict[str, Any], call: Any) -> dict[str, Any]:
    """``kwargs`` in the order of ``call``'s signature (then the rest), as a reader expects."""
    order = {name: i for i, name in enumerate(inspect.signature(call).parameters)}
    return dict(sorted(kwargs.items(), key=lambda item: order.get(item[0], len(order))))


def load_split(config: SearchConfig, data_dir: str | None = None) -> Split:
    """The configuration's train/validation/test split, the same in every process.

    Full-size data sets are memory-mapped uint8 images shared by all processes
    (``load_dataset(..., shared=True)``); a split holds index arrays into them.
    """
    dataset = load_dataset(config.dataset, data_dir, dtype=np.dtype(config.dtype), shared=True)
    return search_split(dataset, config.train_size, config.val_rate, config.seed)


def build(setup: TrialSetup, split: Split, on_epoch_end=None) -> tuple[MultiLayerNet, Trainer]:
    """The network and trainer a setup describes, ready to ``trainer.train()``."""
    net = MultiLayerNet(**setup.network)
    optimizer = get_optimizer(**setup.optimizer)
    trainer = Trainer(
        net,
        optimizer,
        split.x_train,
        split.t_train,
        split.x_val,
        split.t_val,
        on_epoch_end=on_epoch_end,
        **setup.trainer,
    )
    return net, trainer


class Objective:
    """Trains one ``MultiLayerNet`` per trial and returns its final validation accuracy.

    Args:
        config: The search configuration.
        split: The data, loaded once by the caller.
    """

    def __init__(self, config: SearchConfig, split: Split) -> None:
        self.config = config
        self.space = space_from_dict(config.space)
        self.split = split

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        seed = trial_seed(self.config.seed, trial.number)
        record.write_seed(trial, seed)

        pruner = getattr(getattr(trial, "study", None), "pruner", None)
        # A pruner that judges the training loss reads the curve so far from the trial's attrs.
        loss_steps = curve_steps(pruner)
        prune_steps = decision_steps(pruner)  # None: it may prune at any epoch
        losses: list[float] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            losses.append(metrics[TRAIN_LOSS])
            if epoch in loss_steps:
                trial.set_user_attr(TRAIN_LOSS, list(losses))  # a copy: in-memory storages keep it
            trial.report(metrics[record.OBJECTIVE_METRIC], epoch)
            if (prune_steps is None or epoch in prune_steps) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        _, trainer = build(trial_setup(self.config, params, seed), self.split, report)
        try:
            result = trainer.train()
        finally:
            # Pruned or not, the curves so far go with the trial.
            record.write_curves(trial, trainer.result.history, trainer.result.epochs_run)
        if result.diverged:
            record.write_diverged(trial, result.diverged_epoch, result.reason)
            # A diverged trial ends pruned, so that its value can never be a "best".
            raise optuna.TrialPruned(f"diverged: {result.reason}")
        return result.history[record.OBJECTIVE_METRIC][-1]
