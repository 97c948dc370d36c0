r"""Fort & Ganguli's random model of logits, logit gradients and logit Hessians (P2, SCIENCE.md §6).

The model replaces a network by random variables with the statistics measured on real
networks, and forms the cross-entropy Hessian of ``N`` samples exactly in ``D`` dimensions.

**Labels.** ``N`` samples with balanced labels :math:`c_\mu = \mu \bmod C`; ``K = C`` logits.

**Logits.** :math:`z_k^\mu = \sigma_z\,(\xi_k^\mu + m\,\delta_{k c_\mu})`,
:math:`\xi \sim \mathcal N(0, 1)`. The logit scale :math:`\sigma_z` grows over training (or with
the weight scale) and *freezes* the softmax onto a corner of the simplex, like Derrida's random
energy model. ``label_margin`` :math:`m` shifts the true class's logit by :math:`m` standard
deviations: :math:`m = 0` is the literal i.i.d. model, :math:`m > 0` a better-than-chance
classifier whose accuracy does not depend on :math:`\sigma_z` (as for a homogeneous network
rescaled by :math:`\alpha`). With :math:`m = 0` the class structure below yields
:math:`C(K-1)` outliers of equal expected size that share the gradient evenly (about 10/90 of
its power in the top 10); the label-logit correlation of a trained network (default
:math:`m > 0`) singles out the ``C`` outliers that hold it (``random-model`` experiment).

**Logit gradients** (rows of the Jacobian :math:`J_\mu \in \mathbb R^{K\times D}`):

.. math::
   \nabla z_k^\mu = \sigma_s\, s_k + \sigma_c\, c_{k c_\mu} + \sigma_E\, E_k^\mu,

with :math:`s_k, c_{kc}, E_k^\mu \sim \mathcal N(0, I_D)` independent: an optional
logit-specific component shared by all classes (:math:`\sigma_s`), class/logit means
(:math:`\sigma_c`) and per-sample noise (:math:`\sigma_E`). For large ``D`` the mean cosines of
P2's clustering metrics are :math:`q_{SLSC} = (\sigma_s^2+\sigma_c^2)/\Sigma`,
:math:`q_{SL} = \sigma_s^2/\Sigma`, :math:`q_{DL} = 0` with
:math:`\Sigma = \sigma_s^2+\sigma_c^2+\sigma_E^2` (:func:`clustering_theory`).

**Logit Hessians** (weak, GOE-like): :math:`\nabla^2 z_k^\mu = \sigma_H W_k^\mu/\sqrt D`, with
independent GOE matrices :math:`W` (off-diagonal variance 1, diagonal 2), so each has a
semicircle spectrum of radius :math:`2\sigma_H`.

**Curvature** (P2's notation; SCIENCE.md §2 with T = 1), :math:`p_\mu = \mathrm{softmax}(z^\mu)`,
:math:`M_\mu = \mathrm{diag}(p_\mu) - p_\mu p_\mu^\top`, :math:`w_{\mu k} = p_{\mu k} - y_{\mu k}`:

.. math::
   G = \frac1N\sum_\mu J_\mu^\top M_\mu J_\mu, \quad
   H = \frac1N\sum_{\mu k} w_{\mu k}\,\nabla^2 z_k^\mu, \quad
   \nabla^2 L = G + H, \quad \nabla L = \frac1N \sum_\mu J_\mu^\top w_\mu .

``G`` and the gradient are formed exactly from the drawn Jacobians. The H-term is formed
exactly too: given the logits, a weighted sum of independent GOE matrices *is* a GOE matrix
with variance :math:`\sum w^2`, so ``logit_hessians="collapsed"`` (default) draws the single
matrix :math:`\sigma_H \|w\|_F\, W/(N\sqrt D)`; ``"explicit"`` draws all :math:`NK` logit
Hessians and sums them (same distribution, for small problems and tests).

**Outliers** (:func:`count_outliers`). The *bulk edge* is the largest eigenvalue of the same
draw without class structure (:math:`\sigma_c = \sigma_s = 0`; same logits, noise and logit
Hessians; :func:`bulk_edge`); eigenvalues above it are BBP outliers created by the class
structure (``num_above_edge``). Class structure makes a hierarchy (P2's ``C`` top outliers,
then up to :math:`C(K-2)` weaker ones from the other class/logit means), so the number of
*separated* outliers is the size of the top group: the smallest ``k`` with
:math:`\lambda_k \ge \rho\,\max(\lambda_{k+1}, \lambda_{\rm edge})` among the eigenvalues above
the edge (``min_gap_ratio`` :math:`\rho = 1.5`); 0 when no such gap exists.

Every draw is seeded; the five random ingredients (logits, class means, shared component,
noise, logit Hessians) use independent streams, so changing one parameter keeps the other
draws fixed (common random numbers across a sweep).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import Tensor

from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.theory.formulas import (
    gauss_newton_from_jacobians,
    matrix_positive_curvature,
)

__all__ = [
    "GradientOverlap",
    "LogitGradientCosines",
    "OutlierCount",
    "RandomModelDraw",
    "RandomModelParams",
    "RandomModelSample",
    "SigmaZPoint",
    "analyse_spectrum",
    "bulk_edge",
    "clustering_theory",
    "count_outliers",
    "draw",
    "gradient_overlap",
    "logit_gradient_cosines",
    "sigma_z_sweep",
    "simulate",
    "simulate_logits",
]

#: Default relative gap that separates the top group of outliers from what lies below it.
#: Inside a group of outliers of one level consecutive eigenvalues differ by a few percent to
#: ~20% (finite-D fluctuations); between levels of the hierarchy the ratio is ~K p_true.
MIN_GAP_RATIO = 1.5

#: Above this many random numbers the explicit logit-Hessian path refuses to run.
EXPLICIT_HESSIAN_LIMIT = 200_000_000

LOGIT_HESSIAN_MODES = ("collapsed", "explicit")


@dataclass(frozen=True)
class RandomModelParams:
    r"""Parameters of the random model (defaults: ``D = 1000``, ``C = 10`` as in P2).

    ``sigma_z`` logit scale; ``label_margin`` true-class logit shift in units of ``sigma_z``;
    ``sigma_c`` class/logit means; ``sigma_e`` per-sample noise; ``sigma_shared`` optional
    logit-specific component shared by all classes; ``sigma_h`` logit-Hessian scale
    (semicircle radius :math:`2\sigma_H` per logit Hessian).
    """

    dim: int = 1000
    num_classes: int = 10
    num_samples: int = 500
    sigma_z: float = 1.0
    label_margin: float = 3.0
    sigma_c: float = 1.0
    sigma_e: float = 2.0
    sigma_shared: float = 0.0
    sigma_h: float = 10.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.num_samples < self.num_classes:
            raise ValueError(f"num_samples ({self.num_samples}) must be >= num_classes "
                             f"({self.num_classes}) so that every class has a sample")
        for name in ("sigma_z", "sigma_c", "sigma_e", "sigma_shared", "sigma_h"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not math.isfinite(self.label_margin):
            raise ValueError(f"label_margin must be finite, got {self.label_margin!r}")

    def replace(self, **changes) -> RandomModelParams:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RandomModelDraw:
    """The standard-normal ingredients of one draw (shapes for N samples, C = K classes, D).

    ``labels`` (N,); ``xi`` (N, K); ``class_means`` (C, K, D) = :math:`c_{kc}` indexed
    ``[c, k]``; ``shared`` (K, D); ``noise`` (N, K, D); ``goe`` (D, D) standard GOE (only for
    the collapsed H-term); ``hessian_seed`` seeds the explicit logit Hessians.
    """

    labels: Tensor
    xi: Tensor
    class_means: Tensor
    shared: Tensor
    noise: Tensor
    goe: Tensor
    hessian_seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.noise.shape)


def _streams(seed: int) -> list[int]:
    return [int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
            for s in np.random.SeedSequence(int(seed)).spawn(5)]


def _normal(seed: int, *shape: int) -> Tensor:
    """Standard-normal float64 draws of ``shape`` from the stream ``seed``."""
    return torch.randn(*shape, generator=torch_generator(seed), dtype=torch.float64)


def _goe(dim: int, gen: torch.Generator, *, dtype: torch.dtype = torch.float64,
         batch: tuple[int, ...] = ()) -> Tensor:
    a = torch.randn(*batch, dim, dim, generator=gen, dtype=dtype)
    return (a + a.transpose(-1, -2)) / math.sqrt(2.0)


def draw(dim: int, num_classes: int, num_samples: int, *, seed: int = 0) -> RandomModelDraw:
    """Draw the standard-normal ingredients (float64, CPU) with independent seeded streams."""
    s_logits, s_means, s_shared, s_noise, s_hess = _streams(seed)
    labels = torch.arange(num_samples) % num_classes
    xi = _normal(s_logits, num_samples, num_classes)
    means = _normal(s_means, num_classes, num_classes, dim)
    shared = _normal(s_shared, num_classes, dim)
    noise = _normal(s_noise, num_samples, num_classes, dim)
    goe = _goe(dim, torch_generator(s_hess))
    return RandomModelDraw(labels, xi, means, shared, noise, goe, s_hess)


@dataclass(frozen=True)
class RandomModelSample:
    r"""One realisation of the random model: logits, Jacobians, gradient and the exact
    curvature matrices (float64).

    ``labels`` (N,), ``logits`` (N, K), ``probs`` (N, K), ``logit_gradients`` (N, K, D),
    ``gradient`` :math:`\nabla L` (D,), ``g_term``, ``h_term``, ``hessian`` (D, D).
    """

    params: RandomModelParams
    labels: Tensor
    logits: Tensor
    probs: Tensor
    logit_gradients: Tensor
    gradient: Tensor
    g_term: Tensor
    h_term: Tensor
    hessian: Tensor

    @property
    def loss(self) -> float:
        """Mean cross-entropy :math:`-\\frac1N\\sum_\\mu \\log p_{\\mu c_\\mu}`."""
        logp = torch.log_softmax(self.logits, -1)
        return float(-logp.gather(1, self.labels[:, None]).mean())

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(-1) == self.labels).double().mean())

    @property
    def mean_entropy(self) -> float:
        """:math:`\\frac1N\\sum_\\mu -\\sum_k p_{\\mu k}\\log p_{\\mu k}` (nats)."""
        logp = torch.log_softmax(self.logits, -1)
        return float(-(self.probs * logp).nan_to_num(0.0).sum(-1).mean())

    @property
    def logit_variance(self) -> float:
        """Variance of all logits (over samples and classes)."""
        return float(self.logits.var(unbiased=False))


def _logits(params: RandomModelParams, labels: Tensor, xi: Tensor) -> Tensor:
    onehot = torch.nn.functional.one_hot(labels, params.num_classes).to(torch.float64)
    return params.sigma_z * (xi + params.label_margin * onehot)


def _jacobians(params: RandomModelParams, d: RandomModelDraw) -> Tensor:
    j = params.sigma_e * d.noise
    if params.sigma_c:
        j = j + params.sigma_c * d.class_means[d.labels]
    if params.sigma_shared:
        j = j + params.sigma_shared * d.shared[None]
    return j


def g_term_from_jacobians(jacobians: Tensor, probs: Tensor) -> Tensor:
    r""":math:`G = \frac1N\sum_\mu J_\mu^\top(\mathrm{diag}\,p_\mu - p_\mu p_\mu^\top)J_\mu`
    for ``jacobians`` (N, K, D) and ``probs`` (N, K); returns (D, D), exactly symmetric.

    P2's name for P1's projected G-term: bitwise the same function as
    :func:`goldilocks_zone.theory.formulas.gauss_newton_from_jacobians`."""
    return gauss_newton_from_jacobians(jacobians, probs)


def _h_term(params: RandomModelParams, d: RandomModelDraw, weights: Tensor, mode: str
            ) -> Tensor:
    n, k, dim = d.shape
    if params.sigma_h == 0:
        return torch.zeros(dim, dim, dtype=torch.float64)
    if mode == "collapsed":
        return params.sigma_h * float(weights.norm()) / (n * math.sqrt(dim)) * d.goe
    gen = torch_generator(d.hessian_seed + 1)
    total = torch.zeros(dim, dim, dtype=torch.float64)
    w = weights.reshape(-1)
    chunk = max(1, 4_000_000 // (dim * dim))
    for start in range(0, n * k, chunk):
        ws = w[start:start + chunk]
        total += torch.einsum("m,mij->ij", ws, _goe(dim, gen, batch=(ws.numel(),)))
    return params.sigma_h * total / (n * math.sqrt(dim))


def simulate(params: RandomModelParams | None = None, *, seed: int = 0,
             draw_: RandomModelDraw | None = None, logit_hessians: str = "collapsed"
             ) -> RandomModelSample:
    """Simulate the random model and form gradient, G-term, H-term and Hessian exactly.

    ``draw_`` reuses standard-normal ingredients (from :func:`draw`, matching sizes) instead of
    drawing them from ``seed``: sweeps use it for common random numbers.
    """
    params = params or RandomModelParams()
    if logit_hessians not in LOGIT_HESSIAN_MODES:
        raise ValueError(f"logit_hessians must be one of {LOGIT_HESSIAN_MODES}, "
                         f"got {logit_hessians!r}")
    count = params.num_samples * params.num_classes * params.dim ** 2
    if logit_hessians == "explicit" and count > EXPLICIT_HESSIAN_LIMIT:
        raise ValueError(f"logit_hessians='explicit' would draw {count:.2e} random numbers "
                         f"(N*K*D^2); use 'collapsed' (same distribution) for this size")
    d = draw_ if draw_ is not None else draw(params.dim, params.num_classes,
                                             params.num_samples, seed=seed)
    if d.shape != (params.num_samples, params.num_classes, params.dim):
        raise ValueError(f"draw has shape (N, K, D) = {d.shape}, params ask for "
                         f"{(params.num_samples, params.num_classes, params.dim)}")
    z = _logits(params, d.labels, d.xi)
    probs = torch.softmax(z, -1)
    y = torch.nn.functional.one_hot(d.labels, params.num_classes).to(torch.float64)
    weights = probs - y
    jac = _jacobians(params, d)
    grad = torch.einsum("nkd,nk->d", jac, weights) / params.num_samples
    g = g_term_from_jacobians(jac, probs)
    h = _h_term(params, d, weights, logit_hessians)
    return RandomModelSample(params=params, labels=d.labels, logits=z, probs=probs,
                             logit_gradients=jac, gradient=grad, g_term=g, h_term=h,
                             hessian=g + h)


def simulate_logits(params: RandomModelParams | None = None, *, seed: int = 0
                    ) -> tuple[Tensor, Tensor]:
    """Only the logits (N, K) and labels (N,) of the model — no gradients or Hessians, so
    cheap at any ``dim``; identical to :func:`simulate`'s logits for the same ``seed``."""
    params = params or RandomModelParams()
    labels = torch.arange(params.num_samples) % params.num_classes
    xi = _normal(_streams(seed)[0], params.num_samples, params.num_classes)
    return _logits(params, labels, xi), labels


