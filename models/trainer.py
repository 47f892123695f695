"""Mini-batch training with per-epoch evaluation (the book's ``Trainer``, ch. 6).

Differences from the book, on purpose:
- Each epoch visits every training sample once, in a fresh random order; ``sampling="replacement"``
  reproduces the book's ``np.random.choice`` batches.
- Evaluation runs after each epoch's updates, so the last epoch's updates show in the final
  accuracy (the book evaluates before them).
- Losses come from the per-epoch evaluation pass that also gives the accuracies; no extra
  forward pass runs per iteration only to log a loss.
- A non-finite loss stops training at once and the result records it.
- ``train_metrics="batches"`` takes the training loss and accuracy from the epoch's own training
  forward passes (their mean over the epoch, as Keras reports them) instead of a separate
  evaluation pass over the training set, which costs about a quarter of an epoch of the book's
  network on 400 samples (benchmarks/bench_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.network import MultiLayerNet
from models.optimizers import Optimizer
from models.shared import ScaledRows

SAMPLINGS = ("shuffle", "replacement")
TRAIN_METRICS = ("eval", "batches")
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")

EpochCallback = Callable[[int, dict[str, float]], Any]


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        history: Per-epoch ``train_loss``, ``train_acc``, ``val_loss`` and ``val_acc``; the
            validation ones measured in evaluation mode after the epoch's updates, the training
            ones too or, with ``train_metrics="batches"``, the means over the epoch's batches.
        epochs_run: Epochs whose updates all ran.
        diverged: Whether a loss became NaN or infinite.
        diverged_epoch: The epoch (1-based) in which it did, else None.
        reason: Why training diverged, else None.
    """

    history: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    epochs_run: int = 0
    diverged: bool = False
    diverged_epoch: int | None = None
    reason: str | None = None


