"""IDX data sets shared by every process that opens them, and their rows as floats per batch.

Full-size data sets are large as floats: 60,000 MNIST images are 47 MB of bytes but 188 MB as
float32 and 376 MB as float64, in every worker process that converts them. So the IDX files are
converted once to ``.npy`` files of their uint8 images and int64 labels, in a cache folder keyed
by the SHA-256 of the files they came from (``cache_dir(name)/npy/<sha256>/``), and every process
memory-maps them (``np.load(..., mmap_mode="r")``): N workers share one copy in the page cache.
:class:`ScaledRows` picks rows of those images by an index array and converts only the rows it
is asked for (a mini-batch, an evaluation chunk) to floats, with the book's scaling, pixel / 255.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.idx import IDX_FILES, _resolve, cache_dir, read_verified_pair

logger = logging.getLogger(__name__)

PARTS = ("train", "t10k")
_CHUNK = 1 << 20


class ScaledRows:
    """Rows of uint8 images (e.g. memory-mapped), as floats in ``[0, 1]`` when taken.

    It stands in for the float array ``images[index].astype(dtype) / 255`` without building it:
    ``take`` (a mini-batch) and ``np.asarray`` of a slice (an evaluation chunk) convert only
    their rows; indexing with a slice or an index array gives another ``ScaledRows``.

    Args:
        images: ``(n, d)`` uint8 images, shared and never written.
        index: The rows of ``images`` this holds, in order; None: all of them.
        dtype: The float dtype of converted rows.
    """

    ndim = 2

    def __init__(self, images: np.ndarray, index: np.ndarray | None = None, dtype=np.float64):
        if images.ndim != 2 or images.dtype != np.uint8:
            raise ValueError(
                f"`images` must be 2-D uint8, but got {images.dtype} shape {images.shape}."
            )
        self.images = images
        self.index = np.arange(len(images)) if index is None else np.asarray(index, np.intp)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), self.images.shape[1])

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"ScaledRows(n={len(self)}, of={len(self.images)}, dtype={self.dtype})"

    def astype(self, dtype) -> ScaledRows:
        """The same rows, converted to ``dtype`` when taken (nothing is copied now)."""
        return self if np.dtype(dtype) == self.dtype else ScaledRows(self.images, self.index, dtype)

    def __getitem__(self, key) -> ScaledRows | np.ndarray:
        if isinstance(key, int | np.integer):
            return self.take([key])[0]
        return ScaledRows(self.images, self.index[key], self.dtype)

    def take(self, indices, axis: int = 0) -> np.ndarray:
        """The rows at ``indices`` as a new float array (``np.take`` on the float array)."""
        if axis != 0:
            raise ValueError(f"ScaledRows are taken along axis 0, but got {axis=}.")
        return scale(self.images[self.index.take(indices)], self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = scale(self.images[self.index], self.dtype)
        return x if dtype is None else x.astype(dtype, copy=False)


def scale(images: np.ndarray, dtype) -> np.ndarray:
    """uint8 images as floats in ``[0, 1]``: the book's ``x / 255``, in ``dtype``."""
    x = np.asarray(images).reshape(len(images), -1).astype(dtype)
    x /= 255.0
    return x


def open_shared(name: str, folder: Path) -> dict[str, np.ndarray]:
    """The images ``(n, 784)`` uint8 and int64 labels of both parts of the IDX files in
    ``folder``, memory-mapped from the ``.npy`` cache, which is written first if need be.

    The cache folder is named by the SHA-256 of the stored files, so a cached copy is used only
    for exactly the bytes it was converted from, and those were checked against the data set's
    known sums (``read_verified_pair``) when it was written. Where the cache cannot be written,
    the arrays are returned in memory, read-only, as a process of its own would hold them.

    Returns:
        ``{"train-images", "train-labels", "t10k-images", "t10k-labels"}`` -> read-only arrays.
    """

    def convert() -> dict[str, np.ndarray]:
        arrays = {}
        for part in PARTS:
            pair = read_verified_pair(name, folder, part)
            arrays[f"{part}-images"], arrays[f"{part}-labels"] = pair
        return arrays

    return open_cached(name, stored_sha256(folder), PARTS, convert)


def open_cached(
    name: str,
    sha256: str,
    parts: tuple[str, ...],
    convert: Callable[[], dict[str, np.ndarray]],
    *,
    failure_level: int = logging.WARNING,
) -> dict[str, np.ndarray]:
    """``convert()``'s ``<part>-images`` (uint8, 784 columns) and ``<part>-labels`` (int64) for
    each of ``parts``, memory-mapped from ``cache_dir(name)/npy/<sha256>/``, written first from
    ``convert()`` if need be; in memory and read-only where the cache cannot be written (logged
    at ``failure_level``)."""
    cache = cache_dir(name) / "npy" / sha256
    opened = _open_npy(cache, parts)
    if opened is not None:
        return opened
    arrays = convert()
    try:
        _write_npy(cache, arrays)
    except OSError as error:
        logger.log(
            failure_level,
            "Cannot cache %s in %s (%s): each process holds its own copy.",
            name,
            cache,
            error,
        )
        for array in arrays.values():
            array.flags.writeable = False
        return arrays
    logger.info("Cached %s as .npy files in %s", name, cache)
    return _open_npy(cache, parts) or arrays


def file_sha256(path: Path) -> str:
    """The SHA-256 of one file as stored, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stored_sha256(folder: Path) -> str:
    """One SHA-256 over the four IDX files as stored (``.gz`` or not), read in chunks."""
    digest = hashlib.sha256()
    for stem in IDX_FILES:
        path = _resolve(folder, stem)
        digest.update(f"{path.name}\0".encode())
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _open_npy(cache: Path, parts: tuple[str, ...] = PARTS) -> dict[str, np.ndarray] | None:
    """The cached arrays, memory-mapped; None if any is missing or not what was written."""
    arrays = {}
    for part in parts:
        try:
            images = np.load(cache / f"{part}-images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(cache / f"{part}-labels.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        well_formed = (
            images.dtype == np.uint8
            and images.ndim == 2
            and images.shape[1] == 784
            and labels.dtype == np.int64
            and labels.shape == (len(images),)
        )
        if not well_formed:
            return None
        arrays[f"{part}-images"], arrays[f"{part}-labels"] = images, labels
    return arrays


def _write_npy(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array to ``cache/<key>.npy`` atomically: a reader never sees half a file, and
    processes converting at the same time each replace the file with the same bytes."""
    cache.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{key}.", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as file:
                np.save(file, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(tmp, cache / f"{key}.npy")
        finally:
            Path(tmp).unlink(missing_ok=True)
