"""The shared data path: IDX files converted once to .npy, memory-mapped by every process, rows
converted to floats per batch with the same values as the in-memory path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import MultiLayerNet, Trainer, datasets, get_optimizer, idx, shared
from models.datasets import ScaledRows, load_dataset, search_split
from tests.models.test_datasets import register_sums, tiny_arrays, write_idx_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {})


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    arrays = tiny_arrays(n_train=40, n_test=12)
    folder = tmp_path / "data"
    write_idx_set(folder, arrays)
    register_sums(monkeypatch, "mnist", arrays)
    return folder


def npy_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shared_images_are_memory_mapped_and_give_the_in_memory_values(folder, dtype):
    eager = load_dataset("mnist", folder, dtype=dtype, download=False)
    lazy = load_dataset("mnist", folder, dtype=dtype, download=False, shared=True)
    for x, x_lazy in ((eager.x, lazy.x), (eager.x_test, lazy.x_test)):
        assert isinstance(x_lazy, ScaledRows) and isinstance(x_lazy.images, np.memmap)
        assert not x_lazy.images.flags.owndata and not x_lazy.images.flags.writeable
        converted = np.asarray(x_lazy)
        assert converted.dtype == dtype and np.array_equal(converted, x)
    assert np.array_equal(lazy.t, eager.t) and np.array_equal(lazy.t_test, eager.t_test)


def test_a_shared_split_picks_the_same_rows_and_converts_only_what_is_taken(folder):
    eager = search_split(load_dataset("mnist", folder, download=False), 30, 0.2, 7)
    lazy = search_split(load_dataset("mnist", folder, download=False, shared=True), 30, 0.2, 7)
    for name in ("x_train", "x_val", "x_test"):
        rows = getattr(lazy, name)
        assert isinstance(rows, ScaledRows) and isinstance(rows.images, np.memmap)
        assert np.array_equal(np.asarray(rows), getattr(eager, name))
    for name in ("t_train", "t_val", "t_test"):
        assert np.array_equal(getattr(lazy, name), getattr(eager, name))
    batch = [3, 0, 5]
    assert np.array_equal(lazy.x_train.take(batch, axis=0), eager.x_train.take(batch, axis=0))
    assert np.array_equal(np.asarray(lazy.x_train[2:9]), eager.x_train[2:9])


def test_the_cache_is_written_once_and_reopened_without_parsing_the_idx_files(
    folder, tmp_path, monkeypatch
):
    load_dataset("mnist", folder, download=False, shared=True)
    files = npy_files(tmp_path)
    assert len(files) == 4 and files[0].parent.name == shared.stored_sha256(folder)
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_parsing(*args):
        raise AssertionError("the IDX files were parsed again")

    monkeypatch.setattr(shared, "read_verified_pair", no_parsing)
    again = load_dataset("mnist", folder, download=False, shared=True)
    assert isinstance(again.x.images, np.memmap)
    assert [f.stat().st_mtime_ns for f in npy_files(tmp_path)] == stamps


def test_pool_size_counts_the_training_pool_and_writes_the_cache_the_workers_open(
    folder, tmp_path, monkeypatch
):
    n_samples = len(load_dataset("mnist", folder, download=False).x)  # in memory: no cache
    assert n_samples == 40 and npy_files(tmp_path) == []

    def no_floats(*args):
        raise AssertionError("images were converted to floats")

    monkeypatch.setattr(datasets, "_normalise", no_floats)
    assert datasets.pool_size("mnist", folder, download=False) == n_samples
    assert len(npy_files(tmp_path)) == 4


def test_another_process_opens_the_same_files_as_memory_maps(folder, tmp_path):
    load_dataset("mnist", folder, download=False, shared=True)
    code = (
        "import numpy as np, sys; from models import shared; from models.idx import SHA256_SUMS;"
        "from pathlib import Path;"
        "a = shared._open_npy(shared.cache_dir('mnist') / 'npy' / shared.stored_sha256("
        "Path(sys.argv[1])));"
        "assert all(isinstance(v, np.memmap) and not v.flags.owndata for v in a.values()), a"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_changed_source_files_get_a_cache_of_their_own(folder, tmp_path, monkeypatch):
    load_dataset("mnist", folder, download=False, shared=True)
    arrays = tiny_arrays(seed=1, n_train=40, n_test=12)
    write_idx_set(folder, arrays)
    register_sums(monkeypatch, "mnist", arrays)
    data = load_dataset("mnist", folder, download=False, shared=True)
    assert np.array_equal(
        np.asarray(data.x), arrays["train-images-idx3-ubyte"].reshape(40, 784) / 255
    )
    assert len({f.parent for f in npy_files(tmp_path)}) == 2


def test_an_unwritable_cache_falls_back_to_read_only_arrays_in_memory(folder, monkeypatch, caplog):
    def refuse(*args):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(shared, "_write_npy", refuse)
    data = load_dataset("mnist", folder, download=False, shared=True)
    assert not isinstance(data.x.images, np.memmap) and not data.x.images.flags.writeable
    assert np.array_equal(np.asarray(data.x), load_dataset("mnist", folder, download=False).x)
    assert "Cannot cache mnist" in caplog.text


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_on_shared_rows_matches_training_on_float_arrays_and_copies_nothing(folder, dtype):
    def train(split):
        net = MultiLayerNet(784, [8, 8], 10, rng=1, dtype=dtype, use_batchnorm=True)
        trainer = Trainer(
            net,
            get_optimizer("sgd", lr=0.1),
            split.x_train,
            split.t_train,
            split.x_val,
            split.t_val,
            epochs=3,
            batch_size=7,
            rng=2,
        )
        return trainer, trainer.train().history

    eager = search_split(load_dataset("mnist", folder, download=False), 30, 0.2, 3)
    lazy = search_split(load_dataset("mnist", folder, download=False, shared=True), 30, 0.2, 3)
    trainer, history = train(lazy)
    assert isinstance(trainer.x_train, ScaledRows) and trainer.x_train.dtype == dtype
    assert history == train(eager)[1]


def test_scaled_rows_refuse_what_they_cannot_stand_for():
    with pytest.raises(ValueError, match="2-D uint8"):
        ScaledRows(np.zeros((3, 4)))
    rows = ScaledRows(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="axis 0"):
        rows.take([0], axis=1)


def parsed_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mnist-5k as the CSV parses, without the cache."""
    table = np.loadtxt(datasets._mnist_5k_path(), delimiter=",", dtype=np.uint8, ndmin=2)
    return table[:, :784], table[:, 784].astype(np.int64)