# --------------------------------------------------------------------------- spectrum analysis


def bulk_edge(params: RandomModelParams | None = None, *, seed: int = 0,
              draw_: RandomModelDraw | None = None) -> float:
    """Largest Hessian eigenvalue of the same draw without class structure
    (``sigma_c = sigma_shared = 0``): the bulk edge against which outliers are counted."""
    params = params or RandomModelParams()
    null = simulate(params.replace(sigma_c=0.0, sigma_shared=0.0), seed=seed, draw_=draw_)
    return float(torch.linalg.eigvalsh(null.hessian)[-1])


@dataclass(frozen=True)
class OutlierCount:
    """Outliers of a spectrum against a bulk edge (see the module docstring).

    ``num_outliers``: size of the top group separated by a relative gap ``>= min_gap_ratio``;
    ``num_above_edge``: eigenvalues above ``bulk_edge``; ``gap_ratio``:
    :math:`\\lambda_k / \\max(\\lambda_{k+1}, \\lambda_{edge})` at the group's lower boundary
    (``nan`` without outliers).
    """

    num_outliers: int
    num_above_edge: int
    bulk_edge: float
    gap_ratio: float


def count_outliers(eigenvalues: Tensor | Sequence[float], edge: float, *,
                   min_gap_ratio: float = MIN_GAP_RATIO) -> OutlierCount:
    """Count the outliers of ``eigenvalues`` (any order) above the bulk edge ``edge``."""
    if min_gap_ratio <= 1:
        raise ValueError(f"min_gap_ratio must be > 1, got {min_gap_ratio}")
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten().sort(descending=True).values
    above = int((ev > edge).sum())
    for k in range(1, above + 1):
        below = float(ev[k]) if k < ev.numel() else -math.inf
        ref = max(below, edge)
        lam = float(ev[k - 1])
        if ref > 0 and lam >= min_gap_ratio * ref:
            return OutlierCount(k, above, float(edge), lam / ref)
        if ref <= 0 < lam:  # edge at or below zero: any positive eigenvalue is separated
            return OutlierCount(k, above, float(edge), math.inf)
    return OutlierCount(0, above, float(edge), math.nan)


