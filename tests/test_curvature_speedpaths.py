"""The fast paths of subspace_curvature (terms=, column blocks, basis layout, float32
accumulation) against the dense float64 oracles."""

import pytest
import torch
from curvature_oracle import (
    CASES,
    as_dict,
    dense_subspace_gradient,
    dense_subspace_hessian,
    direct_h_term,
    explicit_g_term,
    flat_params,
    make_case,
)
from torch.func import functional_call, grad, jvp, vmap

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.curvature import subspace
from goldilocks_zone.curvature.subspace import column_block_size

TOL = 1e-10


def rel(a, b):
    return float((a - b).norm() / b.norm())


def dim(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("terms", [("hessian",), ("g_term",), ("h_term",),
                                   ("hessian", "g_term"), ("g_term", "h_term")])
def test_each_subset_of_terms_matches_the_oracle(case, terms):
    model, x, y = make_case(case)
    basis = random_basis(dim(model), 5, seed=7)
    kw = dict(temperature=0.7, scale=1.3)
    res = subspace_curvature(model, (x, y), basis, terms=terms, batch_size=6, **kw)
    hess = dense_subspace_hessian(model, x, y, basis, **kw)
    g = explicit_g_term(model, x, y, basis, **kw)
    expected = {"hessian": hess, "g_term": g, "h_term": hess - g}
    for term in ("hessian", "g_term", "h_term"):
        if term in terms:
            assert rel(res.matrix(term), expected[term]) < TOL
            assert torch.equal(res.matrix(term), res.matrix(term).T)
        else:
            assert getattr(res, term) is None
            with pytest.raises(ValueError, match=f"{term}.*not computed"):
                res.stats(term)
    assert res.terms == tuple(t for t in ("hessian", "g_term", "h_term") if t in terms)
    assert rel(res.projected_gradient, dense_subspace_gradient(model, x, y, basis, **kw)) < TOL
    assert res.dim == 5


def test_g_term_alone_uses_forward_mode_only(monkeypatch):
    model, x, y = make_case("relu-mlp")
    basis = random_basis(dim(model), 4, seed=1)

    def no_reverse(*args, **kwargs):
        raise AssertionError("terms=('g_term',) must not run the forward-over-reverse pass")

    monkeypatch.setattr(subspace, "_chunk_pass", no_reverse)
    res = subspace_curvature(model, (x, y), basis, terms=("g_term",))
    assert rel(res.g_term, explicit_g_term(model, x, y, basis)) < TOL


def test_verify_split_with_a_subset_of_terms():
    model, x, y = make_case("tanh-mlp-bias")
    basis = random_basis(dim(model), 4, seed=2)
    res = subspace_curvature(model, (x, y), basis, terms=("g_term",), verify_split=True)
    assert res.hessian is None and res.h_term is None
    assert rel(res.h_term_direct, direct_h_term(model, x, y, basis)) < TOL
    assert res.split_residual < TOL


@pytest.mark.parametrize("case", ["cnn-avgpool", "layernorm-mlp"])
def test_column_blocks_smaller_than_d_are_exact(case, monkeypatch):
    """A memory budget of ~1.5 columns forces blocks of one column (many vmapped passes)."""
    model, x, y = make_case(case)
    D = dim(model)
    basis = random_basis(D, 5, seed=3)
    monkeypatch.setattr(subspace, "TANGENT_BUDGET_BYTES", int(1.5 * D * 8))
    assert column_block_size(D, 5, 8, subspace.TANGENT_BUDGET_BYTES) == 1
    res = subspace_curvature(model, (x, y), basis, verify_split=True, batch_size=5)
    assert rel(res.hessian, dense_subspace_hessian(model, x, y, basis)) < TOL
    assert rel(res.g_term, explicit_g_term(model, x, y, basis)) < TOL
    assert rel(res.h_term_direct, direct_h_term(model, x, y, basis)) < TOL


def test_column_block_size_follows_the_budget():
    assert column_block_size(266_200, 50, 8) == 50  # LeNet-300-100, float64: one block
    assert column_block_size(10_000_000, 50, 4) == 13  # 10M params, float32
    assert column_block_size(10**12, 50, 8) == 1  # never zero
    assert column_block_size(10, 3, 8, budget=10**9) == 3  # never more than d


def test_row_major_and_column_major_bases_give_the_same_result():
    model, x, y = make_case("cnn-avgpool")
    basis = random_basis(dim(model), 6, seed=4)
    row_major = basis.T.contiguous().T  # (D, d) view of a (d, D) contiguous tensor
    assert not row_major.is_contiguous()
    a = subspace_curvature(model, (x, y), basis)
    b = subspace_curvature(model, (x, y), row_major)
    for term in ("hessian", "g_term", "h_term"):
        assert rel(a.matrix(term), b.matrix(term)) < 1e-13


def test_bad_terms_are_rejected_before_any_work():
    model, x, y = make_case("relu-mlp")
    basis = random_basis(dim(model), 3, seed=0)
    with pytest.raises(ValueError, match="subset of"):
        subspace_curvature(model, (x, y), basis, terms=("hessian", "trace"))
    with pytest.raises(ValueError, match="non-empty"):
        subspace_curvature(model, (x, y), basis, terms=())
    with pytest.raises(TypeError, match="terms must be"):
        subspace_curvature(model, (x, y), basis, terms=3)
    assert subspace_curvature(model, (x, y), basis, terms="g_term").terms == ("g_term",)


def peer_float32_hessian(model, x, y, basis):
    """The peers' float32 algorithm: H R by vmapped forward-over-reverse on the flat
    parameter vector, then R^T (H R), all in float32."""
    theta = flat_params(model)

    def loss(t):
        z = functional_call(model, as_dict(model, t), (x,))
        return torch.nn.functional.cross_entropy(z, y)

    hr = vmap(lambda v: jvp(grad(loss), (theta,), (v,))[1])(basis.T)  # (d, D)
    return (hr @ basis).double()


def test_float32_accuracy_within_twice_the_peers_error():
    """Per-chunk d×d sums and the G-term contraction are accumulated in float64, so the
    float32 result is as accurate as a float32 peer (here: at most 2× its error)."""
    def mlp(dtype):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(30, 40, bias=False), torch.nn.ReLU(),
            torch.nn.Linear(40, 40, bias=False), torch.nn.ReLU(),
            torch.nn.Linear(40, 10, bias=False)).to(dtype)

    model, m32 = mlp(torch.float64), mlp(torch.float32)
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 30, dtype=torch.float64, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    basis = random_basis(dim(model), 8, seed=5)
    ref = subspace_curvature(model, (x, y), basis, terms=("hessian", "g_term"))
    res = subspace_curvature(m32, (x.float(), y), basis.float(), batch_size=64)
    assert res.hessian.dtype == torch.float64
    peer = peer_float32_hessian(m32, x.float(), y, basis.float())
    peer_err = rel(0.5 * (peer + peer.T), ref.hessian)
    assert 0 < peer_err < 1e-4
    assert rel(res.hessian, ref.hessian) <= 2 * peer_err
    assert rel(res.g_term, ref.g_term) <= 2 * peer_err
