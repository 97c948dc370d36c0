r"""The one Lanczos kernel of the package: a symmetric operator, a block of start vectors,
full reorthogonalisation.

For each unit column :math:`v_1` of ``v`` (D, b) the iteration builds an orthonormal Krylov
basis :math:`V_m = [v_1, \dots, v_m]` and the tridiagonal :math:`T_m = V_m^\top A V_m` with
diagonal :math:`\alpha_j = v_j^\top A v_j` and off-diagonal :math:`\beta_j = \|w_j\|`, where
:math:`w_j = A v_j - V_j V_j^\top A v_j` (reorthogonalised twice against every previous
vector, so :math:`V_m` stays orthonormal to round-off). A column whose Krylov space closes
(:math:`\beta_j \le 10^{-12}` × the running scale) stops there: its later vectors are zero and
its :math:`T_m` is padded with zeros.

Used by :func:`~goldilocks_zone.curvature.estimators.lanczos` (extreme eigenpairs, one column,
early stop on the Ritz residuals) and by
:func:`~goldilocks_zone.curvature.slq.stochastic_lanczos_quadrature` (b probes at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

#: Relative size of :math:`\beta_j` below which the Krylov space of a column counts as closed.
BREAKDOWN = 1e-12


@dataclass(frozen=True)
class LanczosStep:
    """The state after step ``j`` (0-based): Lanczos vectors ``basis`` (j+1, D, b), ``alphas``
    (j+1, b) and ``betas`` (j, b) of the tridiagonal so far (float64, CPU), ``beta`` (b,),
    the norm of the next residual (the next off-diagonal entry if the iteration continues), and
    ``alive`` (b,), False for a column whose Krylov space has closed."""

    j: int
    basis: Tensor
    alphas: Tensor
    betas: Tensor
    beta: Tensor
    alive: Tensor

    def tridiagonal(self) -> Tensor:
        """:math:`T_{j+1}` per column, shape (b, j+1, j+1)."""
        t = torch.diag_embed(self.alphas.T)
        if self.j > 0:
            off = self.betas.T
            t = t + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        return t


def lanczos_iteration(apply: Callable[[Tensor], Tensor], v: Tensor, steps: int
                      ) -> Iterator[LanczosStep]:
    """Run up to ``steps`` Lanczos steps from the unit columns of ``v`` (D, b), yielding a
    :class:`LanczosStep` after each; the caller stops early by leaving the loop.

    ``apply`` maps (D, b) to (D, b); the Lanczos vectors live on the device of its output."""
    dim, num_cols = v.shape
    v = v.to(torch.float64)
    basis: Tensor | None = None
    alphas = torch.zeros(steps, num_cols, dtype=torch.float64)
    betas = torch.zeros(max(steps - 1, 0), num_cols, dtype=torch.float64)
    alive = torch.ones(num_cols, dtype=torch.bool)
    scale = torch.zeros(num_cols, dtype=torch.float64)
    for j in range(steps):
        w = apply(v).to(torch.float64)
        if w.shape != v.shape:
            raise ValueError(f"matvec returned shape {tuple(w.shape)} for input {tuple(v.shape)}")
        if basis is None:
            basis = torch.zeros(steps, dim, num_cols, dtype=torch.float64, device=w.device)
        v = v.to(w.device)
        basis[j] = v
        alpha = (w * v).sum(0)
        alphas[j] = alpha.cpu()
        for _ in range(2):  # full reorthogonalisation against every Lanczos vector so far, twice
            coeff = torch.einsum("jdb,db->jb", basis[:j + 1], w)
            w = w - torch.einsum("jdb,jb->db", basis[:j + 1], coeff)
        beta = w.norm(dim=0).cpu()
        scale = torch.maximum(scale, alpha.abs().cpu() + beta)
        alive = alive & (beta > BREAKDOWN * scale.clamp_min(1e-300))
        yield LanczosStep(j=j, basis=basis[:j + 1], alphas=alphas[:j + 1], betas=betas[:j],
                          beta=beta, alive=alive)
        if j == steps - 1:
            return
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas[j] = beta
        keep = alive.to(w.device)
        v = torch.where(keep[None, :], w / beta.to(w.device).clamp_min(1e-300)[None, :],
                        torch.zeros_like(w))
