"""Stochastic Lanczos quadrature against exact spectra."""

from __future__ import annotations

import math

import pytest
import torch

from goldilocks_zone.curvature.slq import gaussian_density, stochastic_lanczos_quadrature


def _sym(dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    # a bulk plus three outliers, like a Hessian
    q, _ = torch.linalg.qr(torch.randn(dim, 3, generator=gen, dtype=torch.float64))
    return (a + a.T) / math.sqrt(2 * dim) + q @ torch.diag(torch.tensor([8.0, 6.0, 5.0],
                                                                        dtype=torch.float64)) @ q.T


def test_full_krylov_space_recovers_a_diagonal_spectrum_exactly():
    """m = D steps from a Rademacher probe: the nodes are the eigenvalues and every weight is
    1/D (the probe overlaps every eigenvector equally)."""
    diag = torch.linspace(-2.0, 3.0, 25, dtype=torch.float64)
    res = stochastic_lanczos_quadrature(lambda v: diag[:, None] * v, 25, num_probes=3,
                                        num_steps=25, seed=1)
    for l in range(3):
        torch.testing.assert_close(res.nodes[l], diag, atol=1e-9, rtol=0)
        torch.testing.assert_close(res.weights[l], torch.full((25,), 1 / 25,
                                                              dtype=torch.float64))
    assert res.trace()[0] == pytest.approx(float(diag.sum()))
    assert res.moment(2)[0] == pytest.approx(float(diag.pow(2).mean()))


def test_density_integrates_to_one_and_moments_match_the_exact_spectrum():
    a = _sym(200, 0)
    exact = torch.linalg.eigvalsh(a)
    res = stochastic_lanczos_quadrature(lambda v: a @ v, 200, num_probes=30, num_steps=40,
                                        seed=0)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(30, dtype=torch.float64))
    grid = torch.linspace(-5, 12, 4001, dtype=torch.float64)
    dens = res.density(grid, bandwidth=0.05)
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-6)
    # Hutchinson-type moments: within 4 standard errors of the exact ones
    tr, se = res.trace()
    assert abs(tr - float(exact.sum())) < 4 * se
    m2, se2 = res.moment(2)
    assert abs(m2 - float(exact.pow(2).mean())) < 4 * se2
    # Lanczos resolves the extreme (outlier) eigenvalues
    assert float(res.nodes.max()) == pytest.approx(float(exact.max()), rel=1e-8)
    assert float(res.nodes.min()) == pytest.approx(float(exact.min()), rel=1e-6)
    # the three outliers: about 3 eigenvalues above the bulk edge (~2)
    count, _ = res.count_above(4.0)
    assert count == pytest.approx(3.0, abs=1.0)
    # the smoothed exact density and the SLQ density agree in the bulk
    exact_dens = gaussian_density(exact, grid, 0.3)
    slq_dens = res.density(grid, 0.3)
    assert float(torch.trapezoid((exact_dens - slq_dens).abs(), grid)) < 0.15


def test_block_and_vector_operators_and_seeds_agree():
    a = _sym(50, 3)
    r1 = stochastic_lanczos_quadrature(lambda v: a @ v, 50, num_probes=4, num_steps=10, seed=5)
    r2 = stochastic_lanczos_quadrature(lambda v: a @ v, 50, num_probes=4, num_steps=10, seed=5,
                                       block=False)
    torch.testing.assert_close(r1.nodes, r2.nodes)
    torch.testing.assert_close(r1.weights, r2.weights)
    # running the probes in groups (bounded memory) changes nothing
    r4 = stochastic_lanczos_quadrature(lambda v: a @ v, 50, num_probes=4, num_steps=10, seed=5,
                                       probe_block=3)
    torch.testing.assert_close(r1.nodes, r4.nodes)
    torch.testing.assert_close(r1.weights, r4.weights)
    r3 = stochastic_lanczos_quadrature(lambda v: a @ v, 50, num_probes=4, num_steps=10, seed=6)
    assert not torch.allclose(r1.nodes, r3.nodes)


def test_breakdown_on_a_low_rank_operator_keeps_weights_normalised():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    a = u @ u.T  # rank 2: the Krylov space closes after 3 steps
    res = stochastic_lanczos_quadrature(lambda v: a @ v, 40, num_probes=5, num_steps=20)
    assert torch.isfinite(res.nodes).all() and torch.isfinite(res.weights).all()
    torch.testing.assert_close(res.weights.sum(1), torch.ones(5, dtype=torch.float64))
    heavy = res.nodes[res.weights > 1e-10]
    exact = torch.linalg.eigvalsh(a)
    for x in heavy:  # every node with weight is 0 or one of the two non-zero eigenvalues
        assert min(abs(float(x)), *(abs(float(x - e)) for e in exact[-2:])) < 1e-8


def test_slq_of_a_network_hessian_matches_the_dense_hessian():
    from goldilocks_zone import hessian_vector_product

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    dim = sum(p.numel() for p in model.parameters())
    dense = hessian_vector_product(model, (x, y), torch.eye(dim, dtype=torch.float64))
    exact = torch.linalg.eigvalsh(0.5 * (dense + dense.T))
    res = stochastic_lanczos_quadrature(
        lambda v: hessian_vector_product(model, (x, y), v), dim, num_probes=20, num_steps=30)
    tr, se = res.trace()
    assert abs(tr - float(exact.sum())) < 4 * se + 1e-9
    assert float(res.nodes.max()) == pytest.approx(float(exact.max()), rel=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="num_probes"):
        stochastic_lanczos_quadrature(lambda v: v, 5, num_probes=0)
    with pytest.raises(ValueError, match="probe_block"):
        stochastic_lanczos_quadrature(lambda v: v, 5, probe_block=0)
    with pytest.raises(ValueError, match="shape"):
        stochastic_lanczos_quadrature(lambda v: v[:-1], 5)
    with pytest.raises(ValueError, match="bandwidth"):
        gaussian_density(torch.zeros(3), torch.zeros(2), 0.0)


def test_one_lanczos_kernel_block_columns_match_single_runs():
    """The shared kernel run on a block of start vectors gives, per column, the tridiagonal of
    the same kernel run on that column alone; its Lanczos vectors are orthonormal."""
    from goldilocks_zone.curvature.lanczos import lanczos_iteration
    from goldilocks_zone.curvature.random import torch_generator

    gen = torch_generator(3)
    a = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    a = a + a.T
    v = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    v = v / v.norm(dim=0)
    *_, block = lanczos_iteration(lambda x: a @ x, v, 6)
    for i in range(3):
        *_, single = lanczos_iteration(lambda x: a @ x, v[:, i:i + 1], 6)
        assert torch.allclose(block.tridiagonal()[i], single.tridiagonal()[0], atol=1e-10)
    q = block.basis[:, :, 0]
    assert torch.allclose(q @ q.T, torch.eye(6, dtype=torch.float64), atol=1e-10)


def test_generators_come_from_one_place_and_repeat_per_seed():
    from goldilocks_zone.curvature.random import numpy_generator, torch_generator

    assert torch.equal(torch.randn(4, generator=torch_generator(7)),
                       torch.randn(4, generator=torch_generator(7)))
    assert numpy_generator(7).integers(0, 10**9) == numpy_generator(7).integers(0, 10**9)
    with pytest.raises(TypeError, match="seed"):
        torch_generator("7")