@dataclass(frozen=True)
class GradientOverlap:
    r"""Overlap of the gradient with the Hessian eigenvectors, sorted by eigenvalue
    (descending): ``eigenvalues`` (D,), ``cosines`` (D,) :math:`\cos(g, v_i)`; the squared
    cosines sum to 1 (the eigenvectors form an orthonormal basis)."""

    eigenvalues: Tensor
    cosines: Tensor

    def power_in_top(self, k: int) -> float:
        """Share of the gradient's squared norm in the top-``k`` eigenvectors."""
        return float(self.cosines[:k].pow(2).sum())


def gradient_overlap(hessian: Tensor, gradient: Tensor) -> GradientOverlap:
    """Eigendecompose the symmetric ``hessian`` (D, D) and project ``gradient`` (D,)."""
    h = hessian.to(torch.float64)
    ev, vecs = torch.linalg.eigh(0.5 * (h + h.T))
    ev, vecs = ev.flip(0), vecs.flip(1)
    g = gradient.to(torch.float64)
    norm = float(g.norm())
    cos = vecs.T @ g / norm if norm > 0 else torch.zeros_like(ev)
    return GradientOverlap(eigenvalues=ev, cosines=cos)


def _spectral_norm(a: Tensor) -> float:
    """:math:`\\max|\\lambda|` of a symmetric matrix by Lanczos (cheaper than ``eigvalsh``)."""
    from goldilocks_zone.curvature import lanczos

    if not bool(a.any()):
        return 0.0
    pairs = lanczos(lambda v: a @ v, a.shape[0], 1, which="magnitude", max_iterations=80,
                    tol=1e-7, seed=0)
    return float(pairs.eigenvalues.abs()[0])


