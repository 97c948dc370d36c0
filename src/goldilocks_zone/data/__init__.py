"""Data sets measured by the papers, behind one loader.

``load(name, split="train", *, root=None, num_samples=None, seed=None, **options)`` returns a
:class:`Dataset` (normalised float32 ``inputs``, int64 ``targets`` and metadata) for
``fashion-mnist``, ``mnist``, ``mnist-5k``, ``digits``, ``cifar10``, ``svhn``, ``circles`` (P1's
own 2-D data, bundled), and the synthetic ``rings`` and ``gaussian``. Seeded subsets:
:func:`subsample`, :func:`imbalanced_subset`, :func:`subset_with_prior`, and
:func:`sample_simplex_priors` for P1's random class priors.
See ``docs/data.md``.
"""

from goldilocks_zone.data.dataset import Dataset
from goldilocks_zone.data.errors import CorruptDatasetError, DatasetNotFoundError
from goldilocks_zone.data.registry import describe, download_dir, load, names
from goldilocks_zone.data.subsets import (
    imbalanced_counts,
    imbalanced_subset,
    sample_simplex_priors,
    subsample,
    subset_with_prior,
)

__all__ = [
    "CorruptDatasetError",
    "Dataset",
    "DatasetNotFoundError",
    "describe",
    "download_dir",
    "imbalanced_counts",
    "imbalanced_subset",
    "load",
    "names",
    "sample_simplex_priors",
    "subsample",
    "subset_with_prior",
]
