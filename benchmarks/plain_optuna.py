"""The book's search as a reader who knows Optuna would write it, training with ``models``.

The reference arm of ``benchmarks/bench_search.py``: Optuna's defaults (``TPESampler()``,
``MedianPruner()``), a plain RDB storage URL, one process, ``study.optimize(objective,
n_trials=...)``, and an epoch loop with the usual ``trial.report`` / ``trial.should_prune`` step
(optuna-examples' pattern). Nothing from ``hpo``: the network, optimizer and trainer are
``models``' defaults (float64, training metrics evaluated after every epoch), the data the same
400/100 split of mnist-5k that ``python -m hpo.search --seed S`` draws.

Run: ``python benchmarks/plain_optuna.py --storage sqlite:///plain.db --study plain --seed 0``.
"""

from __future__ import annotations

import argparse
import sys

import optuna

from models import SGD, MultiLayerNet, Trainer
from models.datasets import load_dataset, search_split

EPOCHS = 50


def build_trainer(params: dict[str, float], number: int, split) -> Trainer:
    """The trial's network and trainer: the book's 6 x 100 ReLU net, SGD, batch 100."""
    net = MultiLayerNet(784, [100] * 6, 10, weight_decay_lambda=params["weight_decay"], rng=number)
    # One epoch per train() call: the objective's loop below runs the epochs.
    return Trainer(
        net,
        SGD(lr=params["lr"]),
        split.x_train,
        split.t_train,
        split.x_val,
        split.t_val,
        epochs=1,
        batch_size=100,
        rng=number,
    )


def make_objective(split):
    def objective(trial: optuna.Trial) -> float:
        params = {
            "lr": trial.suggest_float("lr", 1e-6, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-4, log=True),
        }
        trainer = build_trainer(params, trial.number, split)
        for epoch in range(1, EPOCHS + 1):
            result = trainer.train()
            if result.diverged:
                raise optuna.TrialPruned(result.reason)
            val_acc = result.history["val_acc"][-1]
            trial.report(val_acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return val_acc

    return objective


def load_split(seed: int):
    return search_split(load_dataset("mnist-5k"), 500, 0.2, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=100)
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(make_objective(load_split(args.seed)), n_trials=args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
