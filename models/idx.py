"""The standard IDX files of MNIST and Fashion-MNIST: found on disk or downloaded once into the
cache, checked against known SHA-256 sums, and parsed into uint8 arrays.

``models.datasets`` turns them into data sets; its public names (``IDX_FILES``, ``SHA256_SUMS``,
``MIRRORS``, ``SYSTEM_DIRS``, ``read_idx``, ``cache_dir``, ``fetch``, ...) are these, re-exported.
Rebind them here (``models.idx.MIRRORS = ...``), where they are looked up.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

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


def read_verified_pair(name: str, folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(n, 784)`` and int64 labels of ``part`` ("train" or "t10k") in ``folder``,
    each file checked against ``SHA256_SUMS[name]`` first.

    Raises:
        ValueError: A SHA-256 mismatch, a corrupt file, or images and labels that do not agree.
    """
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


def find_folder(name: str, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """The first folder holding all four IDX files of ``name`` (see ``load_dataset`` for the
    order), downloading the missing ones into ``cache_dir(name)`` when none does and ``download``.

    Raises:
        DatasetUnavailableError: No folder is complete and the download is off or failed.
    """
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
