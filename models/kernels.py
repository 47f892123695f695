"""The memory-bound passes of a ReLU network's step as compiled loops (numba), one pass each.

In NumPy each of these is two to four passes over the batch (and a temporary array per pass);
here it is one loop over it. Every loop does per element exactly the IEEE operations that the
NumPy code of ``models.layers`` and ``models.optimizers`` does, in the same dtype and order (no
fast-math, so no fused multiply-add), which gives the same bits: a study's trials replay
identically whichever path trained them. Reductions (row and column sums), ``exp`` and ``log``
stay with NumPy and BLAS, whose order and rounding a loop here would not reproduce.

Compiled code is cached next to this file or, where that cannot be written, in numba's cache
folder for the user; without either, each process compiles on first use.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

logger = logging.getLogger(__name__)


def _compiled(function):
    """``function`` compiled without fast-math (IEEE results), its machine code cached."""
    options = {"nogil": True, "error_model": "numpy"}
    try:
        dispatcher = numba.njit(cache=True, **options)(function)
    except RuntimeError as error:  # no folder to cache in: numba says so when decorating
        logger.info("Compiled loops are not cached (%s): each process compiles them.", error)
        return numba.njit(**options)(function)
    dispatcher._cache = _SavingMayFail(dispatcher._cache, function.__name__)
    return dispatcher


class _SavingMayFail:
    """numba's cache of one loop, whose writing may fail (a full disk, a folder turned
    read-only) without failing the call that compiled the loop: numba has added the compiled
    code to the loop before it writes it, so only the next process compiles it again."""

    def __init__(self, cache, name: str) -> None:
        self._cache = cache
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(self._cache, attribute)

    def save_overload(self, signature, data) -> None:
        global _warned
        try:
            self._cache.save_overload(signature, data)
        except OSError as error:
            level = logging.DEBUG if _warned else logging.WARNING
            _warned = True
            logger.log(
                level,
                "Cannot cache the compiled loops (%s, %s): the next process compiles them again.",
                self._name,
                error,
            )


_warned = False  # one warning per process: a full disk fails every loop's writing alike


def scale_rows(images: np.ndarray, rows: np.ndarray, staging: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = images[rows[i]] / 255`` in ``out``'s float dtype: the book's ``x / 255``.

    The uint8 rows are copied to ``staging`` (as many rows as ``out``) first: the loads of rows
    scattered over the data set then overlap, where between divisions they wait in turn.
    float32 is computed as the float64 product with 1/255, rounded to float32: for each of the
    256 bytes that is the correctly rounded ``float32(u) / 255`` (tests check all of them), as
    no u / 255 lies near a float32 rounding boundary and the product misses it by less than a
    float64 unit; and it is several times faster than a float32 division.
    """
    _scale_rows(images, rows, staging, out, out.dtype == np.float32)


@_compiled
def _scale_rows(images, rows, staging, out, by_product):
    for i in range(rows.shape[0]):
        source = images[rows[i]]
        target = staging[i]
        for j in range(source.shape[0]):
            target[j] = source[j]
    if by_product:
        reciprocal = 1.0 / 255.0
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = staging[i, j] * reciprocal
    else:
        divisor = out.dtype.type(255.0)
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = out.dtype.type(staging[i, j]) / divisor


@_compiled
def bias_relu(z, b):
    """In place, ``z = relu(z + b)`` as training computes it: ``(z + b) * mask``, the mask 1.0
    where ``z + b > 0`` and 0.0 elsewhere, so -0.0 for negatives and NaN for NaN or -inf."""
    one, zero = z.dtype.type(1.0), z.dtype.type(0.0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = v * (one if v > zero else zero)


@_compiled
def bias_relu_eval(z, b):
    """In place, ``z = np.maximum(z + b, 0)`` (evaluation's ReLU), but for the sign of zeros,
    which the next layer's bias addition drops."""
    zero = z.dtype.type(0.0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = zero if v <= zero else v


@_compiled
def relu_grad(dout, y):
    """In place, ``dout *= mask`` with ReLU's mask recovered from its output ``y``: ``y > 0``
    exactly where the input was ``> 0``."""
    one, zero = dout.dtype.type(1.0), dout.dtype.type(0.0)
    for i in range(dout.shape[0]):
        for j in range(dout.shape[1]):
            dout[i, j] = dout[i, j] * (one if y[i, j] > zero else zero)


@_compiled
def shift_rows(z, b, out):
    """``out = (z + b) - rowmax(z + b)``, the row maximum as ``models.layers._row_maxima`` picks
    it (``argmax``: the first maximum, the first NaN if there is one)."""
    for i in range(z.shape[0]):
        top = z[i, 0] + b[0]
        if top == top:
            for j in range(1, z.shape[1]):
                v = z[i, j] + b[j]
                if v != v:
                    top = v
                    break
                if v > top:
                    top = v
        for j in range(z.shape[1]):
            out[i, j] = (z[i, j] + b[j]) - top


@_compiled
def subtract_rows(x, c):
    """In place, ``x[i, :] -= c[i]``."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = x[i, j] - c[i]


@_compiled
def softmax_grad(y, logp, t, scale, out, picked):
    """The gradient of the mean cross-entropy, ``out = (y - onehot(t)) * scale``, as
    ``SoftmaxWithLoss.backward`` computes it; and ``picked[i] = logp[i, t[i]]``, whose sum
    NumPy takes for the loss."""
    one = y.dtype.type(1.0)
    for i in range(y.shape[0]):
        label = t[i]
        picked[i] = logp[i, label]
        for j in range(y.shape[1]):
            v = y[i, j]
            if j == label:
                v = v - one
            out[i, j] = v * scale


@_compiled
def add_decay(grad, w, lam):
    """In place, ``grad = grad + lam * w`` (2-D): the weight-decay term of a weight's gradient."""
    for i in range(grad.shape[0]):
        for j in range(grad.shape[1]):
            grad[i, j] = grad[i, j] + lam * w[i, j]


@_compiled
def sgd(w, grad_w, b, grad_b, lr):
    """In place, ``w -= lr * grad_w`` and ``b -= lr * grad_b``: SGD's update of one layer."""
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            w[i, j] = w[i, j] - lr * grad_w[i, j]
    for i in range(b.shape[0]):
        b[i] = b[i] - lr * grad_b[i]