def analyse_spectrum(sample: RandomModelSample, *, edge: float | None = None, top_k: int = 10,
                     min_gap_ratio: float = MIN_GAP_RATIO, seed: int = 0,
                     draw_: RandomModelDraw | None = None) -> dict[str, float]:
    """Headline numbers of one sample: top eigenvalue, :math:`\\kappa` of the Hessian, G- and
    H-term, fraction of positive eigenvalues, spectral norms, gradient power in the top
    ``top_k`` eigenvectors, outlier counts (``edge`` from :func:`bulk_edge` with the sample's
    ``seed``/``draw_`` unless given), loss, accuracy, entropy, logit variance."""
    ov = gradient_overlap(sample.hessian, sample.gradient)
    if edge is None:
        edge = bulk_edge(sample.params, seed=seed, draw_=draw_)
    out = count_outliers(ov.eigenvalues, edge, min_gap_ratio=min_gap_ratio)
    return {
        "top_eigenvalue": float(ov.eigenvalues[0]),
        "positive_curvature": float(matrix_positive_curvature(sample.hessian)),
        "positive_curvature_g": float(matrix_positive_curvature(sample.g_term)),
        "positive_curvature_h": float(matrix_positive_curvature(sample.h_term)),
        "fraction_positive": float((ov.eigenvalues > 0).double().mean()),
        "spectral_norm": float(ov.eigenvalues.abs().max()),
        "spectral_norm_g": _spectral_norm(sample.g_term),
        "spectral_norm_h": _spectral_norm(sample.h_term),
        "trace": float(ov.eigenvalues.sum()),
        "frobenius": float(ov.eigenvalues.norm()),
        "gradient_norm": float(sample.gradient.norm()),
        f"gradient_power_top{top_k}": ov.power_in_top(top_k),
        "num_outliers": out.num_outliers,
        "num_above_edge": out.num_above_edge,
        "bulk_edge": out.bulk_edge,
        "gap_ratio": out.gap_ratio,
        "loss": sample.loss,
        "accuracy": sample.accuracy,
        "mean_entropy": sample.mean_entropy,
        "logit_variance": sample.logit_variance,
    }


