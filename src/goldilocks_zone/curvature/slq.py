r"""Stochastic Lanczos quadrature (SLQ): the spectral density of a symmetric operator given
only by matrix-vector products (used for full-space Hessian spectra, SCIENCE.md §3 and §6).

For a symmetric :math:`A \in \mathbb R^{D\times D}` with eigenpairs :math:`(\lambda_i, u_i)`
the spectral density is :math:`\phi(t) = \frac1D\sum_i \delta(t - \lambda_i)`. For a probe
:math:`v` with :math:`\|v\| = 1` and :math:`\mathbb E[v v^\top] = I/D` (Rademacher entries
:math:`\pm 1/\sqrt D`), :math:`\mathbb E[v^\top f(A) v] = \frac1D \mathrm{Tr} f(A) =
\int f\,\phi`. ``m`` Lanczos steps started at :math:`v` give a tridiagonal :math:`T_m` with
eigenpairs :math:`(\theta_j, s_j)`; Gauss quadrature

.. math::
   v^\top f(A)\, v \approx \sum_{j=1}^m \tau_j f(\theta_j), \qquad \tau_j = (s_j)_1^2,

is exact for polynomials of degree :math:`\le 2m-1`. Averaging over ``n`` probes gives the
density estimate :math:`\hat\phi = \frac1n \sum_l \sum_j \tau^{(l)}_j\,\delta(t - \theta^{(l)}_j)`
(:class:`SpectralDensity`), smoothed with a Gaussian kernel for plotting. Lanczos runs in
float64 with full reorthogonalisation, all probes at once when the operator takes blocks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from goldilocks_zone.curvature.lanczos import lanczos_iteration
from goldilocks_zone.curvature.random import torch_generator

__all__ = ["SpectralDensity", "gaussian_density", "stochastic_lanczos_quadrature"]


@dataclass(frozen=True)
class SpectralDensity:
    r"""SLQ nodes and weights of a symmetric D×D operator.

    ``nodes`` (n, m) Ritz values :math:`\theta_j^{(l)}` of probe ``l``; ``weights`` (n, m)
    :math:`\tau_j^{(l)}`, each row summing to 1; ``dim`` = D. Moments and densities are means
    over probes; ``std_error`` of a moment is the standard error over probes.
    """

    nodes: Tensor
    weights: Tensor
    dim: int

    @property
    def num_probes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.nodes.shape[1])

    def expectation(self, f: Callable[[Tensor], Tensor]) -> tuple[float, float]:
        r"""Estimate of :math:`\frac1D \mathrm{Tr} f(A)` and its standard error over probes."""
        per_probe = (self.weights * f(self.nodes)).sum(-1)
        mean = float(per_probe.mean())
        n = per_probe.numel()
        se = float(per_probe.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
        return mean, se

    def moment(self, power: int) -> tuple[float, float]:
        r""":math:`\frac1D\mathrm{Tr}A^p` estimate and standard error."""
        return self.expectation(lambda t: t ** power)

    def trace(self) -> tuple[float, float]:
        r""":math:`\mathrm{Tr}A` estimate and standard error."""
        m, se = self.moment(1)
        return self.dim * m, self.dim * se

    def count_above(self, threshold: float) -> tuple[float, float]:
        """Estimated number of eigenvalues above ``threshold`` (and standard error)."""
        m, se = self.expectation(lambda t: (t > threshold).to(t.dtype))
        return self.dim * m, self.dim * se

    def density(self, grid: Tensor, bandwidth: float) -> Tensor:
        r""":math:`\hat\phi` convolved with a Gaussian of width ``bandwidth`` at ``grid``
        points (integrates to 1 over the real line)."""
        return gaussian_density(self.nodes.reshape(-1), grid, bandwidth,
                                weights=self.weights.reshape(-1) / self.num_probes)

    @property
    def support(self) -> tuple[float, float]:
        """Smallest and largest Ritz value with non-negligible weight."""
        keep = self.weights > 1e-14
        vals = self.nodes[keep]
        return float(vals.min()), float(vals.max())


def gaussian_density(points: Tensor, grid: Tensor, bandwidth: float, *,
                     weights: Tensor | None = None) -> Tensor:
    r""":math:`\sum_i w_i\,\mathcal N(t; x_i, h^2)` at ``grid`` (t) for ``points`` (x_i);
    ``weights`` default to :math:`1/\#\text{points}` (e.g. an exact spectrum's density)."""
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    x = points.reshape(-1).to(torch.float64)
    t = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    w = (torch.full_like(x, 1.0 / x.numel()) if weights is None
         else weights.reshape(-1).to(torch.float64))
    z = (t[:, None] - x[None, :]) / bandwidth
    return (torch.exp(-0.5 * z * z) * w[None, :]).sum(1) / (bandwidth * math.sqrt(2 * math.pi))


def stochastic_lanczos_quadrature(matvec: Callable[[Tensor], Tensor], dim: int, *,
                                  num_probes: int = 10, num_steps: int = 80, seed: int = 0,
                                  block: bool = True, probe_block: int | None = None,
                                  device: torch.device | str | None = None
                                  ) -> SpectralDensity:
    r"""SLQ of the symmetric operator ``matvec``.

    ``block=True``: ``matvec`` maps (D, b) to (D, b) (all probes in one call per step, e.g.
    :func:`goldilocks_zone.hessian_vector_product`); ``block=False``: (D,) to (D,). Probes are
    Rademacher vectors scaled to unit norm, drawn on the CPU from ``seed`` (float64).
    ``num_steps`` is capped at D. A probe whose Krylov space closes early (breakdown) keeps
    zero-weight padding nodes. Memory: the Lanczos vectors, ``num_steps * D * b`` floats for
    ``b`` probes run together; ``probe_block`` caps ``b`` (the result does not depend on it).
    """
    for name, value in (("dim", dim), ("num_probes", num_probes), ("num_steps", num_steps),
                        ("probe_block", 1 if probe_block is None else probe_block)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    steps = min(num_steps, dim)
    gen = torch_generator(seed)
    v = (torch.randint(0, 2, (dim, num_probes), generator=gen).to(torch.float64) * 2 - 1)
    v = (v / math.sqrt(dim)).to(device) if device is not None else v / math.sqrt(dim)
    size = num_probes if probe_block is None else probe_block
    parts = [_lanczos_block(matvec, v[:, i:i + size], steps, block)
             for i in range(0, num_probes, size)]
    return SpectralDensity(nodes=torch.cat([p[0] for p in parts]),
                           weights=torch.cat([p[1] for p in parts]), dim=dim)


def _lanczos_block(matvec: Callable[[Tensor], Tensor], v: Tensor, steps: int, block: bool
                   ) -> tuple[Tensor, Tensor]:
    """Gauss nodes and weights (b, steps) of the unit columns of ``v`` (D, b), all at once, by
    :func:`~goldilocks_zone.curvature.lanczos.lanczos_iteration`."""

    def apply(x: Tensor) -> Tensor:
        if block:
            return matvec(x)
        return torch.stack([matvec(x[:, i]) for i in range(x.shape[1])], dim=1)

    last = deque(lanczos_iteration(apply, v, steps), maxlen=1)[0]
    theta, s = torch.linalg.eigh(last.tridiagonal())
    return theta, s[:, 0, :].pow(2)
