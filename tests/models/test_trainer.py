"""Trainer: reproducibility, the two ways of drawing batches, the epoch callback, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import SGD, Adam, MultiLayerNet, Trainer

N_TRAIN, N_VAL, N_FEATURES, N_CLASSES = 60, 30, 5, 3


def blobs(rng, n):
    """Three well-separated Gaussian clusters: a problem any working trainer learns."""
    labels = rng.integers(0, N_CLASSES, n)
    centres = 3.0 * np.eye(N_CLASSES, N_FEATURES)
    return centres[labels] + 0.5 * rng.standard_normal((n, N_FEATURES)), labels


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return (*blobs(rng, N_TRAIN), *blobs(rng, N_VAL))


def make_trainer(data, *, net_seed=0, network=None, optimizer=None, **kwargs):
    network = network or MultiLayerNet(N_FEATURES, [8, 8], N_CLASSES, rng=net_seed)
    kwargs = {"epochs": 5, "batch_size": 16, "rng": 0, **kwargs}
    return Trainer(network, optimizer or SGD(lr=0.1), *data, **kwargs)


class RecordingNet(MultiLayerNet):
    """Records every training batch and loss. Column 0 of the inputs holds ``index / n``."""

    def __init__(self, n: int, hidden_size_list=(8,), **kwargs) -> None:
        super().__init__(N_FEATURES, hidden_size_list, N_CLASSES, rng=0, **kwargs)
        self.n = n
        self.batches: list[np.ndarray] = []
        self.losses: list[float] = []

    def loss_and_gradient(self, x, t):
        self.batches.append(np.rint(x[:, 0] * self.n).astype(int))
        loss, grads = super().loss_and_gradient(x, t)
        self.losses.append(loss)
        return loss, grads


def indexed(data):
    """The data with column 0 replaced by each training sample's ``index / n``."""
    x_train, t_train, x_val, t_val = data
    x_train = x_train.copy()
    x_train[:, 0] = np.arange(len(x_train)) / len(x_train)
    return x_train, t_train, x_val, t_val


# --- reproducibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["shuffle", "replacement"])
def test_the_same_seeds_give_identical_histories_and_weights(data, sampling):
    kwargs = {"use_dropout": True, "use_batchnorm": True, "rng": 3}
    first, second = (
        make_trainer(
            data,
            network=MultiLayerNet(N_FEATURES, [8], N_CLASSES, **kwargs),
            sampling=sampling,
            rng=11,
        )
        for _ in range(2)
    )

    a, b = first.train(), second.train()

    assert a.history == b.history
    assert first.network.state().keys() == second.network.state().keys()
    for key, value in first.network.state().items():
        np.testing.assert_array_equal(value, second.network.state()[key], err_msg=key)


def test_another_batch_seed_gives_another_history_and_other_weights(data):
    first, second = make_trainer(data, rng=1), make_trainer(data, rng=2)
    a, b = first.train(), second.train()
    assert a.history != b.history
    assert not np.array_equal(first.network.params["W1"], second.network.params["W1"])


def test_a_generator_works_as_the_batch_seed(data):
    a = make_trainer(data, rng=np.random.default_rng(5)).train()
    b = make_trainer(data, rng=5).train()
    assert a.history == b.history


# --- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size", "sizes"), [(60, 16, [16, 16, 16, 12]), (60, 60, [60])])
def test_shuffle_visits_every_sample_once_per_epoch_in_a_new_order(data, n, batch_size, sizes):
    net = RecordingNet(n)
    make_trainer(indexed(data), network=net, batch_size=batch_size, epochs=3).train()

    per_epoch = len(sizes)
    assert [len(batch) for batch in net.batches] == sizes * 3
    orders = [
        np.concatenate(net.batches[i : i + per_epoch]) for i in range(0, 3 * per_epoch, per_epoch)
    ]
    for order in orders:
        assert sorted(order) == list(range(n))
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize(("batch_size", "iterations"), [(16, 4), (25, 3), (60, 1), (100, 1)])
def test_replacement_draws_the_books_choice_batches(data, batch_size, iterations):
    net = RecordingNet(N_TRAIN)
    trainer = make_trainer(
        indexed(data), network=net, batch_size=batch_size, sampling="replacement", epochs=2, rng=9
    )
    trainer.train()

    expected_rng = np.random.default_rng(9)
    expected = [expected_rng.choice(N_TRAIN, batch_size) for _ in range(2 * iterations)]
    assert trainer.iterations_per_epoch == iterations == math.ceil(N_TRAIN / batch_size)
    assert len(net.batches) == len(expected)
    for got, want in zip(net.batches, expected, strict=True):
        np.testing.assert_array_equal(got, want)  # batch_size samples each, with replacement


