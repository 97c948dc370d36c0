"""Generated data sets: ``rings`` (synthetic concentric rings in the plane) and ``gaussian``
(random inputs). P1's own 2-D data are not generated here: they ship as files, data set
``circles``.

Both are drawn from numpy's PCG64 generator seeded by ``SeedSequence(seed, spawn_key=(s,))``
with s = 0 for the train split and s = 1 for the test split, so the splits are independent
draws and a seed always gives the same values on every platform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from goldilocks_zone.curvature.random import numpy_generator

SPLIT_STREAMS = {"train": 0, "test": 1}


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent generator for ``split`` of a generated data set with base ``seed``."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"generated data sets have splits {list(SPLIT_STREAMS)}, got {split!r}")
    return numpy_generator(seed, stream=SPLIT_STREAMS[split])


def rounded_counts(n: int, prior: np.ndarray) -> np.ndarray:
    """Integer class counts summing to ``n`` closest to ``n * prior`` (largest remainders)."""
    exact = n * prior
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def check_prior(prior: Sequence[float] | np.ndarray, num_classes: int) -> np.ndarray:
    """``prior`` as a float64 array of length K, non-negative, summing to 1 (within 1e-6)."""
    p = np.asarray(prior, dtype=np.float64).reshape(-1)
    if p.shape[0] != num_classes:
        raise ValueError(f"prior has {p.shape[0]} entries but there are {num_classes} classes")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"prior must be non-negative and sum to 1, got {p.tolist()}")
    return p / p.sum()


def rings(n: int, rng: np.random.Generator, *, num_classes: int = 3,
            radii: Sequence[float] | None = None, noise: float = 0.08
            ) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic concentric rings in the plane, one per class (not P1's data: see ``circles``).

    Class k has radius r_k (default r_k = (k + 1) / 2: 0.5, 1.0, 1.5 for three classes, so the
    coordinates have standard deviation ≈ 0.76). A point of class k is
    (r cos φ, r sin φ) with φ ~ U[0, 2π) and r = r_k + noise · ε, ε ~ N(0, 1). Classes are
    balanced (sizes differ by at most one) and the points come shuffled.

    Returns (points (n, 2) float32, labels (n,) int64).
    """
    if num_classes < 2:
        raise ValueError(f"rings needs at least 2 classes, got {num_classes}")
    r = np.arange(1, num_classes + 1) / 2.0 if radii is None else np.asarray(radii, float)
    if r.shape != (num_classes,):
        raise ValueError(f"radii must have {num_classes} entries, got {list(r)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    uniform = np.full(num_classes, 1 / num_classes)
    labels = rng.permutation(np.repeat(np.arange(num_classes), rounded_counts(n, uniform)))
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    radius = r[labels] + noise * rng.standard_normal(n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return points.astype(np.float32), labels.astype(np.int64)


def gaussian(n: int, rng: np.random.Generator, *, input_shape: Sequence[int],
             num_classes: int, prior: Sequence[float] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with i.i.d. N(0, 1) entries and labels independent of them.

    Class counts are ``n · prior`` rounded to integers summing to n (largest remainders), so
    the empirical prior matches the requested one as closely as n allows; ``prior=None`` is
    uniform. Labels come in random order.

    Returns (inputs (n, *input_shape) float32, labels (n,) int64).
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = (np.full(num_classes, 1.0 / num_classes) if prior is None
         else check_prior(prior, num_classes))
    labels = rng.permutation(np.repeat(np.arange(num_classes), rounded_counts(n, p)))
    inputs = rng.standard_normal((n, *shape), dtype=np.float32)
    return inputs, labels.astype(np.int64)