def test_mnist_5k_is_parsed_once_and_then_memory_mapped_with_the_same_values(tmp_path):
    datasets._read_mnist_5k_csv.cache_clear()
    first = load_dataset("mnist-5k")
    cached = npy_files(tmp_path)
    assert [p.name for p in cached] == ["all-images.npy", "all-labels.npy"]
    assert cached[0].parent.name == shared.file_sha256(datasets._mnist_5k_path())
    # Another process maps the cache and never parses the CSV.
    code = (
        "import numpy as np; np.loadtxt = None; from models.datasets import load_dataset;"
        "d = load_dataset('mnist-5k'); np.save('x.npy', d.x); np.save('t.npy', d.t);"
        "print(type(d.x).__name__, type(d.t).__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ndarray", "ndarray"]
    images, labels = parsed_mnist_5k()
    for data in (first, load_dataset("mnist-5k")):
        assert type(data.x) is np.ndarray
        assert np.array_equal(data.x, images.astype(np.float64) / 255.0)
        assert np.array_equal(data.t, labels)
    assert np.array_equal(np.load(tmp_path / "x.npy"), first.x)
    assert np.array_equal(np.load(tmp_path / "t.npy"), first.t)


def test_mnist_5k_without_a_writable_cache_is_parsed_each_time_silently(tmp_path, caplog):
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    datasets._read_mnist_5k_csv.cache_clear()
    with caplog.at_level("INFO", logger="models"):
        data = load_dataset("mnist-5k", dtype=np.float32)
    images, labels = parsed_mnist_5k()
    assert np.array_equal(data.x, images.astype(np.float32) / np.float32(255))
    assert np.array_equal(data.t, labels)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    datasets._read_mnist_5k_csv.cache_clear()  # not the uncached arrays for later tests