def test_training_updates_the_network_with_the_optimizer(data):
    trainer = make_trainer(data, epochs=1, batch_size=N_TRAIN, sampling="shuffle")
    net = trainer.network
    x_train, t_train = data[0], data[1]
    before = {key: value.copy() for key, value in net.params.items()}
    reference = MultiLayerNet(N_FEATURES, [8, 8], N_CLASSES)
    reference.load_state(before)

    trainer.train()

    grads = reference.gradient(x_train, t_train)  # one batch holding all samples, any order
    for key, value in net.params.items():
        np.testing.assert_allclose(value, before[key] - 0.1 * grads[key], rtol=1e-10, atol=1e-12)


# --- evaluation and the epoch callback ---------------------------------------------------------


def test_on_epoch_end_is_called_once_per_epoch_with_the_1_based_epoch_and_its_metrics(data):
    calls = []
    trainer = make_trainer(data, epochs=4, on_epoch_end=lambda epoch, m: calls.append((epoch, m)))

    result = trainer.train()

    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4]
    for i, (_, metrics) in enumerate(calls):
        assert set(metrics) == {"train_loss", "train_acc", "val_loss", "val_acc"}
        assert all(metrics[name] == result.history[name][i] for name in metrics)
    assert result.epochs_run == 4 and not result.diverged


def test_metrics_come_from_evaluation_mode_after_the_epochs_updates(data):
    x_train, t_train, x_val, t_val = data
    seen = []

    def evaluate_now(epoch, metrics):
        net = trainer.network
        seen.append((metrics, net.evaluate(x_train, t_train), net.evaluate(x_val, t_val)))

    trainer = make_trainer(
        data,
        network=MultiLayerNet(N_FEATURES, [8], N_CLASSES, use_dropout=True, rng=0),
        on_epoch_end=evaluate_now,
    )
    trainer.train()

    for metrics, (train_loss, train_acc), (val_loss, val_acc) in seen:
        assert metrics == {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
        }


def test_batch_train_metrics_are_the_sample_weighted_means_of_the_epochs_batches(data):
    x_train, t_train, _, _ = data
    net = RecordingNet(len(x_train))
    scores = []
    original = net.loss_and_gradient

    def recording(x, t):
        # The training-mode scores before this batch's update, computed independently.
        scores.append((net.predict(x, training=True).argmax(axis=1) == t).sum())
        return original(x, t)

    net.loss_and_gradient = recording
    result = make_trainer(
        indexed(data), network=net, batch_size=16, train_metrics="batches"
    ).train()

    per_epoch = -(-len(x_train) // 16)  # 60 samples: batches of 16, 16, 16, 12
    sizes = [len(b) for b in net.batches]
    for epoch in range(5):
        span = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        weights = np.array(sizes[span])
        loss = np.dot(net.losses[span], weights) / weights.sum()
        assert result.history["train_loss"][epoch] == pytest.approx(loss, rel=1e-12)
        assert result.history["train_acc"][epoch] == sum(scores[span]) / weights.sum()


def test_batch_train_metrics_leave_the_validation_metrics_and_the_weights_unchanged(data):
    evaluated = make_trainer(data).train()
    batches = make_trainer(data, train_metrics="batches")
    from_batches = batches.train()
    reference = make_trainer(data)
    reference.train()
    for name in ("val_loss", "val_acc"):
        assert from_batches.history[name] == evaluated.history[name]
    for key, value in batches.network.params.items():
        np.testing.assert_array_equal(value, reference.network.params[key])


def test_eval_sample_size_evaluates_only_the_first_samples_of_each_set(data):
    x_train, t_train, x_val, t_val = data
    seen = []

    def evaluate_now(epoch, metrics):
        net = trainer.network
        seen.append(
            (
                metrics,
                net.evaluate(x_train[:10], t_train[:10]),
                net.evaluate(x_val[:10], t_val[:10]),
            )
        )

    trainer = make_trainer(data, eval_sample_size=10, on_epoch_end=evaluate_now)
    trainer.train()

    for metrics, train, val in seen:
        assert (metrics["train_loss"], metrics["train_acc"]) == train
        assert (metrics["val_loss"], metrics["val_acc"]) == val
        assert (10 * metrics["val_acc"]).is_integer()


def test_an_exception_from_the_callback_propagates_and_the_history_keeps_the_epochs_so_far(data):
    class Stop(Exception):
        pass

    def stop_at_3(epoch, metrics):
        if epoch == 3:
            raise Stop

    trainer = make_trainer(data, epochs=10, on_epoch_end=stop_at_3)

    with pytest.raises(Stop):
        trainer.train()

    assert all(len(values) == 3 for values in trainer.result.history.values())
    assert trainer.result.epochs_run == 3


def test_training_learns_a_separable_problem(data):
    trainer = make_trainer(data, epochs=30, optimizer=SGD(lr=0.05))
    untrained = trainer.network.accuracy(data[2], data[3])

    history = trainer.train().history

    assert untrained < history["val_acc"][-1]
    assert history["val_acc"][-1] >= 0.95  # chance is 1/3
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]


