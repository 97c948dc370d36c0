"""Random bases of d-dimensional subspaces of parameter space (SCIENCE.md §3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from goldilocks_zone.curvature.batches import check_positive_int
from goldilocks_zone.curvature.random import torch_generator

BASIS_KINDS = ("orthonormal", "sparse")


def random_basis(num_params: int, dim: int, *, kind: str = "orthonormal",
                 seed: int | None = None, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    r"""A random basis :math:`R \in \mathbb{R}^{D \times d}` of a d-dimensional subspace.

    ``kind="orthonormal"``: i.i.d. standard Gaussian columns orthonormalised by QR, so
    :math:`R^\top R = I_d` (to round-off).

    ``kind="sparse"``: every entry is :math:`\pm 1` with probability :math:`1/\sqrt{D}`
    (sign equally likely) and 0 otherwise; each column is then scaled to unit norm. The
    columns are only approximately orthogonal. A column that happens to draw no non-zero
    entry (possible only for tiny D) gets a single ±1 at a random row.

    The basis is drawn on the CPU in float64 from ``seed`` and then moved to
    ``device``/``dtype``: the same seed gives the same basis everywhere. Rows follow the order
    of ``torch.nn.utils.parameters_to_vector(model.parameters())``.

    Returns a tensor of shape ``(num_params, dim)``.
    """
    check_positive_int("num_params", num_params)
    check_positive_int("dim", dim)
    if dim > num_params:
        raise ValueError(f"subspace dimension dim={dim} exceeds the number of parameters "
                         f"{num_params}")
    # Drawn on the CPU in float64: one seed gives one basis on every device and dtype.
    gen = torch_generator(seed)
    if kind == "orthonormal":
        gauss = torch.randn(num_params, dim, generator=gen, dtype=torch.float64)
        basis = _orthonormalise(gauss)
    elif kind == "sparse":
        density = 1.0 / math.sqrt(num_params)
        mask = torch.rand(num_params, dim, generator=gen, dtype=torch.float64) < density
        signs = torch.randint(0, 2, (num_params, dim), generator=gen).to(torch.float64) * 2 - 1
        basis = torch.where(mask, signs, torch.zeros((), dtype=torch.float64))
        empty = basis.abs().sum(0) == 0
        if bool(empty.any()):
            rows = torch.randint(0, num_params, (dim,), generator=gen)
            fill = torch.zeros_like(basis)
            fill[rows, torch.arange(dim)] = 1.0
            basis = torch.where(empty, fill, basis)
        basis = basis / basis.norm(dim=0, keepdim=True)
    else:
        raise ValueError(f"unknown basis kind {kind!r}; choose one of {BASIS_KINDS}")
    return basis.to(dtype=dtype, device=device)


def _orthonormalise(gauss: Tensor) -> Tensor:
    """Q of the QR factorisation of ``gauss`` whose R has a positive diagonal (a unique Q,
    so the basis is a deterministic function of the draw). A tall Gaussian matrix is
    well conditioned (condition number about (√D + √d)/(√D − √d)), so two rounds of
    Cholesky QR give that Q to round-off at a third of Householder QR's cost; near-square
    draws use Householder QR."""
    num_params, dim = gauss.shape
    if num_params >= 4 * dim:
        q = gauss
        for _ in range(2):
            chol, info = torch.linalg.cholesky_ex(q.T @ q)
            if bool(info.any()):
                break
            q = torch.linalg.solve_triangular(chol, q.T, upper=False).T
        else:
            return q
    q, r = torch.linalg.qr(gauss, mode="reduced")
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)
