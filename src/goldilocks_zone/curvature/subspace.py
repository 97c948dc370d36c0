r"""The cross-entropy Hessian restricted to a random subspace, and its Gauss-Newton split.

For a basis :math:`R \in \mathbb{R}^{D\times d}` and logits :math:`z_s = f(x_s;\theta)/T`,
one pass over the data computes, chunk by chunk and summed over samples (divided by the number
of samples S at the end, never by the number of chunks):

- :math:`H_R = R^\top \nabla^2 L\, R` by forward-over-reverse differentiation: ``vmap`` over the
  d columns of R of ``jvp`` (along :math:`r_j`) of the reverse-mode gradient, projected on R
  inside the differentiated function so only d×d numbers leave each chunk;
- the projected logit Jacobians :math:`J_s R / T` (the tangents of the logits in the same
  pass, at no extra cost) and from them the G-term
  :math:`G_R = \frac1S \sum_s (J_sR/T)^\top (\mathrm{diag}\,p_s - p_s p_s^\top)(J_sR/T)`;
- the H-term :math:`H_R - G_R`, or with ``verify_split=True`` also directly as the Hessian of
  :math:`\frac1S\sum_s \mathrm{sg}(p_s - y_s)\cdot z_s` (sg = stop-gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from goldilocks_zone.curvature.batches import Batch, BatchStatistics, chunks
from goldilocks_zone.curvature.functional import (
    Evaluator,
    FunctionalModel,
    Params,
    check_basis,
    unflatten,
)
from goldilocks_zone.curvature.spectrum import SpectrumStats, spectrum_stats

TERMS = ("hessian", "g_term", "h_term")


@dataclass(frozen=True)
class SubspaceCurvature:
    r"""Curvature of the mean cross-entropy on the subspace :math:`\theta + R u`.

    ``hessian``, ``g_term``, ``h_term``: symmetric d×d float64 CPU tensors, with
    ``hessian = g_term + h_term`` (``h_term`` is the difference unless ``verify_split``).
    ``h_term_direct`` and ``split_residual`` =
    :math:`\|H - (G + H_{direct})\|_F / \|H\|_F` are set with ``verify_split=True``.
    ``projected_gradient``: :math:`R^\top \nabla L` (d,). ``mean_probs``: :math:`\bar p`, the
    mean softmax output (K,); ``class_prior``: q, the label frequencies (K,).
    ``finite`` is False when the loss or a matrix is non-finite (e.g. overflow at an extreme
    scale): the values are then returned as they are (inf/NaN), not raised.
    """

    hessian: Tensor
    g_term: Tensor
    h_term: Tensor
    loss: float
    num_samples: int
    accuracy: float
    projected_gradient: Tensor
    mean_probs: Tensor
    class_prior: Tensor
    scale: float
    temperature: float
    finite: bool
    h_term_direct: Tensor | None = None
    split_residual: float | None = None

    @property
    def dim(self) -> int:
        return self.hessian.shape[0]

    def matrix(self, term: str) -> Tensor:
        if term not in TERMS:
            raise ValueError(f"unknown term {term!r}; choose one of {TERMS}")
        return getattr(self, term)

    def stats(self, term: str = "hessian") -> SpectrumStats:
        """:func:`spectrum_stats` of ``hessian``, ``g_term`` or ``h_term``."""
        return spectrum_stats(self.matrix(term))

    @property
    def prior_mismatch(self) -> float:
        r""":math:`\|q - \bar p\|_2`, the quantity that controls the gradient (P1 Eq. 10)."""
        return float(torch.linalg.vector_norm(self.class_prior - self.mean_probs))


def _project(basis_dict: Params, grads: Params) -> Tensor:
    """:math:`R^\\top g` for a parameter-shaped ``grads`` and ``basis_dict[name]: (d, *shape)``."""
    return sum(torch.tensordot(basis_dict[k], g, dims=g.ndim) for k, g in grads.items())


def softmax_residual(z: Tensor, y: Tensor) -> Tensor:
    r""":math:`p - y` (B, K) for logits z and class indices y, accurate when the softmax
    saturates: the true class's entry is :math:`-\sum_{k\neq y} p_k` rather than
    :math:`p_y - 1` (which rounds to 0 long before the true value underflows)."""
    probs = torch.softmax(z, dim=-1)
    is_true = F.one_hot(y, z.shape[-1]).to(torch.bool)
    others = probs.masked_fill(is_true, 0.0).sum(-1, keepdim=True)
    return torch.where(is_true, -others, probs)


def gauss_newton_product(zt: Tensor, probs: Tensor) -> Tensor:
    r""":math:`\sum_s A_s^\top (\mathrm{diag}\,p_s - p_s p_s^\top) A_s` (d, d) for logit
    tangents ``zt`` (d, B, K), ``zt[i, s, k]`` = entry ``(k, i)`` of :math:`A_s = J_s R`
    (``K x d``), and softmax outputs ``probs`` (B, K); a sum over samples, not a mean.

    Uses the centred (weighted-covariance) form
    :math:`\sum_k p_k (a_k - \bar a)(a_k - \bar a)^\top`, :math:`\bar a = \sum_k p_k a_k`
    (:math:`a_k` = row ``k`` of :math:`A_s`), which has no cancellation when the softmax
    saturates and is PSD by construction. No ``K x K`` matrices are formed."""
    centred = zt - (zt * probs).sum(-1, keepdim=True)  # (d, B, K)
    return torch.einsum("ibk,jbk->ij", centred * probs, centred)


def _chunk_pass(ev: Evaluator, x: Tensor, y: Tensor, basis_dict: Params,
                cotangent: Tensor | None = None):
    """One chunk: summed projected Hessian, projected gradient, logit tangents and logits.

    With ``cotangent`` (B, K) given, differentiate the fixed linear functional
    ``cotangent · z`` instead of the loss (the direct H-term).
    """
    def grad_and_logits(params: Params):
        z, pullback = vjp(lambda q: ev.logits(q, x), params)
        if cotangent is None:
            dz = softmax_residual(z, y)
        else:
            dz = cotangent
        (g,) = pullback(dz)
        return _project(basis_dict, g), z

    def along(tangent: Params):
        (proj, z), (proj_t, z_t) = jvp(grad_and_logits, (ev.params,), (tangent,))
        return proj_t, z_t, proj, z

    return vmap(along, out_dims=(0, 0, None, None))(basis_dict)


def subspace_curvature(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                       temperature: float = 1.0, scale: float = 1.0,
                       params: Params | None = None, batch_size: int | None = None,
                       verify_split: bool = False, train_mode: bool = False,
                       trainable_only: bool = True, output: Callable | None = None
                       ) -> SubspaceCurvature:
    r"""Hessian, G-term and H-term of the mean cross-entropy restricted to span(basis).

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (batch, K). It is
            evaluated functionally and left unchanged (values, ``requires_grad``, mode).
        data: ``(inputs, targets)`` (inputs a tensor, tuple or dict of tensors), a dict
            batch with ``"labels"``, a Dataset, or an iterable of such batches (a
            DataLoader); see :mod:`.batches`. The loss is the mean over *all samples*.
        basis: (D, d), rows in ``parameters_to_vector(model.parameters())`` order, same dtype
            and device as the model (see :func:`random_basis`).
        temperature: T > 0; logits are divided by T.
        scale: every parameter is multiplied by ``scale`` (derivatives are taken at
            ``scale * theta``).
        params: optional dict name -> tensor replacing the model's parameters.
        batch_size: chunk size (default ``DEFAULT_BATCH_SIZE``); memory does not grow with
            the number of samples.
        verify_split: also compute the H-term directly and report ``split_residual``.
        train_mode: evaluate in train mode (BatchNorm uses the statistics of each batch as
            given, never re-chunked; not allowed with dropout). Default: eval mode.
        trainable_only: differentiate only parameters with ``requires_grad`` (default); the
            basis has one row per such parameter entry.
        output: optional callable picking the logits from the model's output (default rule:
            tensor, first tensor of a tuple, ``"logits"`` of a dict, ``.logits``).

    Returns a :class:`SubspaceCurvature` with float64 CPU tensors.
    """
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    check_basis(basis, ev)
    basis_dict = unflatten(basis, ev.params)  # name -> (d, *shape)
    d = basis.shape[1]
    acc = torch.zeros(d, d, dtype=torch.float64)
    hessian = acc.clone()
    g_term = acc.clone()
    h_direct = acc.clone() if verify_split else None
    grad = torch.zeros(d, dtype=torch.float64)
    stats = BatchStatistics()

    with ev.mode(), torch.no_grad():
        for x, y in chunks(data, ev, batch_size):
            with torch.enable_grad():
                h_t, z_t, proj, z = _chunk_pass(ev, x, y, basis_dict)
            logp = torch.log_softmax(z, dim=-1)
            probs = logp.exp()
            hessian += h_t.to(torch.float64).cpu()
            g_term += gauss_newton_product(z_t, probs).to(torch.float64).cpu()
            grad += proj.to(torch.float64).cpu()
            stats.add(z, y)
            if verify_split:
                cot = softmax_residual(z, y).detach()
                with torch.enable_grad():
                    hd_t, *_ = _chunk_pass(ev, x, y, basis_dict, cotangent=cot)
                h_direct += hd_t.to(torch.float64).cpu()
    num_samples = stats.num_samples

    def finish(m: Tensor) -> Tensor:
        m = m / num_samples
        return 0.5 * (m + m.T)

    hessian, g_term = finish(hessian), finish(g_term)
    h_term = hessian - g_term
    residual = None
    if h_direct is not None:
        h_direct = finish(h_direct)
        denom = float(torch.linalg.matrix_norm(hessian))
        num = float(torch.linalg.matrix_norm(hessian - g_term - h_direct))
        residual = num / denom if denom > 0 else num
    loss = stats.loss
    finite = math.isfinite(loss) and bool(torch.isfinite(hessian).all()) and bool(
        torch.isfinite(g_term).all())
    return SubspaceCurvature(
        hessian=hessian, g_term=g_term, h_term=h_term, loss=loss, num_samples=num_samples,
        accuracy=stats.accuracy, projected_gradient=grad / num_samples,
        mean_probs=stats.mean_probs, class_prior=stats.class_prior,
        scale=float(scale), temperature=float(temperature), finite=finite,
        h_term_direct=h_direct, split_residual=residual,
    )


@dataclass(frozen=True)
class ProjectedJacobians:
    r"""Per-sample projected logit Jacobians :math:`J_s R / T` (S, K, d), softmax outputs
    :math:`p_s` (S, K) and targets (S,), float64 on the CPU."""

    jacobians: Tensor
    probs: Tensor
    targets: Tensor


def _logit_tangents(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                    scale: float, temperature: float, params: Params | None,
                    batch_size: int | None, train_mode: bool, trainable_only: bool,
                    output: Callable | None):
    """Yield ``(z, z_t, y)`` per chunk: logits (B, K) and their tangents (d, B, K) along the
    basis columns, by forward mode (``vmap`` over the d directions of ``jvp``)."""
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    check_basis(basis, ev)
    basis_dict = unflatten(basis, ev.params)
    with ev.mode(), torch.no_grad():
        for x, y in chunks(data, ev, batch_size):

            def along(tangent: Params, x=x):
                return jvp(lambda q: ev.logits(q, x), (ev.params,), (tangent,))

            z, z_t = vmap(along, out_dims=(None, 0))(basis_dict)
            yield z, z_t, y


def projected_logit_jacobians(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor,
                              *, scale: float = 1.0, temperature: float = 1.0,
                              params: Params | None = None, batch_size: int | None = None,
                              train_mode: bool = False, trainable_only: bool = True,
                              output: Callable | None = None
                              ) -> ProjectedJacobians:
    """:math:`J_s R / T` for every sample: cost ≈ d forward passes, no loop over samples or
    classes. Memory grows with S×K×d (use :func:`subspace_g_term` for the G-term alone)."""
    jacs, probs, targets = [], [], []
    for z, z_t, y in _logit_tangents(model, data, basis, scale=scale, temperature=temperature,
                                     params=params, batch_size=batch_size,
                                     train_mode=train_mode, trainable_only=trainable_only,
                                     output=output):
        jacs.append(z_t.permute(1, 2, 0).to(torch.float64).cpu())
        probs.append(torch.softmax(z, -1).to(torch.float64).cpu())
        targets.append(y.cpu())
    if not jacs:
        raise ValueError("data is empty")
    return ProjectedJacobians(torch.cat(jacs), torch.cat(probs), torch.cat(targets))


def subspace_g_term(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                    scale: float = 1.0, temperature: float = 1.0, params: Params | None = None,
                    batch_size: int | None = None, train_mode: bool = False,
                    trainable_only: bool = True, output: Callable | None = None) -> Tensor:
    r"""The G-term :math:`G_R` alone (d×d float64), by forward mode only (≈ d forward passes):
    cheaper than :func:`subspace_curvature` when the H-term is not needed."""
    total, n = None, 0
    for z, z_t, y in _logit_tangents(model, data, basis, scale=scale, temperature=temperature,
                                     params=params, batch_size=batch_size,
                                     train_mode=train_mode, trainable_only=trainable_only,
                                     output=output):
        g = gauss_newton_product(z_t, torch.softmax(z, -1)).to(torch.float64).cpu()
        total = g if total is None else total + g
        n += y.shape[0]
    if total is None:
        raise ValueError("data is empty")
    total = total / n
    return 0.5 * (total + total.T)
