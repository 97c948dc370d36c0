r"""One curvature measurement scaled out over data shards on a Dask cluster.

The mean cross-entropy over S samples split into shards of :math:`n_k` samples is
:math:`L = \frac1S \sum_k n_k L_k`, so every quantity the engine reports is linear in the
per-shard means: the subspace Hessian, G-term and H-term, the projected gradient, the loss,
and any Hessian-vector product. Each worker measures its own shard with the single-process
engine; the driver multiplies each shard's means back to sums (:math:`n_k M_k`), adds them in
shard order in float64 and divides by S. The result equals the single-process measurement up
to the order of float64 additions (≤ 1e-12 relative in the tests).

Dask (``pip install 'goldilocks-zone[dask]'``) is imported only when a function here is
called without a client; threaded workers (``processes=False``) take turns on the forward-mode
passes (torch's forward AD is process-global), so use worker processes for speed. Any object
with the ``scatter`` / ``submit`` / ``gather`` methods of ``dask.distributed.Client`` works.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from goldilocks_zone.curvature.batches import Batch, count_samples, take_samples
from goldilocks_zone.curvature.estimators import (
    HessianEigenpairs,
    StochasticEstimate,
    _check_term,
    hessian_vector_product,
    hutchinson_estimate,
    hutchpp,
    lanczos,
)
from goldilocks_zone.curvature.subspace import TERMS, SubspaceCurvature, subspace_curvature

Shard = Batch | Iterable[Batch]

#: torch's forward-mode AD keeps its dual level in process-global state, so two threads of one
#: process must not run ``jvp`` at the same time; tasks of one worker process take turns
#: (worker *processes* — Dask's default — still run in parallel).
_FORWARD_AD_LOCK = threading.Lock()


def _client(client):
    if client is not None:
        return client
    try:
        from dask.distributed import get_client
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("distributed curvature needs dask.distributed: pip install "
                          "'goldilocks-zone[dask]', or pass client=") from err
    try:
        return get_client()
    except ValueError as err:
        raise ValueError("no Dask client: pass client=Client(...) (e.g. "
                         "Client(LocalCluster(n_workers=2)))") from err


def _check_shards(shards) -> list:
    if isinstance(shards, tuple) and len(shards) == 2 and all(
            isinstance(t, Tensor) for t in shards):
        raise TypeError("shards must be a list of data pieces, e.g. [(x1, y1), (x2, y2)]; "
                        "got a single (inputs, targets) pair — wrap it in a list")
    shards = list(shards)
    if not shards:
        raise ValueError("shards is empty: give at least one (inputs, targets) piece")
    return shards


def _weighted_sum(parts: Sequence[Tensor | None], weights: Sequence[int],
                  total: int) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    out = torch.zeros_like(parts[0], dtype=torch.float64)
    for p, w in zip(parts, weights):
        out += p.to(torch.float64) * w
    return out / total


def combine_subspace_curvatures(parts: Sequence[SubspaceCurvature]) -> SubspaceCurvature:
    r"""Merge measurements of disjoint data shards (same model, basis, scale, temperature)
    into the measurement of their union: every matrix and mean is
    :math:`\frac1S\sum_k n_k M_k` with :math:`S = \sum_k n_k`; ``split_residual`` is
    recomputed from the merged matrices."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to combine: parts is empty")
    first = parts[0]
    for p in parts[1:]:
        if (p.dim, p.scale, p.temperature, p.terms) != (first.dim, first.scale,
                                                        first.temperature, first.terms):
            raise ValueError("parts disagree on dim, scale, temperature or terms; they must "
                             "be shards of one measurement")
    weights = [p.num_samples for p in parts]
    total = sum(weights)

    def merge(name: str) -> Tensor | None:
        return _weighted_sum([getattr(p, name) for p in parts], weights, total)

    hessian, g_term, h_term = merge("hessian"), merge("g_term"), merge("h_term")
    h_direct = merge("h_term_direct")
    residual = None
    if h_direct is not None and hessian is not None and g_term is not None:
        denom = float(torch.linalg.matrix_norm(hessian))
        num = float(torch.linalg.matrix_norm(hessian - g_term - h_direct))
        residual = num / denom if denom > 0 else num
    loss = sum(p.loss * w for p, w in zip(parts, weights)) / total
    correct = sum(round(p.accuracy * w) for p, w in zip(parts, weights))
    matrices = [m for m in (hessian, g_term, h_term) if m is not None]
    finite = (all(p.finite for p in parts) and math.isfinite(loss)
              and all(bool(torch.isfinite(m).all()) for m in matrices))
    return replace(first, hessian=hessian, g_term=g_term, h_term=h_term, loss=loss,
                   num_samples=total, accuracy=correct / total,
                   projected_gradient=merge("projected_gradient"),
                   mean_probs=merge("mean_probs"), class_prior=merge("class_prior"),
                   finite=finite, h_term_direct=h_direct, split_residual=residual)


def _shard_curvature(model, shard, basis, kwargs):
    with _FORWARD_AD_LOCK:
        return subspace_curvature(model, shard, basis, **kwargs)


