"""The book's layers (ch. 5-6): small classes with ``forward(x)`` and ``backward(dout)``.

Each layer keeps what its backward pass needs from the last forward pass. Parameters live in the
network's ``params`` dict; a layer holds references to those arrays, so an optimizer that updates
``params`` in place updates the layer too.
"""

from __future__ import annotations

import functools

import numpy as np


class Affine:
    """``out = x @ W + b``.

    Args:
        W: Weight matrix of shape (n_in, n_out), shared with the network's ``params``.
        b: Bias of shape (n_out,), shared with the network's ``params``.
        needs_dx: Whether ``backward`` returns the gradient for ``x``. The first layer's input is
            the data, whose gradient nobody uses; skipping it saves the largest product of a step.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, *, needs_dx: bool = True) -> None:
        self.W = W
        self.b = b
        self.needs_dx = needs_dx
        self.x: np.ndarray | None = None
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out = x @ self.W
        out += self.b
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        self.dW = self.x.T @ dout
        self.db = _column_sums(dout)
        if not self.needs_dx:
            return None
        return dout @ self.W.T


class Relu:
    def __init__(self) -> None:
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            # No backward pass follows, so no mask: one pass over x instead of three. Equal to
            # x * mask but for the sign of zeros (-0.0 * 0 is -0.0), which the next Affine's
            # bias addition drops, and for -inf, which the book's ReLU also maps to 0.
            return np.maximum(x, 0)
        # A mask of 0.0 / 1.0 in x's dtype: multiplying by it takes half the time of multiplying
        # by a boolean mask, which NumPy converts on every use.
        self.mask = (x > 0).astype(x.dtype)
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask


class Sigmoid:
    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        # 1 / (1 + exp(-x)) overflows for very negative x; 0.5 * (1 + tanh(x / 2)) is the same
        # function and stays finite everywhere.
        self.out = 0.5 * (1.0 + np.tanh(0.5 * x))
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1.0 - self.out) * self.out


class Tanh:
    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1.0 - self.out**2)


@functools.lru_cache(maxsize=32)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones, made once per size: building it took half as long as
    the product it feeds."""
    ones = np.ones(n, dtype=dtype)
    ones.flags.writeable = False
    return ones


@functools.lru_cache(maxsize=32)
def _arange(n: int) -> np.ndarray:
    """A read-only ``np.arange(n)``, made once per size (the rows of every batch)."""
    rows = np.arange(n)
    rows.flags.writeable = False
    return rows


def _column_sums(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=0)`` as a BLAS vector-matrix product, 2-3x faster on a (100, 100) batch."""
    return _ones(len(x), x.dtype) @ x


def _row_maxima(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=1, keepdims=True)``. NumPy reduces a short last axis (the 10 classes) row by
    row, which takes several times longer than finding each row's argmax and picking it."""
    return x[_arange(len(x)), x.argmax(axis=1)][:, np.newaxis]


def _row_sums(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=1, keepdims=True)`` as a BLAS matrix-vector product, for the same reason."""
    return (x @ _ones(x.shape[1], x.dtype))[:, np.newaxis]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, shifted by the row maximum so that exp never overflows."""
    shifted = x - _row_maxima(x)
    shifted -= np.log(_row_sums(np.exp(shifted)))
    return shifted


def cross_entropy(scores: np.ndarray, t: np.ndarray) -> float:
    """Mean softmax cross-entropy of ``scores`` against integer labels or one-hot rows.

    The book adds 1e-7 inside the log; log-softmax gives the exact value without it.
    """
    return _mean_nll(log_softmax(scores), t)


def _mean_nll(logp: np.ndarray, t: np.ndarray) -> float:
    n = len(logp)
    if t.ndim == 2:
        return float(-(logp * t).sum() / n)
    return float(-logp[_arange(n), t].sum() / n)


class SoftmaxWithLoss:
    """Softmax followed by mean cross-entropy; ``t`` is integer labels or one-hot rows."""

    def __init__(self) -> None:
        self.y: np.ndarray | None = None
        self.t: np.ndarray | None = None
        self.loss: float | None = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        logp = log_softmax(x)
        self.y = np.exp(logp)
        self.t = t
        self.loss = _mean_nll(logp, t)
        return self.loss

    def backward(self, dout: float = 1.0) -> np.ndarray:
        n = len(self.y)
        dx = self.y.copy()
        if self.t.ndim == 2:
            dx -= self.t
        else:
            dx[_arange(n), self.t] -= 1.0
        dx *= dout / n
        return dx


class BatchNormalization:
    """Batch normalisation (Ioffe & Szegedy, 2015) with the book's constants.

    Statistics are per feature; training uses the biased batch variance and updates running
    statistics with ``momentum``; evaluation uses the running statistics.

    Args:
        gamma: Scale of shape (n,), shared with the network's ``params``.
        beta: Shift of shape (n,), shared with the network's ``params``.
        momentum: Weight of the old running statistics (the book's 0.9).
        eps: Added to the variance (the book writes ``10e-7``, i.e. 1e-6).
    """

    def __init__(
        self, gamma: np.ndarray, beta: np.ndarray, momentum: float = 0.9, eps: float = 1e-6
    ) -> None:
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.eps = eps
        self.running_mean = np.zeros_like(gamma)
        self.running_var = np.zeros_like(gamma)
        self.xn: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
            return self.gamma * xn + self.beta
        mu = x.mean(axis=0)
        xc = x - mu
        var = (xc**2).mean(axis=0)
        self.std = np.sqrt(var + self.eps)
        self.xn = xc / self.std
        self.running_mean *= self.momentum
        self.running_mean += (1 - self.momentum) * mu
        self.running_var *= self.momentum
        self.running_var += (1 - self.momentum) * var
        return self.gamma * self.xn + self.beta

    def backward(self, dout: np.ndarray) -> np.ndarray:
        # The compact form of the book's step-by-step backward pass through mean and variance.
        self.dbeta = dout.sum(axis=0)
        self.dgamma = (self.xn * dout).sum(axis=0)
        dxn = dout * self.gamma
        n = len(dout)
        return (dxn - dxn.sum(axis=0) / n - self.xn * (dxn * self.xn).sum(axis=0) / n) / self.std


class Dropout:
    """Dropout (Srivastava et al., 2014) as the book writes it, not inverted.

    Training multiplies by a random keep-mask; evaluation multiplies by ``1 - dropout_ratio``.

    Args:
        dropout_ratio: Probability that a unit is dropped, in [0, 1).
        rng: Generator that draws the masks.
    """

    def __init__(self, dropout_ratio: float = 0.5, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"`0 <= dropout_ratio < 1` must hold, but got {dropout_ratio=}.")
        self.dropout_ratio = dropout_ratio
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            return x * (1.0 - self.dropout_ratio)
        # In x's dtype, as in Relu: multiplying by a boolean mask is twice as slow.
        self.mask = (self.rng.random(x.shape) > self.dropout_ratio).astype(x.dtype)
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask
