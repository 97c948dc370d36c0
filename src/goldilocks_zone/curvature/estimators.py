r"""Full-space curvature for models too large for the subspace view.

Hessian-vector products (Hessian, G-term or H-term) by forward-over-reverse / Jacobian-vector
products over data chunks; the loss gradient; Hutchinson estimates of the trace and Frobenius
norm with standard errors; top eigenpairs by Lanczos with full reorthogonalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from goldilocks_zone.curvature.batches import Batch, check_positive_int, chunks
from goldilocks_zone.curvature.functional import (
    FunctionalModel,
    Params,
    check_basis,
    flatten,
    flatten_rows,
    unflatten,
)
from goldilocks_zone.curvature.lanczos import lanczos_iteration
from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.curvature.subspace import TERMS, softmax_residual

#: Probe vectors pushed through one vmapped Hessian-vector product.
PROBE_BLOCK = 8


def _check_term(term: str) -> None:
    if term not in TERMS:
        raise ValueError(f"unknown term {term!r}; choose one of {TERMS}")


def _chunk_hvp(ev: FunctionalModel, x: Tensor, y: Tensor, vdict: Params, term: str) -> Params:
    """Summed (not averaged) curvature-matrix products on one chunk; vdict: {name: (m, ...)}."""

    def logits(p: Params) -> Tensor:
        return ev.logits(p, x)

    z, pullback = vjp(logits, ev.params)
    probs = torch.softmax(z, -1)
    out: dict[str, Params] = {}
    if term in ("hessian", "h_term"):
        def grad(p: Params) -> Params:
            zz, pb = vjp(logits, p)
            return pb(softmax_residual(zz, y))[0]

        out["hessian"] = vmap(lambda t: jvp(grad, (ev.params,), (t,))[1])(vdict)
    if term in ("g_term", "h_term"):
        zt = vmap(lambda t: jvp(logits, (ev.params,), (t,))[1])(vdict)  # (m, B, K)
        mz = probs * (zt - (probs * zt).sum(-1, keepdim=True))  # (diag p - p p^T) J v
        out["g_term"] = vmap(lambda c: pullback(c)[0])(mz)
    if term == "h_term":
        return {k: out["hessian"][k] - out["g_term"][k] for k in out["hessian"]}
    return out[term]


def hessian_vector_product(model: nn.Module, data: Batch | Iterable[Batch], vectors: Tensor,
                           *, term: str = "hessian", scale: float = 1.0,
                           temperature: float = 1.0, params: Params | None = None,
                           batch_size: int | None = None, train_mode: bool = False,
                           trainable_only: bool = True, output: Callable | None = None) -> Tensor:
    r""":math:`A v` for A the full-space Hessian, G-term or H-term of the mean cross-entropy.

    ``vectors``: (D,) or (D, m) in ``parameters_to_vector`` order (any float dtype; computed in
    the model's dtype). Returns float64 of the same shape, on the model's device.
    """
    _check_term(term)
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    return _hvp(ev, data, vectors, term, batch_size)


def _hvp(ev: FunctionalModel, data, vectors: Tensor, term: str, batch_size: int | None) -> Tensor:
    """:func:`hessian_vector_product` with the functional model built by the caller."""
    if not isinstance(vectors, Tensor):
        raise TypeError(f"vectors must be a tensor (D,) or (D, m), got "
                        f"{type(vectors).__name__}")
    single = vectors.ndim == 1
    v = vectors[:, None] if single else vectors
    if v.ndim != 2 or v.shape[0] != ev.num_params or v.shape[1] == 0:
        raise ValueError(f"vectors must have shape (D,) or (D, m) with D = {ev.num_params} "
                         f"(trainable parameters) and m >= 1, got {tuple(vectors.shape)}")
    v = v.to(dtype=ev.dtype, device=ev.device)
    vdict = unflatten(v, ev.params)
    total = torch.zeros(v.shape, dtype=torch.float64, device=ev.device)
    n = 0
    with ev.mode(), torch.no_grad(), torch.enable_grad():
        for x, y in chunks(data, ev, batch_size):
            total += flatten_rows(_chunk_hvp(ev, x, y, vdict, term)).T.to(torch.float64)
            n += y.shape[0]
    total /= n
    return total[:, 0] if single else total


def loss_gradient(model: nn.Module, data: Batch | Iterable[Batch], *,
                  basis: Tensor | None = None, scale: float = 1.0, temperature: float = 1.0,
                  params: Params | None = None, batch_size: int | None = None,
                  train_mode: bool = False, trainable_only: bool = True,
                  output: Callable | None = None) -> Tensor:
    r""":math:`\nabla L = \frac{1}{ST}\sum_s J_s^\top (p_s - y_s)` in full space (D,), or
    projected :math:`R^\top \nabla L` (d,) when ``basis`` is given. float64."""
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    if basis is not None:
        check_basis(basis, ev)
    total = None
    n = 0
    with ev.mode(), torch.no_grad(), torch.enable_grad():
        for x, y in chunks(data, ev, batch_size, forward_mode=False):
            z, pullback = vjp(lambda p, x=x: ev.logits(p, x), ev.params)
            dz = softmax_residual(z, y)
            g = flatten(pullback(dz)[0]).to(torch.float64)
            total = g if total is None else total + g
            n += y.shape[0]
    grad = total / n
    if basis is None:
        return grad
    return basis.to(device=grad.device, dtype=torch.float64).T @ grad


@dataclass(frozen=True)
class StochasticEstimate:
    """A Monte-Carlo estimate: ``value`` ± ``std_error`` from ``num_probes`` probes."""

    value: float
    std_error: float
    num_probes: int
    samples: Tensor


def _rademacher(dim: int, count: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (dim, count), generator=gen).to(torch.float64) * 2 - 1


def _operator(model: nn.Module, data, term: str, kwargs: dict
              ) -> tuple[Callable[[Tensor], Tensor], int]:
    """``v -> A v`` with the functional model built once, and the dimension D."""
    _check_term(term)
    known = {"scale", "temperature", "params", "batch_size", "train_mode", "trainable_only",
             "output"}
    if set(kwargs) - known:
        raise TypeError(f"unexpected keyword argument(s) {sorted(set(kwargs) - known)}; "
                        f"accepted: {sorted(known)}")
    batch_size = kwargs.pop("batch_size", None)
    ev = FunctionalModel(model, **kwargs)
    if isinstance(data, Iterator):  # the operator passes over the data once per product
        raise TypeError("this function passes over the data several times; give a tensor "
                        "pair, a list of batches, a Dataset or a DataLoader, not a one-shot "
                        "iterator/generator")
    return (lambda v: _hvp(ev, data, v, term, batch_size)), ev.num_params


def _hutchinson(model, data, term, kind, num_probes, seed, kwargs) -> StochasticEstimate:
    _check_term(term)
    check_positive_int("num_probes", num_probes)
    matvec, dim = _operator(model, data, term, dict(kwargs))
    return hutchinson_estimate(matvec, dim, kind=kind, num_probes=num_probes, seed=seed)


def hutchinson_trace(model: nn.Module, data: Batch | Iterable[Batch], *,
                     term: str = "hessian", num_probes: int = 64, seed: int | None = 0,
                     **kwargs) -> StochasticEstimate:
    r"""Hutchinson's estimate :math:`\mathrm{Tr}A \approx \frac1m\sum_i v_i^\top A v_i` with
    Rademacher probes; standard error = sample std / √m. ``kwargs``: scale, temperature,
    params, batch_size, train_mode."""
    return _hutchinson(model, data, term, "trace", num_probes, seed, kwargs)


def hutchinson_frobenius(model: nn.Module, data: Batch | Iterable[Batch], *,
                         term: str = "hessian", num_probes: int = 64, seed: int | None = 0,
                         **kwargs) -> StochasticEstimate:
    r""":math:`\|A\|_F = \sqrt{\mathbb E\|Av\|^2}` with Rademacher probes. ``samples`` holds
    :math:`\|Av_i\|^2`; the standard error of the norm follows by the delta method,
    :math:`\mathrm{se}(\|A\|_F) = \mathrm{se}(\|A\|_F^2) / (2\|A\|_F)`."""
    return _hutchinson(model, data, term, "frobenius", num_probes, seed, kwargs)


def _estimate(samples: Tensor) -> StochasticEstimate:
    m = samples.numel()
    se = float(samples.std(unbiased=True)) / math.sqrt(m) if m > 1 else math.inf
    return StochasticEstimate(float(samples.mean()), se, m, samples)


@dataclass(frozen=True)
class HessianEigenpairs:
    """Eigenpairs from Lanczos: ``eigenvalues`` (k,), ``eigenvectors`` (D, k) float64,
    ``residuals`` ‖Av − λv‖ (k,), ``converged`` (all relative residuals ≤ tol) and the number of
    Lanczos ``iterations``."""

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: bool
    iterations: int


def lanczos(matvec: Callable[[Tensor], Tensor], dim: int, k: int = 1, *,
            which: str = "largest", max_iterations: int = 100, tol: float = 1e-8,
            seed: int | None = 0, batched: bool = False) -> HessianEigenpairs:
    r"""k extreme eigenpairs of a symmetric operator given by ``matvec`` ((dim,) -> (dim,),
    float64) by Lanczos with full reorthogonalisation. ``batched=True`` says that ``matvec``
    also maps (dim, m) -> (dim, m) (as :func:`hessian_vector_product` does): the k exact
    residual products are then one call.

    ``which="largest"``: largest algebraic eigenvalues (descending); ``"magnitude"``: largest
    ``|λ|``. Stops when the Ritz residual estimates :math:`|\beta_m s_{m,i}|` of the wanted
    pairs fall below ``tol * max|θ|``; the returned residuals are recomputed exactly.
    """
    if which not in ("largest", "magnitude"):
        raise ValueError("which must be 'largest' or 'magnitude'")
    if k < 1 or k > dim:
        raise ValueError(f"k must be in [1, {dim}], got {k}")
    steps = min(dim, max(max_iterations, k + 1))
    v = torch.randn(dim, generator=torch_generator(seed), dtype=torch.float64)
    v = (v / v.norm())[:, None]
    for state in lanczos_iteration(lambda x: matvec(x[:, 0])[:, None], v, steps):
        theta, s = torch.linalg.eigh(state.tridiagonal()[0])
        order = (torch.argsort(theta, descending=True) if which == "largest"
                 else torch.argsort(theta.abs(), descending=True))[:k]
        ritz_vals, ritz_vecs = theta[order], s[:, order]
        beta = float(state.beta[0])
        top = float(theta.abs().max()) or 1.0
        if state.j + 1 >= k and bool(((beta * ritz_vecs[-1, :]).abs() <= tol * top).all()):
            break
        if beta <= 1e-13 * top or not bool(state.alive[0]):
            break  # invariant subspace found
    vs = state.basis[:, :, 0]
    vectors = vs.T @ ritz_vecs.to(vs.device)
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    if batched:
        av = matvec(vectors).to(torch.float64)
    else:
        av = torch.stack([matvec(vectors[:, i]).to(torch.float64)
                          for i in range(vectors.shape[1])], dim=1)
    residuals = (av - vectors * ritz_vals.to(vectors.device)).norm(dim=0).cpu()
    scale = float(ritz_vals.abs().max()) or 1.0
    return HessianEigenpairs(
        eigenvalues=ritz_vals.cpu(), eigenvectors=vectors, residuals=residuals,
        converged=bool((residuals <= max(tol, 1e-12) * scale * 10).all()),
        iterations=vs.shape[0],
    )


def hessian_top_eigenpairs(model: nn.Module, data: Batch | Iterable[Batch], k: int = 1, *,
                           term: str = "hessian", which: str = "largest",
                           max_iterations: int = 100, tol: float = 1e-8,
                           seed: int | None = 0, **kwargs) -> HessianEigenpairs:
    """Top-k eigenpairs of the full-space Hessian (or G-/H-term) by :func:`lanczos` on
    :func:`hessian_vector_product`. ``kwargs``: scale, temperature, params, batch_size,
    train_mode. Eigenvectors are (D, k) float64 in ``parameters_to_vector`` order."""
    matvec, dim = _operator(model, data, term, dict(kwargs))
    return lanczos(matvec, dim, k, which=which, max_iterations=max_iterations, tol=tol,
                   seed=seed, batched=True)


# ------------------------------------------------------------- matvec-based trace estimators


def _check_kind(kind: str) -> None:
    if kind not in ("trace", "frobenius"):
        raise ValueError(f"kind must be 'trace' or 'frobenius', got {kind!r}")


def _frobenius_from_square(sq_value: float, sq_se: float, num: int,
                           samples: Tensor) -> StochasticEstimate:
    """:math:`\\|A\\|_F` from an estimate of :math:`\\|A\\|_F^2` (delta-method error)."""
    value = math.sqrt(max(sq_value, 0.0))
    se = sq_se / (2 * value) if value > 0 else math.inf
    return StochasticEstimate(value, se, num, samples)


def hutchinson_estimate(matvec: Callable[[Tensor], Tensor], dim: int, *,
                        kind: str = "trace", num_probes: int = 64,
                        seed: int | None = 0) -> StochasticEstimate:
    r"""Hutchinson's estimate of :math:`\mathrm{Tr}A` (``kind="trace"``) or
    :math:`\|A\|_F` (``kind="frobenius"``) for a symmetric operator given by a block
    ``matvec`` ((dim, m) -> (dim, m)), with ``num_probes`` Rademacher probes pushed
    ``PROBE_BLOCK`` at a time. Same estimator as :func:`hutchinson_trace` /
    :func:`hutchinson_frobenius`, for any operator (e.g. one summed over data shards)."""
    _check_kind(kind)
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    gen = torch_generator(seed)
    parts = []
    for start in range(0, num_probes, PROBE_BLOCK):
        v = _rademacher(dim, min(PROBE_BLOCK, num_probes - start), gen)
        av = matvec(v).to(torch.float64).cpu()
        parts.append((v * av).sum(0) if kind == "trace" else (av * av).sum(0))
    est = _estimate(torch.cat(parts))
    if kind == "trace":
        return est
    return _frobenius_from_square(est.value, est.std_error, est.num_probes, est.samples)


def hutchpp(matvec: Callable[[Tensor], Tensor], dim: int, *, kind: str = "trace",
            num_matvecs: int = 66, seed: int | None = 0) -> StochasticEstimate:
    r"""Hutch++ estimate of :math:`\mathrm{Tr}A` or :math:`\|A\|_F` for a symmetric operator
    given by a block ``matvec`` ((dim, m) -> (dim, m), float64), using ``num_matvecs``
    products in all.

    With k = ``num_matvecs // 3`` sketch columns and l = ``num_matvecs - 2k`` probes:
    draw a Rademacher sketch S (dim, k) and take Q = orth(A S) (k products); the part of A
    on span(Q) is computed exactly and only the rest is sampled with Rademacher probes
    :math:`g_i` (l products):

    - trace: :math:`\mathrm{Tr}(Q^\top A Q) + \frac1l\sum_i g_i^\top (I-QQ^\top) A
      (I-QQ^\top) g_i` (Q^T A Q costs k products);
    - Frobenius: :math:`\|A\|_F^2 = \|AQ\|_F^2 + \|(I-QQ^\top)A\|_F^2` (A symmetric), the
      second part estimated by :math:`\frac1l\sum_i \|(I-QQ^\top) A g_i\|^2`.

    When a few eigenvalues dominate A, the sampled remainder is small and the variance is far
    below Hutchinson's at the same number of products. ``std_error`` is the sample standard
    deviation of the l residual samples / √l (the exact part adds none); for ``frobenius``
    it is carried to the norm by the delta method. ``samples``: the l residual samples.
    """
    _check_kind(kind)
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs num_matvecs >= 3 (a third each for the sketch, its "
                         f"exact part and the probes), got {num_matvecs}")
    k = min(num_matvecs // 3, dim)
    probes = num_matvecs - 2 * k
    gen = torch_generator(seed)
    sketch = _rademacher(dim, k, gen)
    q, _ = torch.linalg.qr(matvec(sketch).to(torch.float64).cpu())
    aq = matvec(q).to(torch.float64).cpu()
    g = _rademacher(dim, probes, gen)
    g_perp = g - q @ (q.T @ g)
    if kind == "trace":
        exact = float(torch.trace(q.T @ aq))
        a_g = matvec(g_perp).to(torch.float64).cpu()
        samples = (g_perp * a_g).sum(0)
        rest = _estimate(samples)
        return StochasticEstimate(exact + rest.value, rest.std_error, num_matvecs, samples)
    exact = float((aq * aq).sum())
    a_g = matvec(g).to(torch.float64).cpu()
    residual = a_g - q @ (q.T @ a_g)
    samples = (residual * residual).sum(0)
    rest = _estimate(samples)
    return _frobenius_from_square(exact + rest.value, rest.std_error, num_matvecs, samples)


def hutchpp_trace(model: nn.Module, data: Batch | Iterable[Batch], *, term: str = "hessian",
                  num_matvecs: int = 66, seed: int | None = 0,
                  **kwargs) -> StochasticEstimate:
    r""":func:`hutchpp` estimate of the trace of the full-space Hessian (or G-/H-term) of the
    mean cross-entropy. ``kwargs``: scale, temperature, params, batch_size, train_mode."""
    matvec, dim = _operator(model, data, term, dict(kwargs))
    return hutchpp(matvec, dim, kind="trace", num_matvecs=num_matvecs, seed=seed)


def hutchpp_frobenius(model: nn.Module, data: Batch | Iterable[Batch], *,
                      term: str = "hessian", num_matvecs: int = 66, seed: int | None = 0,
                      **kwargs) -> StochasticEstimate:
    r""":func:`hutchpp` estimate of :math:`\|A\|_F` for the full-space Hessian (or G-/H-term)
    of the mean cross-entropy. ``kwargs``: scale, temperature, params, batch_size,
    train_mode."""
    matvec, dim = _operator(model, data, term, dict(kwargs))
    return hutchpp(matvec, dim, kind="frobenius", num_matvecs=num_matvecs, seed=seed)
