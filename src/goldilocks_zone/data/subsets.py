"""Seeded subsets of a :class:`Dataset`: plain, class-balanced, class-imbalanced (Cui et al.,
2019) and following a given class prior (P1 Fig. 5b).

All draws use numpy's PCG64 generator seeded by ``seed`` and return a new :class:`Dataset`
(prior and fingerprint recomputed) whose samples come in random order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from goldilocks_zone.curvature.random import numpy_generator
from goldilocks_zone.data.dataset import Dataset
from goldilocks_zone.data.synthetic import check_prior, rounded_counts


def _rng(seed: int | None) -> np.random.Generator:
    return numpy_generator(0 if seed is None else seed)


def _class_indices(ds: Dataset) -> list[np.ndarray]:
    targets = ds.targets.cpu().numpy()
    return [np.flatnonzero(targets == k) for k in range(ds.num_classes)]


def _draw_per_class(ds: Dataset, counts: np.ndarray, rng: np.random.Generator, *,
                    replace: bool | Literal["auto"] = False) -> Dataset:
    picks = []
    for k, (idx, c) in enumerate(zip(_class_indices(ds), counts)):
        c = int(c)
        if c == 0:
            continue
        if c <= idx.size:
            picks.append(rng.choice(idx, size=c, replace=False))
        elif replace is False or idx.size == 0:
            raise ValueError(f"{ds.name}/{ds.split}: class {k} needs {c} samples but has "
                             f"{idx.size}" + ("" if idx.size == 0 else
                                              "; allow replace=True or ask for fewer"))
        else:  # every available sample once, then the shortfall drawn with replacement
            picks.append(np.concatenate([rng.permutation(idx),
                                         rng.choice(idx, size=c - idx.size, replace=True)]))
    order = rng.permutation(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    return ds.subset(order)


def subsample(ds: Dataset, n: int, seed: int | None = 0, balanced: bool = False) -> Dataset:
    """``n`` distinct samples drawn uniformly without replacement.

    With ``balanced=True`` every class present in ``ds`` gets ⌊n / K'⌋ samples (K' classes
    present) and the remainder goes, one each, to randomly chosen classes; a class with too few
    samples raises ``ValueError``.
    """
    n = int(n)
    if n < 1 or n > len(ds):
        raise ValueError(f"cannot draw n={n} samples from {ds.name}/{ds.split} of size {len(ds)}")
    rng = _rng(seed)
    if not balanced:
        return ds.subset(rng.choice(len(ds), size=n, replace=False))
    present = np.flatnonzero(ds.class_counts.numpy() > 0)
    counts = np.zeros(ds.num_classes, dtype=np.int64)
    counts[present] = n // present.size
    counts[rng.choice(present, size=n % present.size, replace=False)] += 1
    return _draw_per_class(ds, counts, rng)


def imbalanced_counts(num_classes: int, ratio: float, n_max: int) -> np.ndarray:
    """Cui et al.'s exponential profile n_k = ⌊n_max · ratio^{−k/(K−1)}⌋ (at least 1),
    k = 0..K−1, so that n_0 / n_{K−1} = ratio."""
    if ratio < 1:
        raise ValueError(f"imbalance ratio must be >= 1 (largest / smallest class), got {ratio}")
    if num_classes == 1:
        return np.array([n_max], dtype=np.int64)
    k = np.arange(num_classes)
    # the tiny offset keeps exact values such as 500 from flooring to 499 by rounding error
    counts = np.floor(n_max * float(ratio) ** (-k / (num_classes - 1)) + 1e-9).astype(np.int64)
    return np.maximum(counts, 1)


def imbalanced_subset(ds: Dataset, ratio: float, seed: int | None = 0, *,
                      n_max: int | None = None, order: Sequence[int] | None = None) -> Dataset:
    """Long-tailed subset with Cui et al.'s (2019) exponential class profile.

    The class ranked k (``order[k]``, default class k) keeps
    n_k = ⌊n_max · ratio^{−k/(K−1)}⌋ samples drawn without replacement, so the largest and
    smallest classes differ by the factor ``ratio``. ``n_max`` defaults to the largest value
    every class can supply.
    """
    k = ds.num_classes
    rank = np.arange(k) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(rank.tolist()) != list(range(k)):
        raise ValueError(f"order must be a permutation of 0..{k - 1}, got {list(rank)}")
    available = ds.class_counts.numpy()[rank]
    if n_max is None:
        decay = float(ratio) ** (-np.arange(k) / max(k - 1, 1))
        n_max = int(np.floor(np.min(available / decay) + 1e-9))
    ranked = imbalanced_counts(k, ratio, int(n_max))
    counts = np.zeros(k, dtype=np.int64)
    counts[rank] = ranked
    return _draw_per_class(ds, counts, _rng(seed))


def subset_with_prior(ds: Dataset, prior: Sequence[float] | Tensor | np.ndarray, n: int,
                      seed: int | None = 0, *,
                      counts: Literal["multinomial", "rounded"] = "multinomial",
                      replace: bool | Literal["auto"] = "auto") -> Dataset:
    """``n`` samples whose labels follow the class ``prior`` q (P1 Fig. 5b).

    ``counts="multinomial"`` draws the class counts from Multinomial(n, q), as if each sample's
    class were drawn from q (the empirical prior then deviates from q by about
    √(q_k (1 − q_k) / n)); ``"rounded"`` uses the integers closest to n·q. Within a class the
    samples are drawn without replacement; only when a class has fewer samples than its count
    (``replace="auto"``) are all of them used and the shortfall drawn with replacement, so
    duplicates appear only then. ``replace=False`` raises instead; the returned ``prior`` is
    always the empirical one.
    """
    if counts not in ("multinomial", "rounded"):
        raise ValueError(f"counts must be 'multinomial' or 'rounded', got {counts!r}")
    q = check_prior(torch.as_tensor(prior).cpu().numpy() if isinstance(prior, Tensor) else prior,
                    ds.num_classes)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = _rng(seed)
    per_class = rng.multinomial(n, q) if counts == "multinomial" else rounded_counts(n, q)
    return _draw_per_class(ds, per_class, rng, replace=replace)


def sample_simplex_priors(num: int, num_classes: int, seed: int | None = 0) -> Tensor:
    """``num`` class priors drawn uniformly from the probability simplex (Dirichlet(1, ..., 1)),
    float64 ``(num, num_classes)``, rows summing to 1."""
    if num < 1 or num_classes < 2:
        raise ValueError(f"need num >= 1 and num_classes >= 2, got {num}, {num_classes}")
    draws = _rng(seed).dirichlet(np.ones(num_classes), size=int(num))
    return torch.from_numpy(draws)
