"""Every layer against independent computations: numerical gradients and the book's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from models import (
    Affine,
    BatchNormalization,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)

TOLERANCE = 1e-6


def weighted_sum(layer, x, weights, **kwargs):
    """A scalar whose gradient with respect to the layer's output is ``weights``."""
    return lambda: float((layer.forward(x, **kwargs) * weights).sum())


def away_from_zero(rng, shape):
    """Inputs at least 0.1 from ReLU's kink, so that central differences never straddle it."""
    x = rng.uniform(0.1, 2.0, shape)
    return x * rng.choice([-1.0, 1.0], shape)


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("needs_dx", [True, False])
def test_affine_gradients_match_central_differences(rng, num_grad, rel_error, needs_dx):
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer = Affine(W, b, needs_dx=needs_dx)
    f = weighted_sum(layer, x, dout)

    layer.forward(x)
    dx = layer.backward(dout)

    assert rel_error(layer.dW, num_grad(f, W)) < TOLERANCE
    assert rel_error(layer.db, num_grad(f, b)) < TOLERANCE
    if needs_dx:
        assert rel_error(dx, num_grad(f, x)) < TOLERANCE
    else:
        assert dx is None


def test_affine_forward_is_x_times_w_plus_b(rng):
    W, b, x = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((5, 4))
    expected = [
        [sum(x[n, i] * W[i, j] for i in range(4)) + b[j] for j in range(3)] for n in range(5)
    ]
    np.testing.assert_allclose(Affine(W, b).forward(x), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("layer_class", "reference"),
    [
        (Relu, lambda x: np.where(x > 0, x, 0.0)),
        (Sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
        (Tanh, lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))),
    ],
)
def test_activation_matches_its_formula_and_central_differences(
    rng, num_grad, rel_error, layer_class, reference
):
    x, dout = away_from_zero(rng, (6, 5)), rng.standard_normal((6, 5))
    layer = layer_class()

    out = layer.forward(x)
    dx = layer.backward(dout)

    np.testing.assert_allclose(out, reference(x), rtol=1e-12, atol=1e-15)
    assert rel_error(dx, num_grad(weighted_sum(layer_class(), x, dout), x)) < TOLERANCE


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_in_evaluation_mode_gives_the_training_output_without_a_mask(rng, dtype):
    x = rng.standard_normal((6, 5)).astype(dtype)
    layer = Relu()

    out = layer.forward(x, training=False)

    assert layer.mask is None and out.dtype == dtype
    np.testing.assert_array_equal(out, Relu().forward(x))


def test_sigmoid_stays_finite_for_huge_inputs():
    out = Sigmoid().forward(np.array([[-1e4, 0.0, 1e4]]))
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_softmax_with_loss_gradient_matches_central_differences(rng, num_grad, rel_error, target):
    x, labels = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    t = labels if target == "labels" else np.eye(4)[labels]
    layer = SoftmaxWithLoss()

    layer.forward(x, t)
    dx = layer.backward()

    assert rel_error(dx, num_grad(lambda: SoftmaxWithLoss().forward(x, t), x)) < TOLERANCE


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_softmax_with_loss_is_mean_cross_entropy(rng, target):
    x, labels = 10 * rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    t = labels if target == "labels" else np.eye(4)[labels]
    softmax = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    expected = np.mean([-np.log(softmax[n, labels[n]]) for n in range(7)])

    layer = SoftmaxWithLoss()

    assert layer.forward(x, t) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(layer.y, softmax, rtol=1e-12)
    np.testing.assert_allclose(layer.backward(2.0), 2.0 * (softmax - np.eye(4)[labels]) / 7)