# --------------------------------------------------------------------------- sigma_z sweep


@dataclass(frozen=True)
class SigmaZPoint:
    """One point of :func:`sigma_z_sweep`: the scaled parameters and :func:`analyse_spectrum`'s
    numbers (``stats``)."""

    sigma_z: float
    params: RandomModelParams
    stats: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        return {"sigma_z": self.sigma_z, "sigma_c": self.params.sigma_c,
                "sigma_e": self.params.sigma_e, "sigma_shared": self.params.sigma_shared,
                "sigma_h": self.params.sigma_h, **self.stats}


def sigma_z_sweep(params: RandomModelParams | None = None, sigma_zs: Sequence[float] = (), *,
                  gradient_growth: float = 1.0, hessian_growth: float = 0.0,
                  reference_sigma_z: float | None = None, seed: int = 0, top_k: int = 10,
                  min_gap_ratio: float = MIN_GAP_RATIO, with_edge: bool = True
                  ) -> list[SigmaZPoint]:
    r"""The random model along a grid of logit scales (P2: top eigenvalue and
    :math:`\mathrm{Tr}H/\|H\|` vs :math:`\sigma_z`).

    The gradient scales grow alongside: :math:`\sigma_{c,E,s}(\sigma_z) = \sigma_{c,E,s}
    (\sigma_z/\sigma_{z,\rm ref})^{\gamma}` with ``gradient_growth`` :math:`\gamma` (ratios
    such as :math:`\sigma_c/\sigma_E` fixed), and :math:`\sigma_H` with ``hessian_growth``;
    :math:`\sigma_{z,\rm ref}` defaults to ``params.sigma_z``. All points share one draw.
    ``with_edge=False`` skips the null-model eigendecomposition (no outlier counts: ``nan``).
    """
    params = params or RandomModelParams()
    if not sigma_zs:
        raise ValueError("sigma_zs must list at least one logit scale")
    ref = float(reference_sigma_z if reference_sigma_z is not None else params.sigma_z)
    if ref <= 0:
        raise ValueError(f"reference_sigma_z must be > 0, got {ref}")
    d = draw(params.dim, params.num_classes, params.num_samples, seed=seed)
    points = []
    for sz in sigma_zs:
        if not math.isfinite(sz) or sz <= 0:
            raise ValueError(f"sigma_z values must be positive and finite, got {sz!r}")
        f = (sz / ref) ** gradient_growth
        p = params.replace(sigma_z=float(sz), sigma_c=params.sigma_c * f,
                           sigma_e=params.sigma_e * f, sigma_shared=params.sigma_shared * f,
                           sigma_h=params.sigma_h * (sz / ref) ** hessian_growth)
        sample = simulate(p, draw_=d)
        edge = bulk_edge(p, draw_=d) if with_edge else math.nan
        stats = analyse_spectrum(sample, edge=edge, top_k=top_k, min_gap_ratio=min_gap_ratio)
        if not with_edge:
            stats.update(num_outliers=math.nan, num_above_edge=math.nan, gap_ratio=math.nan)
        points.append(SigmaZPoint(float(sz), p, stats))
    return points


