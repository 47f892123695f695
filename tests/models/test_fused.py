"""The compiled loops (models.kernels, models.fused): the same bits as the layers' NumPy code.

A trial trained in compiled loops must replay identically in NumPy and the other way round, so
every comparison here is exact: whole training runs (histories and parameters), and each loop
against the NumPy expression it replaces, on NaN, infinities and signed zeros too.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import models  # noqa: E402
from models import (  # noqa: E402
    SGD,
    Adam,
    Momentum,
    MultiLayerNet,
    Trainer,
    kernels,  # noqa: E402
)
from models.layers import Relu, _row_maxima  # noqa: E402
from models.shared import ScaledRows, scale  # noqa: E402
from models.trainer import COMPILED_FROM_STEPS  # noqa: E402

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0]


def bits(x: np.ndarray) -> np.ndarray:
    """The bytes of ``x``: equal bits, NaN payloads and signs of zero included."""
    return np.ascontiguousarray(x).view(np.uint8)


def awkward(rng, shape, dtype) -> np.ndarray:
    """Normal values with NaN, infinities and signed zeros scattered in."""
    x = rng.standard_normal(shape).astype(dtype)
    spots = rng.random(shape) < 0.2
    x[spots] = rng.choice(np.array(SPECIAL, dtype), spots.sum())
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_rows_gives_the_books_division_for_every_byte(dtype):
    images = np.arange(256, dtype=np.uint8).reshape(2, 128)
    images.flags.writeable = False  # as memory-mapped data sets are
    rows = np.array([1, 0, 1])
    out = np.empty((3, 128), dtype)
    kernels.scale_rows(images, rows, np.empty((3, 128), np.uint8), out)
    assert np.array_equal(bits(out), bits(scale(images[rows], dtype)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN, inf
def test_each_loop_matches_the_numpy_it_replaces(dtype):
    rng = np.random.default_rng(0)
    z, b = awkward(rng, (40, 10), dtype), awkward(rng, (10,), dtype)

    relu = Relu()
    expected = relu.forward(z + b)
    got = z.copy()
    kernels.bias_relu(got, b)
    assert np.array_equal(bits(got), bits(expected))

    dout = awkward(rng, (40, 10), dtype)
    grad = dout.copy()
    kernels.relu_grad(grad, got)
    assert np.array_equal(bits(grad), bits(relu.backward(dout)))

    # Evaluation's ReLU: np.maximum, but for the sign of zeros (dropped by the next bias).
    evaluated = z.copy()
    kernels.bias_relu_eval(evaluated, b)
    maximum = np.maximum(z + b, 0)
    assert np.array_equal(evaluated, maximum, equal_nan=True)
    assert np.array_equal(np.isnan(evaluated), np.isnan(maximum))

    shifted = np.empty_like(z)
    kernels.shift_rows(z, b, shifted)
    assert np.array_equal(bits(shifted), bits((z + b) - _row_maxima(z + b)))

    c = awkward(rng, (40,), dtype)
    rows = z.copy()
    kernels.subtract_rows(rows, c)
    assert np.array_equal(bits(rows), bits(z - c[:, np.newaxis]))

    lam = dtype(0.003)
    decayed = dout.copy()
    kernels.add_decay(decayed, z, lam)
    assert np.array_equal(bits(decayed), bits(dout + 0.003 * z))

    w, gb = z.copy(), awkward(rng, (10,), dtype)
    bias = b.copy()
    kernels.sgd(w, dout, bias, gb, dtype(0.01))
    reference = {"W": z.copy(), "b": b.copy()}
    SGD(lr=0.01).update(reference, {"W": dout, "b": gb})
    assert np.array_equal(bits(w), bits(reference["W"]))
    assert np.array_equal(bits(bias), bits(reference["b"]))


def test_softmax_grad_matches_softmax_with_loss():
    rng = np.random.default_rng(1)
    y, logp = rng.random((30, 10), np.float32), rng.standard_normal((30, 10)).astype(np.float32)
    t = rng.integers(0, 10, 30)
    out, picked = np.empty_like(y), np.empty(30, np.float32)
    kernels.softmax_grad(y, logp, t, np.float32(1.0 / 30), out, picked)
    expected = y.copy()
    expected[np.arange(30), t] -= 1.0
    expected *= 1.0 / 30
    assert np.array_equal(bits(out), bits(expected))
    assert np.array_equal(bits(picked), bits(logp[np.arange(30), t]))


def uint8_data(rng, n_train=300, n_val=120):
    """A ScaledRows training and validation set over one shuffled uint8 image array, as
    ``search_split`` makes them from a shared data set."""
    labels = rng.integers(0, 10, 600)
    images = rng.integers(0, 100, (600, 784), dtype=np.uint8)
    for c in range(10):  # each class lights a band of pixels: a problem any working step learns
        images[labels == c, c * 78 : c * 78 + 78] += 120
    images.flags.writeable = False
    order = rng.permutation(600)
    train, val = order[:n_train], order[n_train : n_train + n_val]
    return (ScaledRows(images, train), labels[train], ScaledRows(images, val), labels[val])


def train_both(data, *, dtype, optimizer, **kwargs):
    """The same run trained by the layers and by the compiled loops: (result, params) each."""
    net_kwargs = kwargs.pop("net", {})
    runs = []
    for compiled in (False, True):
        net = MultiLayerNet(784, [40, 30, 20], 10, rng=3, dtype=dtype, **net_kwargs)
        trainer = Trainer(net, optimizer(), *data, rng=5, compiled=compiled, **kwargs)
        assert trainer.compiled is compiled
        runs.append((trainer.train(), {k: v.copy() for k, v in net.params.items()}))
        # The path the flag names is the one that ran: the layers' loss keeps its last output.
        assert (net.last_layer.y is None) is compiled
    return runs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("shared", [True, False], ids=["uint8-rows", "float-array"])
def test_training_is_bit_identical_to_the_layers(dtype, weight_decay, optimizer, shared):
    data = uint8_data(np.random.default_rng(2))
    if not shared:
        data = (np.asarray(data[0].astype(dtype)), data[1], np.asarray(data[2]), data[3])
    make = {
        "sgd": lambda: SGD(lr=0.05),
        "momentum": lambda: Momentum(lr=0.01),
        "adam": lambda: Adam(lr=0.001),
    }[optimizer]
    metrics = "batches" if optimizer == "adam" else "eval"
    (layers, p_layers), (fused, p_fused) = train_both(
        data, dtype=dtype, optimizer=make, epochs=3, batch_size=64, train_metrics=metrics,
        net={"weight_decay_lambda": weight_decay},
    )  # fmt: skip
    assert layers.history == fused.history
    assert all(np.array_equal(bits(p_layers[k]), bits(p_fused[k])) for k in p_layers)
    assert layers.history["val_acc"][-1] > 0.3  # it learned: the comparison is not of noise


def test_divergence_is_the_same_in_both():
    data = uint8_data(np.random.default_rng(4))
    (layers, p_layers), (fused, p_fused) = train_both(
        data, dtype=np.float32, optimizer=lambda: SGD(lr=1e4), epochs=5, batch_size=50
    )
    assert layers.diverged and fused.diverged
    assert (layers.reason, layers.history) == (fused.reason, fused.history)
    assert all(np.array_equal(bits(p_layers[k]), bits(p_fused[k])) for k in p_layers)


def test_evaluation_sample_size_and_a_last_partial_batch():
    data = uint8_data(np.random.default_rng(5), n_train=290, n_val=110)
    (layers, _), (fused, _) = train_both(
        data, dtype=np.float32, optimizer=lambda: SGD(lr=0.05), epochs=2, batch_size=100,
        eval_sample_size=70,
    )  # fmt: skip
    assert layers.history == fused.history


def test_long_runs_of_plain_relu_networks_compile_by_default():
    x_train, t_train, x_val, t_val = uint8_data(np.random.default_rng(6))
    steps_per_epoch = -(-len(x_train) // 100)
    long = -(-COMPILED_FROM_STEPS // steps_per_epoch)

    def trainer(epochs, **net):
        network = MultiLayerNet(784, [20], 10, rng=0, **net)
        return Trainer(network, SGD(), x_train, t_train, x_val, t_val, epochs=epochs)

    assert trainer(long).compiled
    assert pickle.loads(pickle.dumps(trainer(long))).compiled  # as a trainer sent to a process
    assert not trainer(long - 1).compiled
    assert not trainer(long, use_batchnorm=True).compiled
    assert not trainer(long, activation="tanh").compiled
    net = MultiLayerNet(784, [20], 10, rng=0)
    for labels in (np.eye(10)[t_train], t_train + 1, t_train - 1, t_train.astype(float)):
        # One-hot rows; labels 1-10 or -1-8, on which NumPy's indexing raises or wraps; floats.
        assert not Trainer(net, SGD(), x_train, labels, x_val, t_val, epochs=long).compiled
    assert Trainer(
        net, SGD(), x_train, t_train.astype(np.uint8), x_val, t_val, epochs=long
    ).compiled

    class Subclass(MultiLayerNet):  # may change the step: only the class itself is compiled
        pass

    sub = Subclass(784, [20], 10, rng=0)
    assert not Trainer(sub, SGD(), x_train, t_train, x_val, t_val, epochs=long).compiled


def test_compiled_true_says_what_it_needs(monkeypatch):
    x_train, t_train, x_val, t_val = uint8_data(np.random.default_rng(7))
    net = MultiLayerNet(784, [20], 10, use_dropout=True)
    with pytest.raises(ValueError, match="ReLU layers without BatchNorm or Dropout, trained on"):
        Trainer(net, SGD(), x_train, t_train, x_val, t_val, epochs=1, compiled=True)

    # Without numba: the default trains in NumPy, compiled=True names the extra to install.
    monkeypatch.setitem(sys.modules, "numba", None)
    for name in ("kernels", "fused"):
        monkeypatch.delitem(sys.modules, f"models.{name}", raising=False)
        monkeypatch.delattr(models, name, raising=False)
    net = MultiLayerNet(784, [20], 10)
    long = COMPILED_FROM_STEPS
    assert not Trainer(net, SGD(), x_train, t_train, x_val, t_val, epochs=long).compiled
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[fast\]\""):
        Trainer(net, SGD(), x_train, t_train, x_val, t_val, epochs=1, compiled=True)


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path):
    # A file size limit makes every write of numba's cache fail as a full disk does.
    code = """
import logging, resource, signal
logging.basicConfig(format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
from models import fused
fused.load("float64")
print("trained")
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "trained\n"
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("WARNING Cannot cache the compiled loops (")
    assert "the next process compiles them again" in warning
