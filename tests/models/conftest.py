"""Shared helpers of the models tests: numerical gradients and frozen dropout masks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from models import Dropout, MultiLayerNet


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of ``f()`` with respect to every entry of ``x``, perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        original = x[i]
        x[i] = original + h
        f_plus = f()
        x[i] = original - h
        f_minus = f()
        x[i] = original
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``|a - n| / (|a| + |n|)`` over the whole array (0 when both are 0)."""
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / scale) if scale else 0.0


class FixedRandom:
    """Stands in for a Generator in Dropout: ``random(shape)`` returns the same array each call."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng(self.seed).random(shape)


def freeze_dropout_masks(net: MultiLayerNet) -> int:
    """Make every Dropout layer of ``net`` draw the same mask on every forward pass.

    Returns:
        The number of Dropout layers frozen.
    """
    dropouts = [layer for layer in net.layers if isinstance(layer, Dropout)]
    for seed, layer in enumerate(dropouts):
        layer.rng = FixedRandom(seed)
    return len(dropouts)


@pytest.fixture
def num_grad() -> Callable[..., np.ndarray]:
    return numerical_gradient


@pytest.fixture
def rel_error() -> Callable[[np.ndarray, np.ndarray], float]:
    return relative_error


@pytest.fixture
def fixed_random() -> type[FixedRandom]:
    return FixedRandom


@pytest.fixture
def freeze_dropout() -> Callable[[MultiLayerNet], int]:
    return freeze_dropout_masks


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)
