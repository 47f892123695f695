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
- Runs of at least ``COMPILED_FROM_STEPS`` steps of a plain ReLU network train and evaluate in
  compiled loops (``models.fused``, with numba installed: ``pip install -e ".[fast]"``), with the
  same results to the last bit.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)

# Runs of at least this many steps use the compiled loops by default. Importing numba, starting
# its compiler and loading the cached loops take about 0.6 s once per process (the first time,
# compiling them 2 s more); a step of the book's network on 48,000 images saves 0.2 ms in float32
# and 0.5 ms in float64 (benchmarks/bench_scale.py). The default search's trials, 4 steps per
# epoch, stay with NumPy.
COMPILED_FROM_STEPS = 3000


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
        compiled: Train and evaluate in compiled loops (``models.fused``; the same results).
            None: where the network allows it (ReLU, no BatchNorm or Dropout, integer labels),
            numba is installed and the run has at least ``COMPILED_FROM_STEPS`` steps; True:
            always (ValueError where the network does not allow it, ImportError without numba);
            False: never.

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
        compiled: bool | None = None,
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
        # Functions and objects of models.fused, not the module: a Trainer stays picklable.
        fused = _fused_module(compiled, network, self.t_train, self.t_val,
                              self.epochs * self.iterations_per_epoch)  # fmt: skip
        self._step = None if fused is None else fused.Step(network, optimizer)
        self._evaluate_compiled = None if fused is None else fused.evaluate

    @property
    def compiled(self) -> bool:
        """Whether this trainer trains and evaluates in compiled loops."""
        return self._step is not None

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
        if self._evaluate_compiled is not None:
            return self._evaluate_compiled(self.network, x, t)
        return self.network.evaluate(x, t)

    def _train_step(self, idx: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
        """Forward, backward and update on the rows ``idx`` with labels ``t``: the loss and
        the softmax output. A loss that is not finite leaves the parameters as they were."""
        if self._step is not None:
            return self._step(self.x_train, idx, t), self._step.probabilities
        net = self.network
        loss, grads = net.loss_and_gradient(self.x_train.take(idx, axis=0), t)
        if math.isfinite(loss):
            self.optimizer.update(net.params, grads)
        return loss, net.last_layer.y

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
        history = self.result.history
        from_batches = self.train_metrics == "batches"
        for epoch in range(1, self.epochs + 1):
            loss_sum = correct = seen = 0.0
            for idx in self._batches():
                t = self.t_train.take(idx, axis=0)
                loss, probabilities = self._train_step(idx, t)
                if not math.isfinite(loss):
                    return self._diverge(epoch, "training loss", loss)
                if from_batches:
                    # The scores of this forward pass, before the update changed the weights.
                    labels = t.argmax(axis=1) if t.ndim == 2 else t
                    correct += float((probabilities.argmax(axis=1) == labels).sum())
                    loss_sum += loss * len(idx)
                    seen += len(idx)

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


def _fused_module(compiled: bool | None, network, t_train, t_val, steps: int):
    """``models.fused`` if this run trains in compiled loops, else None."""
    if compiled is False:
        return None
    if compiled is None and steps < COMPILED_FROM_STEPS:
        return None
    allowed = (
        type(network) is MultiLayerNet
        and network.activation == "relu"
        and not (network.use_batchnorm or network.use_dropout)
        # The loops index by label unchecked; NumPy's indexing raises (or wraps) on others.
        and all(_class_indices(t, network.output_size) for t in (t_train, t_val))
    )
    if not allowed:
        if compiled:
            raise ValueError(
                "`compiled=True` needs a MultiLayerNet of ReLU layers without BatchNorm or "
                "Dropout, trained on integer labels from 0 to output_size - 1."
            )
        return None
    try:  # imported only here: models.fused imports numba, the rest of models NumPy only
        from models import fused
    except ImportError as error:
        if compiled:
            raise ImportError(
                f'`compiled=True` needs numba ({error}): pip install -e ".[fast]"'
            ) from error
        logger.info("Training in NumPy: the compiled loops need numba (%s).", error)
        return None
    return fused


def _class_indices(t: np.ndarray, n_classes: int) -> bool:
    """Whether ``t`` is integer labels, each in ``range(n_classes)``."""
    return (
        t.ndim == 1
        and t.dtype.kind in "iu"
        and (t.size == 0 or 0 <= t.min() <= t.max() < n_classes)
    )


def _as_dtype(x, dtype) -> np.ndarray | ScaledRows:
    """``x`` as an array of ``dtype``; ScaledRows convert their rows when taken instead."""
    return x.astype(dtype) if isinstance(x, ScaledRows) else np.asarray(x, dtype=dtype)