# --------------------------------------------------------------------------- clustering


@dataclass(frozen=True)
class LogitGradientCosines:
    r"""P2's clustering metrics: mean cosines between logit gradients over pairs of
    *distinct* samples :math:`\mu \ne \nu`.

    ``same_logit_same_class`` :math:`q_{SLSC}` (same k, same class), ``same_logit``
    :math:`q_{SL}` (same k, different classes), ``different_logits`` :math:`q_{DL}`
    (:math:`k \ne l`, any classes), and the pair counts.
    """

    same_logit_same_class: float
    same_logit: float
    different_logits: float
    pairs_slsc: int
    pairs_sl: int
    pairs_dl: int

    def as_dict(self) -> dict[str, float]:
        return {"q_slsc": self.same_logit_same_class, "q_sl": self.same_logit,
                "q_dl": self.different_logits}


class CosineAccumulator:
    r"""Streaming, exact computation of :class:`LogitGradientCosines` from chunks of logit
    gradients, without pairwise Gram matrices.

    Rows are normalised to unit length, :math:`u_k^\mu = \nabla z_k^\mu/\|\nabla z_k^\mu\|`.
    With class sums :math:`s_{kc} = \sum_{\mu\in c} u_k^\mu` and logit sums
    :math:`t_k = \sum_c s_{kc}`, the pair sums over :math:`\mu\ne\nu` are
    :math:`\sum_{kc}(\|s_{kc}\|^2 - n_c)` (SLSC),
    :math:`\sum_k(\|t_k\|^2 - \sum_c\|s_{kc}\|^2)` (SL) and
    :math:`\sum_{k\ne l}(t_k\cdot t_l - \sum_\mu u_k^\mu\cdot u_l^\mu)` (DL): O(S K D) work,
    O(C K D) memory. Zero-length gradients are left out of every pair.
    """

    def __init__(self, num_classes: int, num_logits: int | None = None) -> None:
        self.num_classes = num_classes
        self.num_logits = num_logits
        self.sums: Tensor | None = None  # (K, C, D)
        self.counts: Tensor | None = None  # (K, C) number of non-zero rows
        self.self_cross = 0.0  # sum over samples of sum_{k != l} u_k . u_l
        self.same_sample_pairs = 0.0  # sum over samples of #{(k, l): k != l, both non-zero}

    def update(self, jacobians: Tensor, labels: Tensor) -> None:
        """Add a chunk: ``jacobians`` (B, K, D) (any float dtype), ``labels`` (B,)."""
        if jacobians.ndim != 3 or labels.shape != jacobians.shape[:1]:
            raise ValueError(f"jacobians must be (B, K, D) with labels (B,); got "
                             f"{tuple(jacobians.shape)} and {tuple(labels.shape)}")
        b, k, dim = jacobians.shape
        if self.num_logits is None:
            self.num_logits = k
        if k != self.num_logits:
            raise ValueError(f"chunk has {k} logits, earlier chunks had {self.num_logits}")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        j = jacobians.to(torch.float64)
        norms = j.norm(dim=-1, keepdim=True)
        u = torch.where(norms > 0, j / norms.clamp_min(1e-300), torch.zeros_like(j))
        valid = (norms[..., 0] > 0).to(torch.float64)  # (B, K)
        onehot = torch.nn.functional.one_hot(labels.long().cpu(), self.num_classes).to(
            dtype=torch.float64, device=u.device)
        sums = torch.einsum("bkd,bc->kcd", u, onehot).cpu()
        counts = torch.einsum("bk,bc->kc", valid, onehot).cpu()
        gram = torch.einsum("bkd,bld->bkl", u, u)
        self.self_cross += float(gram.sum() - gram.diagonal(dim1=1, dim2=2).sum())
        per_sample = valid.sum(1)
        self.same_sample_pairs += float((per_sample * (per_sample - 1)).sum())
        self.sums = sums if self.sums is None else self.sums + sums
        self.counts = counts if self.counts is None else self.counts + counts

    def result(self) -> LogitGradientCosines:
        if self.sums is None:
            raise ValueError("no logit gradients were added")
        s, n = self.sums, self.counts
        sq = s.pow(2).sum(-1)  # (K, C) |s_kc|^2
        t = s.sum(1)  # (K, D)
        pairs_slsc = float((n * (n - 1)).sum())
        tot_n = n.sum(1)  # (K,)
        pairs_sl = float((tot_n.pow(2) - n.pow(2).sum(1)).sum())
        slsc = float((sq - n).sum())
        sl = float((t.pow(2).sum(-1) - sq.sum(1)).sum())
        tt = t @ t.T
        dl = float(tt.sum() - tt.diagonal().sum()) - self.self_cross
        # pairs (k, mu), (l, nu) with k != l, mu != nu, both rows non-zero
        pairs_dl = float(tot_n.sum() ** 2 - tot_n.pow(2).sum()) - self.same_sample_pairs
        return LogitGradientCosines(
            same_logit_same_class=slsc / pairs_slsc if pairs_slsc > 0 else math.nan,
            same_logit=sl / pairs_sl if pairs_sl > 0 else math.nan,
            different_logits=dl / pairs_dl if pairs_dl > 0 else math.nan,
            pairs_slsc=int(pairs_slsc), pairs_sl=int(pairs_sl), pairs_dl=int(pairs_dl))


def logit_gradient_cosines(jacobians: Tensor, labels: Tensor, num_classes: int | None = None
                           ) -> LogitGradientCosines:
    """:class:`LogitGradientCosines` of ``jacobians`` (S, K, D) with ``labels`` (S,)."""
    c = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    acc = CosineAccumulator(c)
    acc.update(jacobians, labels)
    return acc.result()


def clustering_theory(params: RandomModelParams) -> dict[str, float]:
    """Large-D mean cosines of the random model: ``q_slsc``, ``q_sl``, ``q_dl``."""
    shared, means = params.sigma_shared ** 2, params.sigma_c ** 2
    total = shared + means + params.sigma_e ** 2
    if total == 0:
        return {"q_slsc": math.nan, "q_sl": math.nan, "q_dl": math.nan}
    return {"q_slsc": (shared + means) / total, "q_sl": shared / total, "q_dl": 0.0}
