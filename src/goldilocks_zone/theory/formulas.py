r"""P1's theory of the Goldilocks zone as pure functions on tensors.

Everything here works on quantities the curvature core already measures (softmax outputs
``probs`` of shape ``(S, K)`` and projected logit Jacobians ``J_s R`` of shape ``(S, K, d)``,
see :func:`goldilocks_zone.curvature.projected_logit_jacobians`) and returns tensors in the
input's dtype. No model is touched.

Notation (SCIENCE.md §1, §5): ``S`` samples, ``K`` classes, subspace dimension ``d``.

* Softmax Hessian of one sample: :math:`M_s = \operatorname{diag}(p_s) - p_s p_s^\top`
  (PSD, rank :math:`\le K-1`), and its sample mean :math:`\bar M = \frac1S \sum_s M_s`.
* :math:`\Gamma_p = \operatorname{Tr}\bar M / \|\bar M\|_F \in [1, \sqrt{K-1}]`; it equals
  :math:`\sqrt{K-1}` for uniform outputs and tends to 1 as the outputs become confident.
* Random model of the projected logit gradients: :math:`J_s R = C + E_s` with a logit-specific
  mean :math:`C \in \mathbb{R}^{K\times d}` (entries of variance :math:`\sigma_c^2`) and i.i.d.
  per-sample noise :math:`E_s` (entries of variance :math:`\sigma_E^2`).
* Expected G-term curvature (P1 Eq. 9):

  .. math::
     \kappa(\mathbb{E}\,G) \approx \frac{\sqrt d\,(\sigma_E^2 + \sigma_c^2)}
        {\sqrt{\sigma_E^4 + 2\sigma_E^2\sigma_c^2 + d\,\sigma_c^4/\Gamma_p^2}},

  with limits :math:`\sqrt d` (:math:`\sigma_c \to 0`) and :math:`\Gamma_p`
  (:math:`\sigma_E \to 0`). We use the *subspace* dimension ``d`` (the matrix whose curvature
  is measured is ``d x d``); the authors' notebook passes the full parameter count.
  *At saturation* (every output one-hot to floating-point precision, :math:`\bar M = 0`) the
  prediction is Eq. 9 with :math:`\Gamma_p = 1`, its limit along outputs becoming confident
  (:func:`gamma_p`). The measured :math:`G` is then the zero matrix (:math:`\kappa` reads 0):
  experiments mark such rows ``saturated`` (:func:`is_saturated`) and leave them out of
  comparisons. A tiny but non-zero :math:`G` is measured like any other (κ is scale-free).
* Estimator conventions (:func:`fit_random_model`): variances with divisor
  :math:`n - \text{ddof}` (``n = Kd`` entries of ``C``, ``n = SKd`` residual entries);
  ``ddof=0`` (default, maximum likelihood) or ``ddof=1`` (the authors' ``torch.std``), a factor
  :math:`n/(n-1)` apart (1.007 for ``K = 3``, ``d = 50``).
* Vanishing gradient (P1 Eq. 10): :math:`R^\top\nabla L \approx C^\top(\bar p - q)` plus noise
  of order :math:`\sigma_E\sqrt{d/S}`, so :math:`\|R^\top\nabla L\|` grows linearly in
  :math:`\|q - \bar p\|_2` with slope :math:`\sqrt d\,\sigma_c` (for a random ``C`` with i.i.d.
  entries, :math:`\mathbb{E}\|C^\top v\|^2 = d\,\sigma_c^2\|v\|^2`)
  (:func:`predicted_gradient_slope`). The authors' notebook draws :math:`d\,\sigma_c` (the
  same :math:`\sigma_c` of the projected Jacobians) against the *full* gradient norm
  :math:`\|\nabla L\|` (:func:`authors_gradient_slope`); docs/experiments.md derives both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from goldilocks_zone.curvature.subspace import gauss_newton_product

__all__ = [
    "RandomModelFit",
    "expected_g_curvature",
    "expected_projected_gradient",
    "fit_random_model",
    "gamma_p",
    "gauss_newton_from_jacobians",
    "authors_gradient_slope",
    "gradient_noise_scale",
    "is_saturated",
    "matrix_positive_curvature",
    "mean_softmax_covariance",
    "predicted_gradient_slope",
    "softmax_covariance",
]


def _check_probs(probs: Tensor, name: str = "probs", min_dim: int = 1) -> None:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.ndim < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) (..., K); "
                         f"got shape {tuple(probs.shape)}")
    if probs.shape[-1] < 2:
        raise ValueError(f"{name} needs K >= 2 classes in its last dimension; got shape "
                         f"{tuple(probs.shape)}")


def _complement(probs: Tensor) -> Tensor:
    r""":math:`1 - p_k` for each entry, accurate for confident outputs.

    Only the largest entry can exceed 1/2; for it ``1 - p`` would cancel catastrophically, so
    the sum of the other entries is used instead (all other ``1 - p_k`` are at least 1/2).
    """
    top = probs.argmax(dim=-1, keepdim=True)
    is_top = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, top, True)
    rest = torch.where(is_top, torch.zeros_like(probs), probs).sum(dim=-1, keepdim=True)
    return torch.where(is_top, rest, 1 - probs)


def _with_diagonal(matrix: Tensor, diagonal: Tensor) -> Tensor:
    """``matrix`` (..., K, K) with its diagonal replaced by ``diagonal`` (..., K), exactly."""
    eye = torch.eye(matrix.shape[-1], dtype=torch.bool, device=matrix.device)
    return torch.where(eye, torch.diag_embed(diagonal), matrix)


def softmax_covariance(probs: Tensor) -> Tensor:
    r"""Softmax Hessian :math:`M = \operatorname{diag}(p) - p p^\top` of each probability
    vector.

    ``probs``: ``(..., K)``; returns ``(..., K, K)``. The diagonal
    :math:`p_k(1-p_k)` is computed with :math:`1-p_k` taken as the sum of the other entries
    for the largest one, so confident outputs keep their relative precision.
    """
    _check_probs(probs)
    outer = -probs.unsqueeze(-1) * probs.unsqueeze(-2)
    return _with_diagonal(outer, probs * _complement(probs))


def mean_softmax_covariance(probs: Tensor) -> Tensor:
    r""":math:`\bar M = \frac1S\sum_s (\operatorname{diag}(p_s) - p_s p_s^\top)`.

    ``probs``: ``(..., S, K)`` (the mean runs over the sample axis ``-2``); returns
    ``(..., K, K)``. Computed without forming the ``S`` matrices: off the diagonal
    :math:`-\frac1S P^\top P`, on it :math:`\frac1S\sum_s p_{sk}(1-p_{sk})` (accurate for
    confident outputs, see :func:`softmax_covariance`).
    """
    _check_probs(probs, min_dim=2)
    num_samples = probs.shape[-2]
    if num_samples == 0:
        raise ValueError("probs has no samples (shape[-2] == 0)")
    off = -(probs.transpose(-1, -2) @ probs) / num_samples
    return _with_diagonal(off, (probs * _complement(probs)).mean(dim=-2))


def matrix_positive_curvature(matrix: Tensor, *, degenerate: float = 0.0) -> Tensor:
    r""":math:`\operatorname{Tr}(A)/\|A\|_F` of symmetric matrices ``(..., n, n)`` -> ``(...)``.

    Needs no eigendecomposition (:math:`\|A\|_F^2 = \sum\lambda^2` for symmetric ``A``). Where
    :math:`\|A\|_F = 0` the value is ``degenerate``.
    """
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"expected square matrices (..., n, n); got shape {tuple(matrix.shape)}")
    # divide by the largest entry first so that tiny (or huge) matrices do not under/overflow
    # when squared; the ratio is scale-free
    top = matrix.abs().amax(dim=(-2, -1), keepdim=True)
    matrix = matrix / torch.where(top > 0, top, torch.ones_like(top))
    trace = torch.diagonal(matrix, dim1=-2, dim2=-1).sum(-1)
    frob = torch.linalg.matrix_norm(matrix, ord="fro")
    safe = torch.where(frob > 0, frob, torch.ones_like(frob))
    return torch.where(frob > 0, trace / safe, torch.full_like(trace, degenerate))


def gamma_p(probs: Tensor) -> Tensor:
    r""":math:`\Gamma_p = \operatorname{Tr}\bar M / \|\bar M\|_F` of the sample-mean softmax
    Hessian.

    ``probs``: ``(..., S, K)`` with the samples on axis ``-2`` (pass ``p.unsqueeze(-2)`` for a
    single probability vector); returns ``(...)``. :math:`\Gamma_p \in [1, \sqrt{K-1}]`:
    :math:`\sqrt{K-1}` at uniform outputs (:math:`\bar M` is the centring projector scaled by
    ``1/K``), towards 1 as outputs become confident (:math:`M_s` tends to rank one). When every
    output is exactly one-hot, :math:`\bar M = 0` and the ratio is undefined; it is then set to
    1, its limit along any path of single-sample outputs becoming confident.
    """
    return matrix_positive_curvature(mean_softmax_covariance(probs), degenerate=1.0)


@dataclass(frozen=True)
class RandomModelFit:
    r"""The random model :math:`J_s R = C + E_s` fitted to projected logit Jacobians.

    ``logit_mean``: :math:`C = \frac1S\sum_s J_s R`, shape ``(K, d)``.
    ``sigma_c2``: variance of the entries of ``C`` (about their common mean).
    ``sigma_e2``: variance of the residual entries :math:`E_s = J_s R - C` (their mean is 0).
    ``debiased``: whether :math:`\sigma_E^2/S` (the noise left in a mean of ``S`` samples) was
    subtracted from ``sigma_c2``.
    ``ddof``: the variances' divisor is ``n - ddof`` (0: the package's default; 1: the authors').
    """

    logit_mean: Tensor
    sigma_c2: float
    sigma_e2: float
    num_samples: int
    dim: int
    debiased: bool = False
    ddof: int = 0

    @property
    def sigma_c(self) -> float:
        return math.sqrt(self.sigma_c2)

    @property
    def sigma_e(self) -> float:
        return math.sqrt(self.sigma_e2)

    @property
    def signal_to_noise(self) -> float:
        r""":math:`\sigma_c^2/\sigma_E^2` (``inf`` when there is no noise)."""
        return self.sigma_c2 / self.sigma_e2 if self.sigma_e2 > 0 else math.inf


def fit_random_model(jacobians: Tensor, *, debias: bool = False,
                     ddof: int = 0) -> RandomModelFit:
    r"""Estimate :math:`C`, :math:`\sigma_c^2`, :math:`\sigma_E^2` from ``jacobians`` of shape
    ``(S, K, d)`` (the projected logit gradients :math:`J_s R`, possibly divided by ``T``).

    :math:`C_{kj} = \frac1S\sum_s (J_sR)_{kj}`;
    :math:`\sigma_c^2 = \frac1{Kd - \delta}\sum_{kj}(C_{kj} - \bar C)^2`;
    :math:`\sigma_E^2 = \frac1{SKd - \delta}\sum_{skj}((J_sR)_{kj} - C_{kj})^2`, with
    :math:`\delta` = ``ddof``: 0 (default, divisor ``n``) or 1 (divisor ``n - 1``, what the
    authors' notebook computes with ``torch.std``).
    With ``debias=True``, :math:`\sigma_E^2/S` is subtracted from :math:`\sigma_c^2` (clamped at
    0): the sample mean of ``S`` noisy gradients still carries that much noise variance.
    """
    if not isinstance(jacobians, Tensor) or jacobians.ndim != 3:
        shape = tuple(jacobians.shape) if isinstance(jacobians, Tensor) else type(jacobians)
        raise ValueError(f"jacobians must be a tensor of shape (S, K, d); got {shape}")
    if isinstance(ddof, bool) or ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (divisor n) or 1 (divisor n - 1), got {ddof!r}")
    num_samples, num_classes, dim = jacobians.shape
    if num_samples < 1:
        raise ValueError("jacobians has no samples")
    if num_classes * dim <= ddof:
        raise ValueError(f"ddof={ddof} needs more than {ddof} entries in C, got K*d = "
                         f"{num_classes * dim}")
    logit_mean = jacobians.mean(dim=0)
    sigma_c2 = float(logit_mean.var(correction=ddof))
    # S >= 1 and K*d > ddof, so the divisor S*K*d - ddof is positive
    sigma_e2 = float((jacobians - logit_mean).pow(2).sum() / (jacobians.numel() - ddof))
    if debias:
        sigma_c2 = max(sigma_c2 - sigma_e2 / num_samples, 0.0)
    return RandomModelFit(logit_mean=logit_mean, sigma_c2=sigma_c2, sigma_e2=sigma_e2,
                          num_samples=int(num_samples), dim=int(dim), debiased=debias,
                          ddof=int(ddof))


def expected_g_curvature(sigma_c2: Tensor | float, sigma_e2: Tensor | float,
                         gamma: Tensor | float, dim: int | Tensor) -> Tensor:
    r"""P1 Eq. 9, the positive curvature of the expected G-term in a ``d``-dim subspace:

    .. math::
       \kappa(\mathbb{E}\,G) = \frac{\sqrt d\,(\sigma_E^2 + \sigma_c^2)}
          {\sqrt{\sigma_E^4 + 2\sigma_E^2\sigma_c^2 + d\,\sigma_c^4/\Gamma_p^2}}.

    Inputs broadcast; returns a float64 tensor. Limits: :math:`\sqrt d` as
    :math:`\sigma_c\to0`, :math:`\Gamma_p` as :math:`\sigma_E\to0`. When both variances are 0
    (G vanishes) the value is 0, matching the convention for a zero matrix.
    """
    sc2, se2, g, d = (torch.as_tensor(v, dtype=torch.float64)
                      for v in (sigma_c2, sigma_e2, gamma, dim))
    if bool((sc2 < 0).any()) or bool((se2 < 0).any()):
        raise ValueError("variances sigma_c2 and sigma_e2 must be non-negative")
    if bool((g <= 0).any()):
        raise ValueError("gamma (Gamma_p) must be positive")
    if bool((d < 1).any()):
        raise ValueError("dim must be >= 1")
    # Divide through by the largest variance so that tiny or huge scales do not under/overflow
    # (the formula is homogeneous of degree 0 in the variances).
    top = torch.maximum(sc2, se2)
    safe_top = torch.where(top > 0, top, torch.ones_like(top))
    c, e = sc2 / safe_top, se2 / safe_top
    denom = torch.sqrt(e * e + 2 * e * c + d * c * c / (g * g))
    value = torch.sqrt(d) * (e + c) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(top > 0, value, torch.zeros_like(value))


def gauss_newton_from_jacobians(jacobians: Tensor, probs: Tensor) -> Tensor:
    r"""The projected G-term :math:`G_R = \frac1S\sum_s (J_sR)^\top M_s (J_sR)` from
    projected Jacobians ``(S, K, d)`` (already divided by the temperature, so the
    :math:`1/T^2` is included) and softmax outputs ``probs`` ``(S, K)``; returns ``(d, d)``.

    Computed by the engine's :func:`goldilocks_zone.curvature.subspace.gauss_newton_product`
    as a weighted covariance of the logit gradients :math:`j_k` (rows of :math:`J_sR`),
    :math:`J^\top M J = \sum_k p_k (j_k - \bar j)(j_k - \bar j)^\top` with
    :math:`\bar j = \sum_k p_k j_k`: PSD term by term and, for confident outputs, free of the
    cancellation in :math:`\sum_k p_k j_kj_k^\top - (J^\top p)(J^\top p)^\top`. The result is
    symmetrised, :math:`\frac12(G_R + G_R^\top)`, so it is exactly symmetric. P2's random model
    (:func:`goldilocks_zone.theory.random_model.g_term_from_jacobians`) calls it.
    """
    if jacobians.ndim != 3 or probs.shape != jacobians.shape[:2]:
        raise ValueError(f"expected jacobians (S, K, d) and probs (S, K); got "
                         f"{tuple(jacobians.shape)} and {tuple(probs.shape)}")
    probs = probs.to(jacobians.dtype)
    # the engine's layout: tangents (d, S, K)
    g = gauss_newton_product(jacobians.permute(2, 0, 1), probs) / jacobians.shape[0]
    return 0.5 * (g + g.T)


def expected_projected_gradient(logit_mean: Tensor, mean_probs: Tensor, prior: Tensor) -> Tensor:
    r"""Leading term of P1 Eq. 10: :math:`C^\top(\bar p - q)`, shape ``(d,)``.

    ``logit_mean`` ``(K, d)`` (from :func:`fit_random_model`), ``mean_probs`` :math:`\bar p`
    ``(K,)``, ``prior`` :math:`q` ``(K,)``. (The temperature is already inside ``C`` when it was
    fitted to Jacobians divided by ``T``.)
    """
    if logit_mean.ndim != 2 or mean_probs.shape != (logit_mean.shape[0],) \
            or prior.shape != mean_probs.shape:
        raise ValueError(f"expected logit_mean (K, d), mean_probs (K,), prior (K,); got "
                         f"{tuple(logit_mean.shape)}, {tuple(mean_probs.shape)}, "
                         f"{tuple(prior.shape)}")
    diff = (mean_probs - prior).to(logit_mean.dtype)
    return logit_mean.T @ diff


def predicted_gradient_slope(sigma_c2: float, dim: int) -> float:
    r"""Slope of :math:`\|R^\top\nabla L\|` against :math:`\|q - \bar p\|_2` predicted by
    Eq. 10 for a random ``C``: :math:`\sqrt{d\,\sigma_c^2}`."""
    if sigma_c2 < 0 or dim < 1:
        raise ValueError("need sigma_c2 >= 0 and dim >= 1")
    return math.sqrt(dim * sigma_c2)


def authors_gradient_slope(sigma_c2: float, dim: int) -> float:
    r"""The slope the authors' notebook draws against the *full* gradient norm
    :math:`\|\nabla L\|`: :math:`d\,\sigma_c`, with :math:`\sigma_c^2` fitted to the
    projected Jacobians :math:`J_sR` of a ``d``-dim subspace (docs/experiments.md, "Eq. 10's
    two constants")."""
    if sigma_c2 < 0 or dim < 1:
        raise ValueError("need sigma_c2 >= 0 and dim >= 1")
    return dim * math.sqrt(sigma_c2)


def is_saturated(probs: Tensor) -> bool:
    r"""Whether the softmax is saturated in floating point: :math:`\operatorname{Tr}\bar M = 0`,
    i.e. every output is one-hot to the dtype's precision and :math:`\bar M` underflows to the
    zero matrix. The G-term is then exactly 0 and its measured :math:`\kappa(G) = 0` is not
    comparable with Eq. 9. Merely very confident outputs (:math:`\bar M` tiny but non-zero) are
    not saturated.

    ``probs``: ``(S, K)`` softmax outputs.
    """
    trace = torch.diagonal(mean_softmax_covariance(probs), dim1=-2, dim2=-1).sum()
    return not bool(trace > 0)


def gradient_noise_scale(sigma_e2: float, dim: int, num_samples: int) -> float:
    r"""Order of the noise term of Eq. 10: :math:`\sigma_E\sqrt{d/S}` (the norm of a mean of
    ``S`` independent ``d``-dim noise vectors of per-entry variance :math:`\sigma_E^2`, each
    multiplied by a residual :math:`p_s - y_s` of order one)."""
    if sigma_e2 < 0 or dim < 1 or num_samples < 1:
        raise ValueError("need sigma_e2 >= 0, dim >= 1 and num_samples >= 1")
    return math.sqrt(sigma_e2 * dim / num_samples)
