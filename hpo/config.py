"""Every default of a search in one place; CLI flags override it, and the study stores it.

A study keeps its configuration as the user attr ``config``, so the ``.db`` file alone rebuilds any
trial (:func:`hpo.objective.trial_setup`) and a resumed run keeps the same experiment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hpo.space import DEFAULT_SPACE, space_to_dict

# Fields that define what a trial computes; a resumed study must not change them.
EXPERIMENT_FIELDS = (
    "dataset",
    "train_size",
    "val_rate",
    "seed",
    "hidden",
    "activation",
    "weight_init_std",
    "optimizer",
    "batch_size",
    "epochs",
    "dtype",
    "train_metrics",
    "space",
)


@dataclass
class SearchConfig:
    """The book's ch. 6 experiment, tuned: see ../shared/DESIGN.md "Defaults"."""

    # Data: which samples the search trains and validates on.
    dataset: str = "mnist-5k"  # models.datasets name; mnist-5k is embedded (no network)
    train_size: int = 500  # samples the search uses (the book: 500); the rest is the test set
    val_rate: float = 0.2  # share of those held out for validation (the book: 20%)
    seed: int = 0  # seeds the split, every trial's weights and batches, and the samplers

    # Network and training: what a trial trains unless the space samples it.
    hidden: list[int] = field(default_factory=lambda: [100] * 6)  # the book's 6 x 100 ReLU net
    activation: str = "relu"  # relu, sigmoid or tanh
    weight_init_std: str | float = "relu"  # He init for ReLU (the book's default)
    optimizer: str = "sgd"  # the book's ch. 6.5 search trains with plain SGD
    batch_size: int = 100  # samples per mini-batch
    epochs: int = 50  # epochs per trial; the objective is validation accuracy after the last
    # float32 or float64 for weights and arithmetic. float32 halves a training step's time and
    # changes no outcome of the book's experiment: the same final validation accuracies within
    # 0.01 on 40 trials (benchmarks/bench_search.py measures both against their GEMM bound).
    dtype: str = "float32"
    # Where the training curves come from: "batches", the means over each epoch's mini-batches
    # (no extra pass: a quarter of an epoch saved), or "eval", a pass over the training set in
    # evaluation mode after the epoch (models.Trainer's train_metrics). Validation is unaffected.
    train_metrics: str = "batches"

    # Search: what is sampled and how.
    space: dict[str, Any] = field(default_factory=lambda: space_to_dict(DEFAULT_SPACE))
    sampler: str = "tpe"  # random, tpe, qmc, cmaes or gp; chosen by benchmarks/bench_search.py
    pruner: str = "loss"  # loss, median, percentile, sha, hyperband or none; same benchmark

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Rebuild a configuration stored by :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        # Studies stored before train_metrics existed evaluated the training set after each epoch.
        data = {"train_metrics": "eval", **data}
        return cls(**{k: v for k, v in data.items() if k in names})

    def conflicts(self, other: SearchConfig) -> list[str]:
        """Experiment fields whose values differ from ``other``'s."""
        return [f for f in EXPERIMENT_FIELDS if getattr(self, f) != getattr(other, f)]
