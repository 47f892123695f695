"""The book's optimizers (ch. 6.1), each with ``update(params, grads)`` that works in place.

Defaults and update rules follow the book; per-parameter state (velocities, squared-gradient sums,
moments) is created on the first update, keyed like ``params``.
"""

from __future__ import annotations

import numpy as np


class Optimizer:
    """Base class: validates the learning rate and holds per-parameter state."""

    def __init__(self, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"`lr > 0` must hold, but got {lr=}.")
        self.lr = float(lr)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every array in ``params`` in place from the matching array in ``grads``."""
        raise NotImplementedError

    @staticmethod
    def _zeros(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: np.zeros_like(value) for key, value in params.items()}


def _check_unit(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`0 <= {name} < 1` must hold, but got {name}={value}.")
    return float(value)


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        lr = self.lr
        for key, grad in grads.items():
            params[key] -= lr * grad


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * dW``; ``W += v``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _check_unit("momentum", momentum)
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.v is None:
            self.v = self._zeros(params)
        for key, grad in grads.items():
            v = self.v[key]
            v *= self.momentum
            v -= self.lr * grad
            params[key] += v


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's form (after Bengio et al., 2012).

    ``v = momentum * v - lr * dW``; ``W += momentum**2 * v - (1 + momentum) * lr * dW``, with the
    velocity of this step (already updated), as the book's ``common/optimizer.py`` does.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _check_unit("momentum", momentum)
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.v is None:
            self.v = self._zeros(params)
        m = self.momentum
        for key, grad in grads.items():
            v = self.v[key]
            v *= m
            v -= self.lr * grad
            params[key] += m * m * v
            params[key] -= (1 + m) * self.lr * grad


class AdaGrad(Optimizer):
    """AdaGrad: ``h += dW**2``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)
        self.h: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.h is None:
            self.h = self._zeros(params)
        for key, grad in grads.items():
            h = self.h[key]
            h += grad * grad
            params[key] -= self.lr * grad / (np.sqrt(h) + 1e-7)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay * h + (1 - decay) * dW**2``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = _check_unit("decay_rate", decay_rate)
        self.h: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.h is None:
            self.h = self._zeros(params)
        for key, grad in grads.items():
            h = self.h[key]
            h *= self.decay_rate
            h += (1 - self.decay_rate) * grad * grad
            params[key] -= self.lr * grad / (np.sqrt(h) + 1e-7)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as the book writes it: the bias correction folded into the step
    size, and 1e-7 added to the uncorrected ``sqrt(v)``."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1 = _check_unit("beta1", beta1)
        self.beta2 = _check_unit("beta2", beta2)
        self.iter = 0
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.m is None:
            self.m = self._zeros(params)
            self.v = self._zeros(params)
        self.iter += 1
        # A Python float, so that float32 parameters stay float32 (NEP 50).
        lr_t = self.lr * (1.0 - self.beta2**self.iter) ** 0.5 / (1.0 - self.beta1**self.iter)
        for key, grad in grads.items():
            m, v = self.m[key], self.v[key]
            m += (1 - self.beta1) * (grad - m)
            v += (1 - self.beta2) * (grad * grad - v)
            params[key] -= lr_t * m / (np.sqrt(v) + 1e-7)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get_optimizer(name: str, **kwargs: float) -> Optimizer:
    """The optimizer called ``name`` (case-insensitive), built with ``kwargs``.

    Raises:
        ValueError: If the name is unknown; the message lists the known names.
    """
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"`name` must be one of {sorted(OPTIMIZERS)}, but got {name=}.")
    return cls(**kwargs)