class Trainer:
    """Trains a network with an optimizer on a training set, evaluating after every epoch.

    Args:
        network: The network to train (its parameters are updated in place).
        optimizer: Updates ``network.params`` from each mini-batch gradient.
        x_train, t_train: Training samples and labels (integer or one-hot).
        x_val, t_val: Validation samples and labels, evaluated after every epoch.
        epochs: Number of epochs.
        batch_size: Samples per mini-batch.
        sampling: "shuffle" (every sample once per epoch) or "replacement" (the book's batches).
        eval_sample_size: Evaluate accuracy on only the first this-many samples of each set
            (the book's ``evaluate_sample_num_per_epoch``); None evaluates all.
        train_metrics: "eval": the training loss and accuracy come from an evaluation-mode pass
            over the training set after the epoch's updates, like the validation ones;
            "batches": they are the sample-weighted means of the epoch's training batches' loss
            (weight decay included) and accuracy, each measured in training mode before that
            batch's update: no extra pass, a little behind the weights at the epoch's end.
        rng: Seed or generator for the batch order.
        on_epoch_end: Called as ``on_epoch_end(epoch, metrics)`` after each epoch's evaluation,
            with the 1-based epoch and that epoch's metrics. An exception it raises stops training
            and propagates to the caller of :meth:`train`; :attr:`result` still holds the history.

    Raises:
        ValueError: If a size or a name is out of its range, or the arrays do not match.
    """

    def __init__(
        self,
        network: MultiLayerNet,
        optimizer: Optimizer,
        x_train: np.ndarray,
        t_train: np.ndarray,
        x_val: np.ndarray,
        t_val: np.ndarray,
        *,
        epochs: int = 50,
        batch_size: int = 100,
        sampling: str = "shuffle",
        eval_sample_size: int | None = None,
        train_metrics: str = "eval",
        rng: int | np.random.Generator | None = None,
        on_epoch_end: EpochCallback | None = None,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"`epochs >= 1` must hold, but got {epochs=}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size >= 1` must hold, but got {batch_size=}.")
        if sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {SAMPLINGS}, but got {sampling=}.")
        if train_metrics not in TRAIN_METRICS:
            raise ValueError(
                f"`train_metrics` must be one of {TRAIN_METRICS}, but got {train_metrics=}."
            )
        if eval_sample_size is not None and eval_sample_size < 1:
            raise ValueError(f"`eval_sample_size >= 1` must hold, but got {eval_sample_size=}.")
        for x, t, name in ((x_train, t_train, "train"), (x_val, t_val, "val")):
            if len(x) != len(t) or len(x) == 0:
                raise ValueError(
                    f"x_{name} and t_{name} must have the same non-zero length, "
                    f"but got {len(x)} and {len(t)}."
                )
        self.network = network
        self.optimizer = optimizer
        # Cast once here, not per batch: a float64 batch would silently promote float32 weights.
        # Shared uint8 images (ScaledRows) stay shared: only each batch becomes floats.
        self.x_train = _as_dtype(x_train, network.dtype)
        self.t_train = np.asarray(t_train)
        self.x_val = _as_dtype(x_val, network.dtype)
        self.t_val = np.asarray(t_val)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.eval_sample_size = eval_sample_size
        self.train_metrics = train_metrics
        self.rng = np.random.default_rng(rng)
        self.on_epoch_end = on_epoch_end
        self.result = TrainResult()

    @property
    def iterations_per_epoch(self) -> int:
        return max(math.ceil(len(self.x_train) / self.batch_size), 1)

    def _batches(self) -> list[np.ndarray]:
        n, size = len(self.x_train), self.batch_size
        if self.sampling == "replacement":
            return [self.rng.choice(n, size) for _ in range(self.iterations_per_epoch)]
        order = self.rng.permutation(n)
        return [order[i : i + size] for i in range(0, n, size)]

    def _evaluate(self, x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        if self.eval_sample_size is not None:
            x, t = x[: self.eval_sample_size], t[: self.eval_sample_size]
        return self.network.evaluate(x, t)

    def _diverge(self, epoch: int, what: str, value: float) -> TrainResult:
        self.result.diverged = True
        self.result.diverged_epoch = epoch
        self.result.reason = f"{what} became {value} in epoch {epoch}"
        return self.result

    def train(self) -> TrainResult:
        """Run all epochs (or until divergence, or until ``on_epoch_end`` raises).

        Returns:
            The :class:`TrainResult`, also kept in :attr:`result`.
        """
        # Overflow on the way to a non-finite loss is expected; the loss check reports it.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._train()

    def _train(self) -> TrainResult:
        net, history = self.network, self.result.history
        from_batches = self.train_metrics == "batches"
        for epoch in range(1, self.epochs + 1):
            loss_sum = correct = seen = 0.0
            for idx in self._batches():
                t = self.t_train.take(idx, axis=0)
                loss, grads = net.loss_and_gradient(self.x_train.take(idx, axis=0), t)
                if not math.isfinite(loss):
                    return self._diverge(epoch, "training loss", loss)
                if from_batches:
                    # The scores of this forward pass, before the update below changes the weights.
                    labels = t.argmax(axis=1) if t.ndim == 2 else t
                    correct += float((net.last_layer.y.argmax(axis=1) == labels).sum())
                    loss_sum += loss * len(idx)
                    seen += len(idx)
                self.optimizer.update(net.params, grads)

            val_loss, val_acc = self._evaluate(self.x_val, self.t_val)
            if not math.isfinite(val_loss):
                return self._diverge(epoch, "validation loss", val_loss)
            if from_batches:
                train_loss, train_acc = loss_sum / seen, correct / seen
            else:
                train_loss, train_acc = self._evaluate(self.x_train, self.t_train)
            metrics = {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
            }
            for name, value in metrics.items():
                history[name].append(value)
            self.result.epochs_run = epoch
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, metrics)
        return self.result


def _as_dtype(x, dtype) -> np.ndarray | ScaledRows:
    """``x`` as an array of ``dtype``; ScaledRows convert their rows when taken instead."""
    return x.astype(dtype) if isinstance(x, ScaledRows) else np.asarray(x, dtype=dtype)
