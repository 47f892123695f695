"""Each optimizer against its update rule written out independently (the book, ch. 6.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    get_optimizer,
)


def sgd_reference(lr=0.01):
    def step(w, g, t):
        return w - lr * g

    return step


def momentum_reference(lr=0.01, momentum=0.9):
    v = {}

    def step(w, g, t):
        v[t] = momentum * v.get(t, 0.0) - lr * g
        return w + v[t]

    return step


def adagrad_reference(lr=0.01):
    h = {}

    def step(w, g, t):
        h[t] = h.get(t, 0.0) + g**2
        return w - lr * g / (np.sqrt(h[t]) + 1e-7)

    return step


def rmsprop_reference(lr=0.01, decay_rate=0.99):
    h = {}

    def step(w, g, t):
        h[t] = decay_rate * h.get(t, 0.0) + (1 - decay_rate) * g**2
        return w - lr * g / (np.sqrt(h[t]) + 1e-7)

    return step


def adam_reference(lr=0.001, beta1=0.9, beta2=0.999):
    # The book's form: bias correction folded into the step size, 1e-7 added to sqrt(v).
    m, v, count = {}, {}, {}

    def step(w, g, t):
        count[t] = count.get(t, 0) + 1
        m[t] = beta1 * m.get(t, 0.0) + (1 - beta1) * g
        v[t] = beta2 * v.get(t, 0.0) + (1 - beta2) * g**2
        lr_t = lr * math.sqrt(1 - beta2 ** count[t]) / (1 - beta1 ** count[t])
        return w - lr_t * m[t] / (np.sqrt(v[t]) + 1e-7)

    return step


CASES = [
    (SGD, {}, sgd_reference),
    (SGD, {"lr": 0.5}, sgd_reference),
    (Momentum, {}, momentum_reference),
    (Momentum, {"lr": 0.1, "momentum": 0.5}, momentum_reference),
    (AdaGrad, {}, adagrad_reference),
    (AdaGrad, {"lr": 0.3}, adagrad_reference),
    (RMSprop, {}, rmsprop_reference),
    (RMSprop, {"lr": 0.05, "decay_rate": 0.9}, rmsprop_reference),
    (Adam, {}, adam_reference),
    (Adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}, adam_reference),
]


def case_id(case):
    cls, kwargs, _ = case
    return cls.__name__ + ("(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")")


def random_params(rng, dtype=np.float64):
    return {
        "W1": rng.standard_normal((3, 4)).astype(dtype),
        "b1": rng.standard_normal(4).astype(dtype),
        "W2": rng.standard_normal((4, 2)).astype(dtype),
    }


@pytest.mark.parametrize(("cls", "kwargs", "reference"), CASES, ids=map(case_id, CASES))
def test_updates_follow_the_books_rule_over_several_steps(rng, cls, kwargs, reference):
    params = random_params(rng)
    arrays = dict(params)  # the same objects, to check the update is in place
    expected = {key: value.copy() for key, value in params.items()}
    optimizer, rule = cls(**kwargs), reference(**kwargs)

    for _ in range(4):
        grads = {key: rng.standard_normal(value.shape) for key, value in params.items()}
        given = {key: g.copy() for key, g in grads.items()}
        optimizer.update(params, grads)
        expected = {key: rule(expected[key], grads[key], key) for key in expected}

        for key in params:
            assert params[key] is arrays[key], key
            np.testing.assert_allclose(params[key], expected[key], rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(grads[key], given[key])  # gradients left untouched


@pytest.mark.parametrize(("lr", "momentum"), [(0.01, 0.9), (0.1, 0.7)])
def test_nesterov_matches_the_books_code_line_by_line_over_five_steps(rng, lr, momentum):
    # The book's common/optimizer.py, Nesterov.update, on plain arrays. The parameters move with
    # the velocity after this step's update; using the one before differs by 0.02 after 5 steps.
    params = random_params(rng)
    w = {key: value.copy() for key, value in params.items()}
    v = {key: np.zeros_like(value) for key, value in params.items()}
    optimizer = Nesterov(lr=lr, momentum=momentum)

    for _ in range(5):
        grads = {key: rng.standard_normal(value.shape) for key, value in params.items()}
        optimizer.update(params, grads)
        for key in w.keys():
            v[key] *= momentum
            v[key] -= lr * grads[key]
            w[key] += momentum * momentum * v[key]
            w[key] -= (1 + momentum) * lr * grads[key]

        for key in w:
            np.testing.assert_allclose(params[key], w[key], rtol=1e-12, atol=1e-15)


def test_nesterov_takes_the_steps_worked_out_by_hand():
    # w = 1, dW = 1 every step, lr = 0.1, momentum = 0.5:
    # step 1: v = -0.1,  w = 1 + 0.25 * -0.1 - 1.5 * 0.1 = 0.825
    # step 2: v = -0.15, w = 0.825 + 0.25 * -0.15 - 0.15 = 0.6375
    # (with the velocity before the update, step 1 would give 0.85).
    params = {"W": np.array([1.0])}
    optimizer = Nesterov(lr=0.1, momentum=0.5)
    seen = []
    for _ in range(2):
        optimizer.update(params, {"W": np.array([1.0])})
        seen.append(float(params["W"][0]))
    assert seen == pytest.approx([0.825, 0.6375], abs=1e-15)


def test_updates_touch_only_the_keys_in_grads(rng):
    params = random_params(rng)
    frozen = params["W2"].copy()
    optimizer = Adam()
    for _ in range(2):
        optimizer.update(params, {"W1": np.ones((3, 4)), "b1": np.ones(4)})
    np.testing.assert_array_equal(params["W2"], frozen)


@pytest.mark.parametrize(
    ("cls", "defaults"),
    [
        (SGD, {"lr": 0.01}),
        (Momentum, {"lr": 0.01, "momentum": 0.9}),
        (Nesterov, {"lr": 0.01, "momentum": 0.9}),
        (AdaGrad, {"lr": 0.01}),
        (RMSprop, {"lr": 0.01, "decay_rate": 0.99}),
        (Adam, {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}),
    ],
)
def test_defaults_are_the_books(cls, defaults):
    optimizer = cls()
    assert {name: getattr(optimizer, name) for name in defaults} == defaults


@pytest.mark.parametrize("cls", [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam])
def test_float32_parameters_stay_float32(rng, cls):
    params = random_params(rng, np.float32)
    optimizer = cls()
    for _ in range(3):
        grads = {key: rng.standard_normal(v.shape).astype(np.float32) for key, v in params.items()}
        optimizer.update(params, grads)
    assert all(value.dtype == np.float32 for value in params.values())
    state = [getattr(optimizer, name, None) for name in ("v", "h", "m")]
    for arrays in filter(None, state):
        assert all(value.dtype == np.float32 for value in arrays.values())


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", SGD),
        ("SGD", SGD),
        ("Momentum", Momentum),
        ("nesterov", Nesterov),
        ("AdaGrad", AdaGrad),
        ("RMSPROP", RMSprop),
        ("adam", Adam),
    ],
)
def test_get_optimizer_finds_each_name_case_insensitively(name, cls):
    assert type(get_optimizer(name)) is cls


def test_get_optimizer_passes_keyword_arguments_on():
    optimizer = get_optimizer("Adam", lr=0.1, beta1=0.5)
    assert (optimizer.lr, optimizer.beta1, optimizer.beta2) == (0.1, 0.5, 0.999)


def test_an_unknown_optimizer_name_is_a_value_error_listing_the_known_names():
    with pytest.raises(ValueError, match="adamw") as error:
        get_optimizer("adamw")
    assert all(name in str(error.value) for name in OPTIMIZERS)
    assert sorted(OPTIMIZERS) == ["adagrad", "adam", "momentum", "nesterov", "rmsprop", "sgd"]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (SGD, {"lr": 0.0}, "lr"),
        (Adam, {"lr": -1e-3}, "lr"),
        (Momentum, {"momentum": 1.0}, "momentum"),
        (Nesterov, {"momentum": -0.1}, "momentum"),
        (RMSprop, {"decay_rate": 1.5}, "decay_rate"),
        (Adam, {"beta1": 1.0}, "beta1"),
        (Adam, {"beta2": -0.5}, "beta2"),
    ],
)
def test_out_of_range_hyperparameters_are_value_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
