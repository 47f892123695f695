"""The book's fully connected network (ch. 6), with BatchNorm and Dropout folded in.

``MultiLayerNet`` is the book's ``MultiLayerNet`` and ``MultiLayerNetExtend`` in one class: hidden
layers Affine -> [BatchNorm] -> activation -> [Dropout], then Affine -> SoftmaxWithLoss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    cross_entropy,
)

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}
DTYPES = ("float64", "float32")
# Rows per forward pass of evaluate(). 500 rows of the book's network in float32 hold 6 MB at
# once where 2,000 held 23 MB in every worker process, and are no slower (cache-sized products):
# on 12,000 Fashion-MNIST images 0.042 s vs 0.054 s in float32, 0.130 s vs 0.139 s in float64.
EVAL_BATCH = 500


def init_std(weight_init_std: str | float, n_in: int) -> float:
    """Standard deviation of a layer's initial weights, with the book's spellings.

    Args:
        weight_init_std: "relu" or "he" for He init, sqrt(2 / n_in) (He et al., 2015); "sigmoid"
            or "xavier" for Xavier init, sqrt(1 / n_in) (Glorot & Bengio, 2010); a positive
            number for that fixed standard deviation.
        n_in: Number of inputs to the layer.

    Returns:
        The standard deviation.

    Raises:
        ValueError: If the name is unknown or the number is not positive.
    """
    if isinstance(weight_init_std, str):
        name = weight_init_std.lower()
        if name in ("relu", "he"):
            return float(np.sqrt(2.0 / n_in))
        if name in ("sigmoid", "xavier"):
            return float(np.sqrt(1.0 / n_in))
        raise ValueError(
            "`weight_init_std` must be 'relu'/'he', 'sigmoid'/'xavier' or a positive number, "
            f"but got {weight_init_std=}."
        )
    if not weight_init_std > 0:
        raise ValueError(f"`weight_init_std > 0` must hold, but got {weight_init_std=}.")
    return float(weight_init_std)


class MultiLayerNet:
    """A fully connected network for classification.

    Args:
        input_size: Number of input features (784 for MNIST).
        hidden_size_list: Width of each hidden layer, e.g. ``[100] * 6``.
        output_size: Number of classes.
        activation: "relu", "sigmoid" or "tanh".
        weight_init_std: See :func:`init_std`.
        weight_decay_lambda: L2 strength; the loss adds 0.5 * lambda * ||W||^2 for every weight
            matrix (biases, gamma and beta are not decayed), as the book defines it.
        use_batchnorm: Insert BatchNormalization after each hidden Affine layer.
        use_dropout: Insert Dropout after each hidden activation.
        dropout_ratio: Probability that Dropout drops a unit.
        rng: Seed or generator for the initial weights and the dropout masks.
        dtype: float64 or float32; parameters and computations use it.

    Raises:
        ValueError: If a size, name or ratio is out of its range.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        *,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0.0,
        use_batchnorm: bool = False,
        use_dropout: bool = False,
        dropout_ratio: float = 0.5,
        rng: int | np.random.Generator | None = None,
        dtype: Any = np.float64,
    ) -> None:
        sizes = [input_size, *hidden_size_list, output_size]
        if any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"Layer sizes must be positive integers, but got {sizes=}.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {sorted(ACTIVATIONS)}, but got {activation=}."
            )
        if not weight_decay_lambda >= 0:
            raise ValueError(
                f"`weight_decay_lambda >= 0` must hold, but got {weight_decay_lambda=}."
            )
        if np.dtype(dtype).name not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}, but got {dtype=}.")
        self.input_size = int(input_size)
        self.hidden_size_list = [int(s) for s in hidden_size_list]
        self.output_size = int(output_size)
        self.activation = activation
        self.weight_init_std = weight_init_std
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.use_batchnorm = bool(use_batchnorm)
        self.use_dropout = bool(use_dropout)
        self.dropout_ratio = float(dropout_ratio)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(rng)

        self.params: dict[str, np.ndarray] = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            std = init_std(weight_init_std, n_in)
            self.params[f"W{i}"] = (std * rng.standard_normal((n_in, n_out))).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(n_out, dtype=self.dtype)

        # Layers in order; Affine layers share their arrays with self.params.
        self.layers: list[Any] = []
        self._affines: list[Affine] = []
        self._batchnorms: list[BatchNormalization] = []
        n_hidden = len(self.hidden_size_list)
        for i in range(1, n_hidden + 2):
            affine = Affine(self.params[f"W{i}"], self.params[f"b{i}"], needs_dx=i > 1)
            self.layers.append(affine)
            self._affines.append(affine)
            if i == n_hidden + 1:
                break
            if self.use_batchnorm:
                self.params[f"gamma{i}"] = np.ones(sizes[i], dtype=self.dtype)
                self.params[f"beta{i}"] = np.zeros(sizes[i], dtype=self.dtype)
                bn = BatchNormalization(self.params[f"gamma{i}"], self.params[f"beta{i}"])
                self.layers.append(bn)
                self._batchnorms.append(bn)
            self.layers.append(ACTIVATIONS[activation]())
            if self.use_dropout:
                self.layers.append(Dropout(self.dropout_ratio, rng))
        self.last_layer = SoftmaxWithLoss()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's keywords but ``rng``: ``MultiLayerNet(**net.config)`` rebuilds it."""
        return {
            "input_size": self.input_size,
            "hidden_size_list": list(self.hidden_size_list),
            "output_size": self.output_size,
            "activation": self.activation,
            "weight_init_std": self.weight_init_std,
            "weight_decay_lambda": self.weight_decay_lambda,
            "use_batchnorm": self.use_batchnorm,
            "use_dropout": self.use_dropout,
            "dropout_ratio": self.dropout_ratio,
            "dtype": self.dtype.name,
        }

    def predict(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Class scores (before softmax) for each row of ``x``."""
        x = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            if isinstance(layer, BatchNormalization | Dropout | Relu):
                x = layer.forward(x, training)
            else:
                x = layer.forward(x)
        return x

    def weight_decay_loss(self) -> float:
        """0.5 * lambda * sum of ||W||^2 over every weight matrix (the book's L2 term)."""
        if self.weight_decay_lambda == 0.0:
            return 0.0
        total = sum(float(np.vdot(a.W, a.W)) for a in self._affines)
        return 0.5 * self.weight_decay_lambda * total

    def loss(self, x: np.ndarray, t: np.ndarray, training: bool = False) -> float:
        """Mean cross-entropy plus the weight-decay term; ``t`` is labels or one-hot rows."""
        return cross_entropy(self.predict(x, training), t) + self.weight_decay_loss()

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        """Fraction of rows whose highest score is the true class."""
        return self.evaluate(x, t)[1]

    def evaluate(
        self, x: np.ndarray, t: np.ndarray, batch_size: int | None = EVAL_BATCH
    ) -> tuple[float, float]:
        """Loss and accuracy in evaluation mode, ``batch_size`` rows per forward pass.

        In evaluation mode each row's scores depend on that row alone (BatchNorm uses its
        running statistics, Dropout scales), so the scores of all batches, put together, give
        the loss and accuracy of one pass over everything, while the activations held at once
        stay those of one batch (12,000 rows of 100 units are 9.6 MB per layer in float64, 500 rows
        0.4 MB).

        Args:
            x: Samples ``(n, d)``: an array, or :class:`models.shared.ScaledRows`.
            t: Integer labels or one-hot rows.
            batch_size: Rows per forward pass; None: all in one.
        """
        n = len(x)
        step = n if batch_size is None else int(batch_size)
        if step < 1:
            raise ValueError(f"`batch_size >= 1` must hold, but got {batch_size=}.")
        if step >= n:
            scores = self.predict(x, training=False)
        else:
            scores = np.concatenate(
                [self.predict(x[i : i + step], training=False) for i in range(0, n, step)]
            )
        labels = t.argmax(axis=1) if t.ndim == 2 else t
        accuracy = float((scores.argmax(axis=1) == labels).mean())
        return cross_entropy(scores, t) + self.weight_decay_loss(), accuracy

    def loss_and_gradient(
        self, x: np.ndarray, t: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Training-mode loss and the gradient of every parameter, by backpropagation.

        Returns:
            The loss and a dict with the same keys as ``params``.
        """
        loss = self.last_layer.forward(self.predict(x, training=True), t)
        dout = self.last_layer.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)

        lam = self.weight_decay_lambda
        grads: dict[str, np.ndarray] = {}
        for i, affine in enumerate(self._affines, start=1):
            grads[f"W{i}"] = affine.dW + lam * affine.W if lam else affine.dW
            grads[f"b{i}"] = affine.db
        for i, bn in enumerate(self._batchnorms, start=1):
            grads[f"gamma{i}"] = bn.dgamma
            grads[f"beta{i}"] = bn.dbeta
        return loss + self.weight_decay_loss(), grads

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """The gradient of :meth:`loss` (in training mode) for every parameter."""
        return self.loss_and_gradient(x, t)[1]

    def state(self) -> dict[str, np.ndarray]:
        """Parameters plus BatchNorm running statistics: everything ``predict`` depends on."""
        state = dict(self.params)
        for i, bn in enumerate(self._batchnorms, start=1):
            state[f"running_mean{i}"] = bn.running_mean
            state[f"running_var{i}"] = bn.running_var
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays saved by :meth:`state` into this network, in place.

        Raises:
            ValueError: If a key is missing or unexpected, or a shape differs.
        """
        own = self.state()
        if set(state) != set(own):
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(
                f"State keys must match the network's, but got {missing=}, {unexpected=}."
            )
        for key, target in own.items():
            if state[key].shape != target.shape:
                raise ValueError(
                    f"`{key}` must have shape {target.shape}, but got {state[key].shape}."
                )
            target[...] = state[key]
