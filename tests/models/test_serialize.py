"""Saving and loading networks: identical predictions, no pickle, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import SGD, MultiLayerNet, load_network, save_network


def trained(net, rng, steps=5):
    """The network after a few SGD steps in training mode (BatchNorm statistics move too)."""
    optimizer = SGD(lr=0.1)
    for _ in range(steps):
        x, t = rng.standard_normal((8, net.input_size)), rng.integers(0, net.output_size, 8)
        optimizer.update(net.params, net.gradient(x, t))
    return net


ROUNDTRIP_CASES = {
    "plain relu": {},
    "batchnorm": {"use_batchnorm": True},
    "float32 with batchnorm": {"use_batchnorm": True, "dtype": np.float32},
    "everything": {
        "activation": "tanh",
        "weight_init_std": 0.3,
        "weight_decay_lambda": 1e-3,
        "use_batchnorm": True,
        "use_dropout": True,
        "dropout_ratio": 0.2,
    },
}


@pytest.mark.parametrize("kwargs", ROUNDTRIP_CASES.values(), ids=ROUNDTRIP_CASES.keys())
def test_a_loaded_network_predicts_exactly_what_the_saved_one_did(tmp_path, rng, kwargs):
    net = trained(MultiLayerNet(6, [5, 4], 3, rng=rng, **kwargs), rng)
    x = rng.standard_normal((10, 6))
    path = tmp_path / "net.npz"

    save_network(net, path)
    loaded = load_network(path)

    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert loaded.config == net.config
    for key, value in net.state().items():
        assert loaded.state()[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded.state()[key], value, err_msg=key)


def test_batchnorm_running_statistics_are_saved(tmp_path, rng):
    net = trained(MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng), rng)
    save_network(net, tmp_path / "net.npz")
    loaded = load_network(tmp_path / "net.npz")
    assert np.any(net.state()["running_var1"] != 0)
    np.testing.assert_array_equal(loaded.state()["running_var1"], net.state()["running_var1"])


def test_the_file_loads_without_pickle(tmp_path, rng):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng)
    save_network(net, str(tmp_path / "net.npz"))  # a str path works as well as a Path

    with np.load(tmp_path / "net.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}  # reading each array would raise if pickled

    assert set(arrays) == {*net.state(), "__config__"}
    assert json.loads(str(arrays["__config__"])) == net.config


def test_a_file_without_the_architecture_is_a_value_error(tmp_path, rng):
    net = MultiLayerNet(6, [5], 3, rng=rng)
    np.savez(tmp_path / "weights.npz", **net.state())
    with pytest.raises(ValueError, match="architecture"):
        load_network(tmp_path / "weights.npz")


def save_with_config(path, state, config):
    np.savez(path, **state, __config__=np.array(json.dumps(config)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.pop("b2"), "missing=\\['b2'\\]"),
        (lambda state: state.update(W9=np.zeros(3)), "unexpected=\\['W9'\\]"),
        (lambda state: state.update(W1=np.zeros((6, 4))), "W1.*shape"),
        (lambda state: state.pop("running_mean1"), "running_mean1"),
    ],
    ids=["missing array", "extra array", "wrong shape", "missing running statistics"],
)
def test_arrays_that_do_not_fit_the_architecture_are_a_value_error(tmp_path, rng, change, message):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng)
    state = dict(net.state())
    change(state)
    save_with_config(tmp_path / "net.npz", state, net.config)
    with pytest.raises(ValueError, match=message):
        load_network(tmp_path / "net.npz")


def test_a_state_from_another_architecture_is_a_value_error(tmp_path, rng):
    small, large = MultiLayerNet(6, [5], 3, rng=rng), MultiLayerNet(6, [5, 5], 3, rng=rng)
    save_with_config(tmp_path / "net.npz", small.state(), large.config)
    with pytest.raises(ValueError, match="State keys"):
        load_network(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="State keys"):
        large.load_state(small.state())


def test_load_state_copies_in_place_so_layers_see_the_new_values(rng):
    source = trained(MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng), rng)
    target = MultiLayerNet(6, [5], 3, use_batchnorm=True, rng=rng)
    arrays = dict(target.params)
    x = rng.standard_normal((4, 6))

    target.load_state(source.state())

    assert all(target.params[key] is arrays[key] for key in arrays)
    np.testing.assert_array_equal(target.predict(x), source.predict(x))
