"""Spectral statistics of symmetric matrices (SCIENCE.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SpectrumStats:
    r"""Spectral summary of a symmetric d×d matrix A.

    - ``eigenvalues``: float64, ascending (``eigh`` of the symmetrised matrix).
    - ``positive_curvature`` :math:`\kappa = \mathrm{Tr} A / \|A\|_F \in [-\sqrt d, \sqrt d]`;
      **defined as 0 when** :math:`\|A\|_F = 0` (e.g. a G-term that underflowed at a large
      scale): a zero matrix has no excess of positive curvature.
    - ``fraction_positive`` :math:`\pi = \#\{\lambda > 0\} / d` (0 for the zero matrix).
    - ``spectral_norm`` :math:`\max|\lambda|`; ``top_eigenvalue`` :math:`\max \lambda`.
    - ``trace``, ``frobenius``.

    A matrix with non-finite entries gives NaN statistics (``finite=False``), never an error.
    """

    eigenvalues: Tensor
    positive_curvature: float
    fraction_positive: float
    spectral_norm: float
    top_eigenvalue: float
    trace: float
    frobenius: float
    finite: bool = True

    def as_dict(self) -> dict[str, float]:
        """The scalar statistics (for tidy tables)."""
        names = ("positive_curvature", "fraction_positive", "spectral_norm", "top_eigenvalue",
                 "trace", "frobenius")
        return {name: getattr(self, name) for name in names}


def spectrum_stats(matrix: Tensor) -> SpectrumStats:
    r"""Eigenvalues and the Goldilocks statistics of a symmetric matrix (see SpectrumStats).

    Scale-invariant over the whole float64 range: the matrix is divided by its largest
    absolute entry :math:`c` (a power of two, so the division is exact) before the
    eigenvalues and norms are computed, and the reported eigenvalues, trace and norms are
    multiplied back by c. κ and π use only the rescaled matrix, so
    ``spectrum_stats(a * s)`` has the same κ and π as ``spectrum_stats(a)`` for any
    finite s > 0, e.g. entries of order 1e-300 or 1e+300 (where a plain Frobenius norm
    underflows to 0 or overflows to inf). The zero matrix gives κ = π = 0 and zero norms;
    non-finite entries give NaN statistics with ``finite=False``.
    """
    if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(f"spectrum_stats expects a square 2-D tensor, got {shape}")
    a = matrix.detach().to(device="cpu", dtype=torch.float64)
    d = a.shape[0]
    if d == 0:
        raise ValueError("spectrum_stats expects a non-empty matrix (d >= 1), got 0 x 0")
    if not bool(torch.isfinite(a).all()):
        nan = math.nan
        return SpectrumStats(torch.full((d,), nan, dtype=torch.float64), nan, nan, nan, nan,
                             nan, nan, finite=False)
    peak = float(a.abs().max())
    if peak == 0.0:
        zeros = torch.zeros(d, dtype=torch.float64)
        return SpectrumStats(zeros, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    exponent = math.frexp(peak)[1]  # peak = m * 2**exponent, 0.5 <= m < 1
    unit = torch.ldexp(a, torch.tensor(-exponent))  # exact: entries now in [-1, 1)
    unit = 0.5 * (unit + unit.T)
    eig = torch.linalg.eigvalsh(unit)
    trace = float(eig.sum())
    frob = float(torch.linalg.vector_norm(eig))
    kappa = trace / frob if frob > 0 else 0.0

    def back(value: float) -> float:
        return math.ldexp(value, exponent)

    return SpectrumStats(
        eigenvalues=torch.ldexp(eig, torch.tensor(exponent)),
        positive_curvature=kappa,
        fraction_positive=float((eig > 0).sum()) / d,
        spectral_norm=back(float(eig.abs().max())),
        top_eigenvalue=back(float(eig.max())),
        trace=back(trace),
        frobenius=back(frob),
    )