def test_softmax_with_loss_stays_finite_for_huge_scores():
    loss = SoftmaxWithLoss().forward(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    assert loss == pytest.approx(500.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_softmax_with_loss_of_a_non_finite_score_is_not_finite(bad):
    # The Trainer detects divergence from this loss, so NaN and inf must never be hidden.
    x = np.array([[1.0, 2.0, 3.0], [0.5, bad, 0.0]])
    for t in (np.array([2, 1]), np.eye(3)[[2, 1]]):  # the bad score is a target's
        assert not np.isfinite(SoftmaxWithLoss().forward(x, t))


def test_batchnorm_gradients_in_training_mode_match_central_differences(rng, num_grad, rel_error):
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.standard_normal(4)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    layer = BatchNormalization(gamma, beta)
    f = weighted_sum(layer, x, dout, training=True)

    layer.forward(x, training=True)
    dx = layer.backward(dout)

    assert rel_error(dx, num_grad(f, x)) < TOLERANCE
    assert rel_error(layer.dgamma, num_grad(f, gamma)) < TOLERANCE
    assert rel_error(layer.dbeta, num_grad(f, beta)) < TOLERANCE


def test_dropout_gradient_with_a_fixed_mask_matches_central_differences(
    rng, num_grad, rel_error, fixed_random
):
    x, dout = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    layer = Dropout(0.4, rng=fixed_random(3))
    f = weighted_sum(layer, x, dout, training=True)

    layer.forward(x, training=True)
    dx = layer.backward(dout)

    assert rel_error(dx, num_grad(f, x)) < TOLERANCE
    assert 0 < layer.mask.sum() < layer.mask.size  # the check saw both kept and dropped units


# --- BatchNormalization: modes and running statistics ------------------------------------------


def test_batchnorm_has_the_books_constants():
    layer = BatchNormalization(np.ones(3), np.zeros(3))
    assert (layer.momentum, layer.eps) == (0.9, 1e-6)


def test_batchnorm_training_normalises_with_the_biased_batch_variance(rng):
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.standard_normal(4)
    x = 3.0 + 2.0 * rng.standard_normal((8, 4))
    mean = x.sum(axis=0) / 8
    var = ((x - mean) ** 2).sum(axis=0) / 8  # divided by n, not n - 1

    out = BatchNormalization(gamma, beta).forward(x, training=True)

    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-6) + beta, rtol=1e-12)


def test_batchnorm_running_statistics_follow_momentum_point_nine(rng):
    layer = BatchNormalization(np.ones(3), np.zeros(3))
    x1, x2 = rng.standard_normal((5, 3)), 4.0 + rng.standard_normal((5, 3))

    layer.forward(x1, training=True)
    layer.forward(x2, training=True)

    expected_mean = 0.9 * (0.9 * 0.0 + 0.1 * x1.mean(axis=0)) + 0.1 * x2.mean(axis=0)
    expected_var = 0.9 * (0.9 * 0.0 + 0.1 * x1.var(axis=0)) + 0.1 * x2.var(axis=0)
    np.testing.assert_allclose(layer.running_mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, expected_var, rtol=1e-12)


def test_batchnorm_evaluation_uses_running_statistics_and_leaves_them_alone(rng):
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    layer = BatchNormalization(gamma, beta)
    layer.forward(rng.standard_normal((5, 3)), training=True)
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    x = rng.standard_normal((4, 3))

    out = layer.forward(x, training=False)

    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-6) + beta, rtol=1e-12)
    np.testing.assert_array_equal(layer.running_mean, mean)
    np.testing.assert_array_equal(layer.running_var, var)


# --- Dropout: the book's non-inverted form -----------------------------------------------------


def test_dropout_evaluation_multiplies_by_the_keep_probability(rng):
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(Dropout(0.3).forward(x, training=False), x * 0.7)


def test_dropout_training_keeps_units_whose_uniform_draw_exceeds_the_ratio(rng):
    x, dout = rng.standard_normal((50, 40)), rng.standard_normal((50, 40))
    layer = Dropout(0.3, rng=np.random.default_rng(5))
    keep = np.random.default_rng(5).random((50, 40)) > 0.3

    out = layer.forward(x, training=True)

    np.testing.assert_array_equal(out, np.where(keep, x, 0.0))  # not scaled by 1 / 0.7
    np.testing.assert_array_equal(layer.backward(dout), np.where(keep, dout, 0.0))
    assert keep.mean() == pytest.approx(0.7, abs=0.03)


def test_dropout_draws_a_new_mask_on_every_training_forward(rng):
    layer, x = Dropout(0.5, rng=np.random.default_rng(0)), np.ones((10, 10))
    assert not np.array_equal(layer.forward(x), layer.forward(x))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_dropout_rejects_a_ratio_outside_zero_to_one(ratio):
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(ratio)


# --- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: Affine(np.ones((5, 5), np.float32), np.zeros(5, np.float32)),
        Relu,
        Sigmoid,
        Tanh,
        lambda: BatchNormalization(np.ones(5, np.float32), np.zeros(5, np.float32)),
        lambda: Dropout(0.5, rng=np.random.default_rng(0)),
    ],
    ids=["affine", "relu", "sigmoid", "tanh", "batchnorm", "dropout"],
)
def test_layers_keep_float32_in_float32(rng, make_layer):
    layer, x = make_layer(), rng.standard_normal((4, 5)).astype(np.float32)
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    assert out.dtype == np.float32
    assert dx is None or dx.dtype == np.float32


def test_softmax_with_loss_keeps_float32_gradients(rng):
    layer = SoftmaxWithLoss()
    layer.forward(rng.standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 2, 0]))
    assert layer.backward().dtype == np.float32
