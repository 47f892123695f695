"""The objective: suggest -> build -> train with a per-epoch report/prune step -> return.

Data are loaded once per process and passed in; a trial only builds a network and trains it. The
same :func:`trial_setup` rebuilds any stored trial for retraining and exact replay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from hpo import record
from hpo.config import SearchConfig
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
    """Map a trial's parameters onto ``models`` keywords, over the configuration's defaults."""
    n_layers = params.get("n_layers", len(config.hidden))
    hidden = [params["hidden_size"]] * n_layers if "hidden_size" in params else config.hidden
    if "n_layers" in params and "hidden_size" not in params:
        hidden = [config.hidden[0]] * n_layers
    network_rng, trainer_rng = np.random.SeedSequence(seed).spawn(2)
    network = {
        "input_size": 784,
        "hidden_size_list": list(hidden),
        "output_size": 10,
        "activation": params.get("activation", config.activation),
        "weight_init_std": params.get("weight_init_std", config.weight_init_std),
        "weight_decay_lambda": params.get("weight_decay", 0.0),
        "use_batchnorm": params.get("use_batchnorm", False),
        "use_dropout": params.get("use_dropout", "dropout_ratio" in params),
        "dropout_ratio": params.get("dropout_ratio", 0.5),
        "rng": int(network_rng.generate_state(1)[0]),
        "dtype": config.dtype,
    }
    optimizer = {"name": params.get("optimizer", config.optimizer)}
    for key in ("lr", "momentum"):
        if key in params:
            optimizer[key] = params[key]
    trainer = {
        "epochs": config.epochs,
        "batch_size": params.get("batch_size", config.batch_size),
        "rng": int(trainer_rng.generate_state(1)[0]),
    }
    data = {
        "dataset": config.dataset,
        "train_size": config.train_size,
        "val_rate": config.val_rate,
        "seed": config.seed,
    }
    return TrialSetup(network, optimizer, trainer, data, seed)


def load_split(config: SearchConfig, data_dir: str | None = None) -> Split:
    """The configuration's train/validation/test split, the same in every process."""
    dataset = load_dataset(config.dataset, data_dir, dtype=np.dtype(config.dtype))
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

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[record.OBJECTIVE_METRIC], epoch)
            if trial.should_prune():
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