def distributed_subspace_curvature(model: nn.Module, shards: Sequence[Shard], basis: Tensor,
                                   *, client=None, terms: Iterable[str] = TERMS,
                                   verify_split: bool = False,
                                   **kwargs) -> SubspaceCurvature:
    r""":func:`subspace_curvature` of the union of ``shards`` (a list of ``(inputs, targets)``
    pairs or of iterables of pairs), one Dask task per shard.

    ``client``: a ``dask.distributed.Client`` (default: the current one). ``kwargs``:
    temperature, scale, params, batch_size, train_mode, as for :func:`subspace_curvature`.
    Equal to the single-process result on the concatenated data up to float64 summation
    order. Validation runs on the driver on the first shard's first samples before any
    task is submitted.
    """
    shards = [s for s in _check_shards(shards) if count_samples(s) > 0]
    if not shards:
        raise ValueError("data is empty: every shard has zero samples")
    client = _client(client)
    terms = tuple(terms)
    # Fail fast on the driver (bad basis, terms or kwargs) with two samples of one shard.
    subspace_curvature(model, take_samples(shards[0], 2), basis, terms=terms,
                       verify_split=verify_split, **kwargs)
    kw = dict(kwargs, terms=terms, verify_split=verify_split)
    model_f, basis_f = client.scatter([model, basis], broadcast=True)
    shard_fs = client.scatter(shards)
    futures = [client.submit(_shard_curvature, model_f, s, basis_f, kw, pure=False)
               for s in shard_fs]
    parts = client.gather(futures)
    return combine_subspace_curvatures(parts)


def _shard_hvp(model, shard, vectors, term, kwargs):
    n = count_samples(shard)
    if n == 0:
        return None, 0
    with _FORWARD_AD_LOCK:
        hvp = hessian_vector_product(model, shard, vectors, term=term, **kwargs)
    return hvp.cpu() * n, n


class ShardedOperator:
    r"""The full-space Hessian (or G-/H-term) of the mean cross-entropy over all ``shards``
    as a matvec: :math:`A v = \frac1S\sum_k n_k A_k v`, each :math:`A_k v` computed by
    :func:`hessian_vector_product` on one worker. The model and shards are sent to the
    workers once; each product sends only the vectors. Call with (D,) or (D, m)."""

    def __init__(self, model: nn.Module, shards: Sequence[Shard], *, client=None,
                 term: str = "hessian", **kwargs):
        _check_term(term)
        shards = _check_shards(shards)
        self.client = _client(client)
        self.term = term
        self.kwargs = kwargs
        self.dim = sum(p.numel() for p in model.parameters()
                       if p.requires_grad or not kwargs.get("trainable_only", True))
        self._model = self.client.scatter(model, broadcast=True)
        self._shards = self.client.scatter(shards)

    def __call__(self, vectors: Tensor) -> Tensor:
        v_f = self.client.scatter(vectors.detach().cpu(), broadcast=True)
        futures = [self.client.submit(_shard_hvp, self._model, s, v_f, self.term, self.kwargs,
                                      pure=False) for s in self._shards]
        results = self.client.gather(futures)
        total = sum(n for _, n in results)
        if total == 0:
            raise ValueError("data is empty: every shard has zero samples")
        out = torch.zeros(vectors.shape, dtype=torch.float64)
        for part, n in results:
            if n:
                out += part
        return out / total


def distributed_hutchinson(model: nn.Module, shards: Sequence[Shard], *, client=None,
                           kind: str = "trace", term: str = "hessian", num_probes: int = 64,
                           seed: int | None = 0, **kwargs) -> StochasticEstimate:
    """:func:`hutchinson_estimate` (trace or Frobenius norm) on the operator summed over
    shards; with the same ``seed`` it equals :func:`hutchinson_trace` /
    :func:`hutchinson_frobenius` on the concatenated data."""
    op = ShardedOperator(model, shards, client=client, term=term, **kwargs)
    return hutchinson_estimate(op, op.dim, kind=kind, num_probes=num_probes, seed=seed)


def distributed_hutchpp(model: nn.Module, shards: Sequence[Shard], *, client=None,
                        kind: str = "trace", term: str = "hessian", num_matvecs: int = 66,
                        seed: int | None = 0, **kwargs) -> StochasticEstimate:
    """:func:`hutchpp` (trace or Frobenius norm) on the operator summed over shards."""
    op = ShardedOperator(model, shards, client=client, term=term, **kwargs)
    return hutchpp(op, op.dim, kind=kind, num_matvecs=num_matvecs, seed=seed)


def distributed_top_eigenpairs(model: nn.Module, shards: Sequence[Shard], k: int = 1, *,
                               client=None, term: str = "hessian", which: str = "largest",
                               max_iterations: int = 100, tol: float = 1e-8,
                               seed: int | None = 0, **kwargs) -> HessianEigenpairs:
    """:func:`lanczos` top-k eigenpairs of the operator summed over shards (as
    :func:`hessian_top_eigenpairs` on the concatenated data)."""
    op = ShardedOperator(model, shards, client=client, term=term, **kwargs)
    return lanczos(op, op.dim, k, which=which, max_iterations=max_iterations, tol=tol,
                   seed=seed)