def test_training_learns_in_float32_too(data):
    net = MultiLayerNet(N_FEATURES, [8, 8], N_CLASSES, rng=0, dtype=np.float32)
    trainer = make_trainer(data, network=net, epochs=20, optimizer=Adam(lr=0.01))
    history = trainer.train().history
    assert history["val_acc"][-1] >= 0.9
    assert all(value.dtype == np.float32 for value in net.params.values())


# --- divergence --------------------------------------------------------------------------------


def with_nan_in(data, position):
    arrays = [a.copy() for a in data]
    arrays[position][2, 1] = np.nan
    return tuple(arrays)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to inf and NaN
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("huge learning rate", "training loss"),
        ("nan in x_train", "training loss"),
        ("nan in x_val", "validation loss"),
    ],
)
def test_a_non_finite_loss_stops_training_at_once_and_is_recorded(data, case, reason):
    # A ReLU net with lr 1e6 may just die with a huge finite loss; 1e8 reliably overflows.
    lr = 1e8 if case == "huge learning rate" else 0.1
    if case == "nan in x_train":
        data = with_nan_in(data, 0)
    if case == "nan in x_val":
        data = with_nan_in(data, 2)
    net = RecordingNet(N_TRAIN, [8, 8])
    trainer = make_trainer(data, network=net, optimizer=SGD(lr=lr), epochs=50, batch_size=10)

    result = trainer.train()

    assert result.diverged and result.diverged_epoch is not None
    assert result.diverged_epoch < 50
    assert reason in result.reason and str(result.diverged_epoch) in result.reason
    assert result.epochs_run == result.diverged_epoch - 1
    assert all(len(values) == result.epochs_run for values in result.history.values())
    assert all(math.isfinite(v) for values in result.history.values() for v in values)
    if reason == "training loss":  # no update after the first non-finite loss
        assert not math.isfinite(net.losses[-1])
        assert all(math.isfinite(loss) for loss in net.losses[:-1])


def test_divergence_in_a_later_epoch_keeps_the_earlier_epochs_and_their_callbacks(data):
    calls = []

    def poison_after_epoch_3(epoch, metrics):
        calls.append(epoch)
        if epoch == 3:
            trainer.network.params["W1"][0, 0] = np.nan

    trainer = make_trainer(data, epochs=10, on_epoch_end=poison_after_epoch_3)
    result = trainer.train()

    assert (result.diverged, result.diverged_epoch, result.epochs_run) == (True, 4, 3)
    assert result.reason == "training loss became nan in epoch 4"
    assert calls == [1, 2, 3]
    assert all(len(values) == 3 for values in result.history.values())


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampling": "bootstrap"}, "sampling"),
        ({"eval_sample_size": 0}, "eval_sample_size"),
        ({"train_metrics": "epoch"}, "train_metrics"),
    ],
)
def test_bad_settings_are_value_errors(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(data, **kwargs)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: (d[0][:-1], d[1], d[2], d[3]), "x_train and t_train"),
        (lambda d: (d[0], d[1], d[2], d[3][:5]), "x_val and t_val"),
        (lambda d: (d[0][:0], d[1][:0], d[2], d[3]), "non-zero"),
    ],
    ids=["train lengths differ", "val lengths differ", "empty training set"],
)
def test_mismatched_or_empty_arrays_are_value_errors(data, cut, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(cut(data))
