"""The training step and evaluation of a plain ReLU network in compiled loops, bit for bit.

:class:`Step` and :func:`evaluate` compute what ``MultiLayerNet.loss_and_gradient`` with
``optimizer.update``, and ``MultiLayerNet.evaluate``, compute, the same bits, with the
memory-bound passes between the matrix products done in one loop each (:mod:`models.kernels`)
instead of NumPy's several passes and temporaries: on 48,000 Fashion-MNIST images that is most
of what an epoch spends outside its matrix products (``benchmarks/bench_scale.py``). They take
a MultiLayerNet itself (not a subclass) of ReLU layers without BatchNorm or Dropout, and integer
labels; ``Trainer(compiled=...)`` checks that. Importing this module imports numba (about
0.2 s); ``Trainer`` does so only for runs long enough to gain from it.
"""

from __future__ import annotations

import math

import numpy as np

from models import kernels
from models.layers import _column_sums, _ones, cross_entropy
from models.network import EVAL_BATCH, MultiLayerNet
from models.optimizers import SGD, Optimizer
from models.shared import ScaledRows


class Step:
    """One training step: ``loss = step(x_train, idx, t)`` takes the rows ``idx`` of
    ``x_train`` (an array or :class:`models.shared.ScaledRows`), with their labels ``t``,
    through the forward pass, and unless the loss is not finite (``Trainer`` then stops, and the
    layers' path leaves the parameters as they were, too) through the backward pass and the
    optimizer's update. :attr:`probabilities` holds the softmax output of the forward pass.

    Args:
        network: A network of the kind above; its ``params`` are updated in place.
        optimizer: Any optimizer; SGD's update is one loop per layer, the others get the
            gradient dict that ``loss_and_gradient`` returns.
    """

    def __init__(self, network: MultiLayerNet, optimizer: Optimizer) -> None:
        self.network = network
        self.optimizer = optimizer
        self.probabilities: np.ndarray | None = None
        self._staging = np.empty((0, 0), np.uint8)

    def __call__(self, x_train: np.ndarray | ScaledRows, idx: np.ndarray, t: np.ndarray) -> float:
        net = self.network
        x = _rows(x_train, idx, net.dtype, self._staging_for(len(idx), x_train.shape[1]))
        inputs = []
        for affine in net._affines[:-1]:
            inputs.append(x)
            x = x @ affine.W
            kernels.bias_relu(x, affine.b)
        inputs.append(x)
        last = net._affines[-1]

        # SoftmaxWithLoss: log-softmax, its exp, the mean negative log-likelihood.
        n = len(x)
        logp = np.empty((n, net.output_size), net.dtype)
        kernels.shift_rows(x @ last.W, last.b, logp)
        kernels.subtract_rows(logp, np.log(np.exp(logp) @ _ones(net.output_size, net.dtype)))
        y = np.exp(logp)
        dout = np.empty_like(y)
        picked = np.empty(n, net.dtype)
        kernels.softmax_grad(y, logp, t, net.dtype.type(1.0 / n), dout, picked)
        self.probabilities = y
        loss = float(-picked.sum() / n) + net.weight_decay_loss()
        if not math.isfinite(loss):
            return loss

        lam = net.dtype.type(net.weight_decay_lambda)
        sgd = type(self.optimizer) is SGD
        lr = net.dtype.type(self.optimizer.lr)
        grads: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(len(net._affines), 0, -1):
            affine, x = net._affines[i - 1], inputs[i - 1]
            grad_w = x.T @ dout
            grad_b = _column_sums(dout)
            if i > 1:
                dout = dout @ affine.W.T
                kernels.relu_grad(dout, x)
            if lam:
                kernels.add_decay(grad_w, affine.W, lam)
            if sgd:  # the layer's gradient is complete and no longer needs its weights
                kernels.sgd(affine.W, grad_w, affine.b, grad_b, lr)
            else:
                grads.append((grad_w, grad_b))
        if not sgd:
            named = {}
            for i, (grad_w, grad_b) in enumerate(reversed(grads), start=1):
                named[f"W{i}"], named[f"b{i}"] = grad_w, grad_b
            self.optimizer.update(net.params, named)
        return loss

    def _staging_for(self, n: int, d: int) -> np.ndarray:
        if len(self._staging) < n or self._staging.shape[1:] != (d,):
            self._staging = np.empty((n, d), np.uint8)
        return self._staging[:n]


def evaluate(
    network: MultiLayerNet, x: np.ndarray | ScaledRows, t: np.ndarray
) -> tuple[float, float]:
    """``network.evaluate(x, t)``: loss and accuracy, :data:`EVAL_BATCH` rows per pass."""
    n = len(x)
    staging = np.empty((min(n, EVAL_BATCH), x.shape[1]), np.uint8)
    scores = []
    for start in range(0, n, EVAL_BATCH):
        if isinstance(x, ScaledRows):
            rows = x.index[start : start + EVAL_BATCH]
            h = np.empty((len(rows), x.shape[1]), network.dtype)
            kernels.scale_rows(x.images, rows, staging[: len(rows)], h)
        else:
            h = x[start : start + EVAL_BATCH]
        for affine in network._affines[:-1]:
            h = h @ affine.W
            kernels.bias_relu_eval(h, affine.b)
        last = network._affines[-1]
        h = h @ last.W
        h += last.b
        scores.append(h)
    scores = scores[0] if len(scores) == 1 else np.concatenate(scores)
    accuracy = float((scores.argmax(axis=1) == t).mean())
    return cross_entropy(scores, t) + network.weight_decay_loss(), accuracy


def _rows(x: np.ndarray | ScaledRows, idx: np.ndarray, dtype, staging: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``x`` as a new float array, as ``x.take(idx, axis=0)`` gives them."""
    if not isinstance(x, ScaledRows):
        return x.take(idx, axis=0)
    out = np.empty((len(idx), x.shape[1]), dtype)
    kernels.scale_rows(x.images, x.index.take(idx), staging, out)
    return out


def load(dtype) -> None:
    """Compile, or load from numba's cache, every loop that training and evaluation in ``dtype``
    call, now: a process that is about to fork workers does this once, and they share it
    (numba's compiler and code are about 50 MB of each process's own memory otherwise)."""
    images = np.zeros((2, 784), np.uint8)
    images.flags.writeable = False  # as the memory-mapped data sets are
    x, t = ScaledRows(images), np.zeros(2, np.int64)
    net = MultiLayerNet(784, [2], 2, rng=0, dtype=dtype, weight_decay_lambda=1e-3)
    Step(net, SGD(lr=0.01))(x, np.arange(2), t)
    evaluate(net, x, t)
