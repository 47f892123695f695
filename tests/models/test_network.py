"""MultiLayerNet against independent computations: numerical gradients, a hand-written forward
pass and loss, weight-init statistics, and the numpy-only import contract."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models
from models import MultiLayerNet, init_std
from models.layers import cross_entropy

TOLERANCE = 1e-6
REPO_ROOT = Path(__file__).resolve().parents[2]


def sample(rng, n=7, n_in=6, n_classes=3):
    return rng.standard_normal((n, n_in)), rng.integers(0, n_classes, n)


def perturb_non_weights(net, rng):
    """Give biases, gamma and beta values away from their 0 / 1 initialisation."""
    for key, value in net.params.items():
        if not key.startswith("W"):
            value += 0.3 * rng.standard_normal(value.shape)


# --- gradients of whole networks ---------------------------------------------------------------

GRADIENT_CASES = {
    "relu, He init": {},
    "sigmoid, Xavier init": {"activation": "sigmoid", "weight_init_std": "xavier"},
    "tanh, std 0.5": {"activation": "tanh", "weight_init_std": 0.5},
    "relu with batchnorm": {"use_batchnorm": True},
    "relu with dropout": {"use_dropout": True, "dropout_ratio": 0.3},
    "relu with weight decay": {"weight_decay_lambda": 0.1},
    "tanh with batchnorm, dropout and weight decay": {
        "activation": "tanh",
        "use_batchnorm": True,
        "use_dropout": True,
        "weight_decay_lambda": 0.05,
    },
}


@pytest.mark.parametrize("target", ["labels", "one-hot"])
@pytest.mark.parametrize("kwargs", GRADIENT_CASES.values(), ids=GRADIENT_CASES.keys())
def test_network_gradient_matches_central_differences_for_every_parameter(
    rng, num_grad, rel_error, freeze_dropout, kwargs, target
):
    net = MultiLayerNet(6, [5, 4], 3, rng=rng, **kwargs)
    perturb_non_weights(net, rng)
    n_dropout = freeze_dropout(net)
    x, labels = sample(rng)
    t = labels if target == "labels" else np.eye(3)[labels]

    grads = net.gradient(x, t)

    assert set(grads) == set(net.params)
    assert n_dropout == (2 if kwargs.get("use_dropout") else 0)
    for key, param in net.params.items():
        numeric = num_grad(lambda: net.loss(x, t, training=True), param)
        if net.use_batchnorm and key in ("b1", "b2"):
            # BatchNorm subtracts the batch mean, so a bias just before it has no effect.
            np.testing.assert_allclose(grads[key], 0.0, atol=1e-12, err_msg=key)
            np.testing.assert_allclose(numeric, 0.0, atol=1e-9, err_msg=key)
        else:
            assert rel_error(grads[key], numeric) < TOLERANCE, key


def test_gradients_have_the_shape_and_dtype_of_their_parameters(rng):
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, rng=rng, dtype=np.float32)
    grads = net.gradient(*sample(rng))
    for key, param in net.params.items():
        assert (grads[key].shape, grads[key].dtype) == (param.shape, param.dtype), key


def test_loss_and_gradient_returns_the_training_mode_loss(rng):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, weight_decay_lambda=0.1, rng=rng)
    x, t = sample(rng)
    loss, _ = net.loss_and_gradient(x, t)
    assert loss == pytest.approx(net.loss(x, t, training=True), rel=1e-12)


# --- the loss contract -------------------------------------------------------------------------


def reference_scores(net, x):
    """The forward pass written out: affine -> activation for hidden layers, affine at the end."""
    activations = {
        "relu": lambda a: np.maximum(a, 0.0),
        "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
        "tanh": np.tanh,
    }
    n_layers = len(net.hidden_size_list) + 1
    h = x
    for i in range(1, n_layers + 1):
        h = h @ net.params[f"W{i}"] + net.params[f"b{i}"]
        if i < n_layers:
            h = activations[net.activation](h)
    return h


def mean_cross_entropy(scores, labels):
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.5])
@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_loss_is_mean_cross_entropy_plus_half_lambda_sum_of_squared_weights(
    rng, activation, lam, target
):
    net = MultiLayerNet(6, [5, 4], 3, activation=activation, weight_decay_lambda=lam, rng=rng)
    perturb_non_weights(net, rng)
    x, labels = sample(rng)
    t = labels if target == "labels" else np.eye(3)[labels]
    squared_weights = sum((net.params[f"W{i}"] ** 2).sum() for i in (1, 2, 3))  # output W3 too
    expected = mean_cross_entropy(reference_scores(net, x), labels) + 0.5 * lam * squared_weights

    np.testing.assert_allclose(net.predict(x), reference_scores(net, x), rtol=1e-12)
    assert net.loss(x, t) == pytest.approx(expected, rel=1e-12)
    assert net.evaluate(x, t)[0] == pytest.approx(expected, rel=1e-12)
    assert net.loss_and_gradient(x, t)[0] == pytest.approx(expected, rel=1e-12)


def test_weight_decay_adds_only_the_weight_matrices_not_biases_gamma_or_beta(rng):
    decayed = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, weight_decay_lambda=0.2, rng=rng)
    perturb_non_weights(decayed, rng)  # nonzero biases and beta, gamma != 1
    plain = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True)
    plain.load_state(decayed.state())
    x, t = sample(rng)
    squared_weights = sum(float((w**2).sum()) for k, w in decayed.params.items() if k[0] == "W")

    difference = decayed.loss(x, t) - plain.loss(x, t)

    assert difference == pytest.approx(0.5 * 0.2 * squared_weights, rel=1e-10)


def test_weight_decay_gradient_adds_lambda_times_w_to_weights_only(rng):
    decayed = MultiLayerNet(6, [5], 3, use_batchnorm=True, weight_decay_lambda=0.2, rng=rng)
    perturb_non_weights(decayed, rng)
    plain = MultiLayerNet(6, [5], 3, use_batchnorm=True)
    plain.load_state(decayed.state())
    x, t = sample(rng)

    with_decay, without = decayed.gradient(x, t), plain.gradient(x, t)

    for key, param in decayed.params.items():
        expected = without[key] + 0.2 * param if key[0] == "W" else without[key]
        np.testing.assert_allclose(with_decay[key], expected, rtol=1e-12, err_msg=key)


def test_accuracy_is_the_fraction_of_rows_whose_top_score_is_the_label(rng):
    net = MultiLayerNet(6, [5], 3, rng=rng)
    x, labels = sample(rng, n=50)
    expected = np.mean(reference_scores(net, x).argmax(axis=1) == labels)

    assert net.accuracy(x, labels) == expected
    assert net.accuracy(x, np.eye(3)[labels]) == expected
    assert net.evaluate(x, labels)[1] == expected


# --- weight initialisation ---------------------------------------------------------------------

INIT_CASES = [
    ("relu", np.sqrt(2 / 400), np.sqrt(2 / 1000)),
    ("he", np.sqrt(2 / 400), np.sqrt(2 / 1000)),
    ("He", np.sqrt(2 / 400), np.sqrt(2 / 1000)),
    ("sigmoid", np.sqrt(1 / 400), np.sqrt(1 / 1000)),
    ("xavier", np.sqrt(1 / 400), np.sqrt(1 / 1000)),
    (0.01, 0.01, 0.01),
    (2, 2.0, 2.0),
]


@pytest.mark.parametrize(("weight_init_std", "std1", "std2"), INIT_CASES)
def test_initial_weights_have_the_books_standard_deviation(weight_init_std, std1, std2):
    net = MultiLayerNet(400, [1000], 10, weight_init_std=weight_init_std, rng=0)

    for key, std in (("W1", std1), ("W2", std2)):
        w = net.params[key]
        assert w.std() == pytest.approx(std, rel=0.01), key
        assert abs(w.mean()) < 0.01 * std, key
    assert all(not b.any() for k, b in net.params.items() if k.startswith("b"))


@pytest.mark.parametrize(
    ("weight_init_std", "n_in", "expected"),
    [("relu", 50, np.sqrt(2 / 50)), ("HE", 8, 0.5), ("xavier", 25, 0.2), (0.3, 99, 0.3)],
)
def test_init_std_gives_the_formula_for_each_spelling(weight_init_std, n_in, expected):
    assert init_std(weight_init_std, n_in) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("weight_init_std", ["gaussian", "", 0, -0.1, float("nan")])
def test_a_bad_weight_init_std_is_a_value_error(weight_init_std):
    with pytest.raises(ValueError, match="weight_init_std"):
        MultiLayerNet(4, [3], 2, weight_init_std=weight_init_std)


def test_the_same_seed_gives_the_same_weights_and_another_seed_different_ones():
    a, b, c = (MultiLayerNet(6, [5], 3, rng=seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


# --- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size_list": [5, 0]}, "sizes"),
        ({"input_size": 0}, "sizes"),
        ({"hidden_size_list": [2.5]}, "sizes"),
        ({"activation": "softplus"}, "activation"),
        ({"weight_decay_lambda": -1e-3}, "weight_decay_lambda"),
        ({"dtype": np.float16}, "dtype"),
        ({"dtype": np.int64}, "dtype"),
        ({"use_dropout": True, "dropout_ratio": 1.0}, "dropout_ratio"),
    ],
)
def test_bad_constructor_arguments_are_value_errors(kwargs, message):
    arguments = {"input_size": 4, "hidden_size_list": [3], "output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiLayerNet(**arguments)


def test_params_hold_w_b_per_layer_and_gamma_beta_per_hidden_layer_with_batchnorm():
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True)
    assert sorted(net.params) == sorted(
        ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    )
    assert [net.params[f"W{i}"].shape for i in (1, 2, 3)] == [(6, 5), (5, 4), (4, 3)]


def test_layers_share_their_arrays_with_params_so_in_place_updates_reach_them(rng):
    net = MultiLayerNet(6, [5], 3, rng=rng)
    x = rng.standard_normal((2, 6))
    net.params["b2"] += 1.0
    np.testing.assert_allclose(net.predict(x), reference_scores(net, x))


def test_config_rebuilds_an_identical_architecture():
    net = MultiLayerNet(
        6,
        [5, 4],
        3,
        activation="tanh",
        weight_init_std=0.2,
        weight_decay_lambda=1e-4,
        use_batchnorm=True,
        use_dropout=True,
        dropout_ratio=0.25,
        dtype=np.float32,
    )
    rebuilt = MultiLayerNet(**net.config)
    assert rebuilt.config == net.config
    assert {k: (v.shape, v.dtype) for k, v in rebuilt.params.items()} == {
        k: (v.shape, v.dtype) for k, v in net.params.items()
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computations_stay_in_the_network_dtype_even_for_float64_input(rng, dtype):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, use_dropout=True, rng=rng, dtype=dtype)
    x, t = sample(rng)
    loss, grads = net.loss_and_gradient(x, t)

    assert net.predict(x).dtype == dtype
    assert all(g.dtype == dtype for g in grads.values())
    assert np.isfinite(loss)


def test_dropout_nets_are_random_in_training_and_deterministic_in_evaluation(rng):
    net = MultiLayerNet(6, [50], 3, use_dropout=True, rng=rng)
    x = rng.standard_normal((4, 6))
    assert np.array_equal(net.predict(x), net.predict(x))
    assert not np.array_equal(net.predict(x, training=True), net.predict(x, training=True))


def test_batchnorm_nets_update_running_statistics_only_in_training_mode(rng):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng)
    x, t = sample(rng)
    before = {k: v.copy() for k, v in net.state().items()}

    net.loss(x, t)
    unchanged = {k: v.copy() for k, v in net.state().items()}
    net.loss(x, t, training=True)

    assert all(np.array_equal(before[k], unchanged[k]) for k in before)
    mean = (x @ net.params["W1"] + net.params["b1"]).mean(axis=0)
    np.testing.assert_allclose(net.state()["running_mean1"], 0.1 * mean, rtol=1e-12)


# --- the numpy-only contract -------------------------------------------------------------------


def test_importing_models_pulls_in_no_optuna_sqlalchemy_or_matplotlib():
    submodules = [f"models.{m.name}" for m in pkgutil.iter_modules(models.__path__)]
    code = (
        "import importlib, sys\n"
        f"for name in {submodules!r}: importlib.import_module(name)\n"
        "print(sorted(m.split('.')[0] for m in sys.modules "
        "if m.split('.')[0] in ('optuna', 'sqlalchemy', 'matplotlib')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert "models.layers" in submodules
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("batch_size", [1, 7, 99, 100, 2000, None])
@pytest.mark.parametrize("one_hot", [False, True])
def test_batched_evaluation_equals_one_pass_over_everything(batch_size, one_hot):
    rng = np.random.default_rng(5)
    net = MultiLayerNet(
        784, [30, 20], 10, rng=3, use_batchnorm=True, use_dropout=True, weight_decay_lambda=0.1
    )
    x, t = rng.random((100, 784)), rng.integers(0, 10, 100)
    net.loss_and_gradient(x[:50], t[:50])  # running BatchNorm statistics away from their start
    t = np.eye(10)[t] if one_hot else t
    scores = net.predict(x)
    labels = t.argmax(axis=1) if one_hot else t
    one_pass = (
        cross_entropy(scores, t) + net.weight_decay_loss(),
        float(np.mean(scores.argmax(1) == labels)),
    )
    loss, accuracy = net.evaluate(x, t, batch_size=batch_size)
    # Equal but for the last bits: with one BLAS thread OpenBLAS computes a product of 1 or 7
    # rows in another order than one of 100 (about 2e-15 apart here).
    assert (loss, accuracy) == (pytest.approx(one_pass[0], rel=1e-13, abs=0), one_pass[1])
