"""The subspace engine against dense float64 plain-autograd oracles (SCIENCE.md §2-3)."""

import math

import pytest
import torch
from curvature_oracle import (
    CASES,
    dense_projected_jacobians,
    dense_subspace_gradient,
    dense_subspace_hessian,
    direct_h_term,
    explicit_g_term,
    finite_difference_hessian,
    make_case,
)

from goldilocks_zone import (
    projected_logit_jacobians,
    random_basis,
    subspace_curvature,
    subspace_g_term,
)

TOL = 1e-10


def rel(a, b):
    return float((a - b).norm() / b.norm())


SETTINGS = [  # (temperature, scale, batch_size): T != 1, scale != 1, partial last batches
    (1.0, 1.0, None),
    (0.6, 1.7, 5),
    (2.5, 0.8, 4),
]


@pytest.mark.parametrize("case", CASES)
def test_oracle_matches_finite_differences(case):
    model, x, y = make_case(case)
    basis = random_basis(sum(p.numel() for p in model.parameters()), 4, seed=3)
    dense = dense_subspace_hessian(model, x, y, basis, temperature=0.7, scale=1.2)
    fd = finite_difference_hessian(model, x, y, basis, temperature=0.7, scale=1.2)
    assert rel(dense, fd) < 1e-7


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature,scale,batch_size", SETTINGS)
def test_hessian_g_h_match_dense_oracle(case, temperature, scale, batch_size):
    model, x, y = make_case(case)
    D = sum(p.numel() for p in model.parameters())
    basis = random_basis(D, 7, seed=11)
    kw = dict(temperature=temperature, scale=scale)
    res = subspace_curvature(model, (x, y), basis, batch_size=batch_size, verify_split=True,
                             **kw)
    hess = dense_subspace_hessian(model, x, y, basis, **kw)
    g = explicit_g_term(model, x, y, basis, **kw)
    h = direct_h_term(model, x, y, basis, **kw)
    assert rel(res.hessian, hess) < TOL
    assert rel(res.g_term, g) < TOL
    assert rel(res.h_term, hess - g) < TOL
    assert rel(res.h_term_direct, h) < TOL
    assert res.split_residual < TOL
    assert rel(subspace_g_term(model, (x, y), basis, batch_size=batch_size, **kw), g) < TOL
    assert res.num_samples == x.shape[0]
    for m in (res.hessian, res.g_term, res.h_term):
        assert m.dtype == torch.float64 and torch.equal(m, m.T)
    # The G-term is positive semi-definite.
    assert float(torch.linalg.eigvalsh(res.g_term).min()) > -1e-12 * float(res.g_term.norm())
    # Loss, gradient, priors.
    num_classes = res.mean_probs.numel()
    grad = dense_subspace_gradient(model, x, y, basis, **kw)
    assert rel(res.projected_gradient, grad) < TOL
    assert torch.allclose(res.class_prior, torch.bincount(y, minlength=num_classes).double()
                          / len(y))
    assert math.isclose(float(res.mean_probs.sum()), 1.0, rel_tol=1e-12)


def test_dataloader_input_equals_tensor_input():
    model, x, y = make_case("tanh-mlp-bias")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    a = subspace_curvature(model, loader, basis, temperature=1.3)
    b = dense_subspace_hessian(model, x, y, basis, temperature=1.3)
    assert rel(a.hessian, b) < TOL
    # Loss is the mean over samples, not over (unequal) batches.
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(model(x) / 1.3, y)
    assert math.isclose(a.loss, float(ref), rel_tol=1e-12)


def test_projected_jacobians_match_autograd():
    model, x, y = make_case("cnn-avgpool")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 6, seed=4)
    pj = projected_logit_jacobians(model, (x, y), basis, temperature=0.9, scale=1.1,
                                   batch_size=5)
    ref = dense_projected_jacobians(model, x, basis, temperature=0.9, scale=1.1)
    assert pj.jacobians.shape == ref.shape
    assert rel(pj.jacobians, ref) < TOL
    assert torch.equal(pj.targets, y)


def test_float32_model_returns_float64_close_to_float64():
    model, x, y = make_case("relu-mlp")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=9)
    ref = subspace_curvature(model, (x, y), basis)
    m32 = make_case("relu-mlp")[0].float()
    res = subspace_curvature(m32, (x.float(), y), basis.float())
    assert res.hessian.dtype == torch.float64
    assert rel(res.hessian, ref.hessian) < 1e-5
    assert rel(res.g_term, ref.g_term) < 1e-5


def test_sparse_basis_also_exact():
    model, x, y = make_case("tanh-mlp-bias")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 6, kind="sparse", seed=5)
    res = subspace_curvature(model, (x, y), basis)
    assert rel(res.hessian, dense_subspace_hessian(model, x, y, basis)) < TOL


def test_params_override_is_functional():
    model, x, y = make_case("relu-mlp")
    other, _, _ = make_case("relu-mlp", seed=5)
    basis = random_basis(sum(p.numel() for p in model.parameters()), 4, seed=1)
    res = subspace_curvature(model, (x, y), basis,
                             params={k: v.detach() for k, v in other.named_parameters()})
    assert rel(res.hessian, dense_subspace_hessian(other, x, y, basis)) < TOL
