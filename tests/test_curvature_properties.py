"""Invariants of the curvature core (hypothesis property tests), spectra, bases, bad input."""

import math

import pytest
import torch
from curvature_oracle import dense_full_hessian, make_case
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from goldilocks_zone import (
    hessian_top_eigenpairs,
    hessian_vector_product,
    hutchinson_frobenius,
    hutchinson_trace,
    hutchpp_frobenius,
    hutchpp_trace,
    loss_gradient,
    random_basis,
    spectrum_stats,
    subspace_curvature,
)
from goldilocks_zone.curvature import hutchinson_estimate, hutchpp

FAST = settings(max_examples=12, deadline=None)


def relu_net(depth: int, seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    widths = [4] + [6] * (depth - 1) + [3]
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(widths[i], widths[i + 1], bias=False).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64)
                             * math.sqrt(2 / widths[i]))
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def snapshot(model):
    return ([p.detach().clone() for p in model.parameters()],
            [p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()])


@FAST
@given(depth=st.integers(2, 4), log_alpha=st.floats(-1.0, 1.0), seed=st.integers(0, 1000))
def test_scale_equals_temperature_for_homogeneous_relu(depth, log_alpha, seed):
    """∇²L(αθ; T=1) = α^{-2} ∇²L(θ; T=α^{-L}): same κ and π with the same basis."""
    model = relu_net(depth, seed)
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = torch.arange(20) % 3
    alpha = 10.0 ** log_alpha
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=seed)
    by_scale = subspace_curvature(model, (x, y), basis, scale=alpha)
    by_temp = subspace_curvature(model, (x, y), basis, temperature=alpha ** -depth)
    for term in ("hessian", "g_term", "h_term"):
        a, b = by_scale.matrix(term), by_temp.matrix(term)
        assert torch.allclose(a, b * alpha ** -2, rtol=1e-9, atol=1e-12 * float(b.abs().max()))
    sa, sb = by_scale.stats(), by_temp.stats()
    assert math.isclose(sa.positive_curvature, sb.positive_curvature, rel_tol=1e-8,
                        abs_tol=1e-10)
    assert sa.fraction_positive == sb.fraction_positive
    assert math.isclose(by_scale.loss, by_temp.loss, rel_tol=1e-10)


@FAST
@given(seed=st.integers(0, 10_000), d=st.integers(1, 12))
def test_kappa_within_sqrt_d(seed, d):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    shift = torch.randn((), generator=g, dtype=torch.float64) * 3
    a = a + a.T + shift * torch.eye(d, dtype=torch.float64)
    s = spectrum_stats(a)
    assert -math.sqrt(d) - 1e-12 <= s.positive_curvature <= math.sqrt(d) + 1e-12
    assert 0.0 <= s.fraction_positive <= 1.0
    assert math.isclose(s.trace, float(torch.trace(a)), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(s.frobenius, float(a.norm()), rel_tol=1e-12)


@FAST
@given(case=st.sampled_from(["relu-mlp", "tanh-mlp-bias", "cnn-avgpool"]),
       train=st.booleans(), scale=st.floats(0.1, 10.0), temperature=st.floats(0.1, 10.0))
def test_model_unchanged_after_every_call(case, train, scale, temperature):
    model, x, y = make_case(case)
    model.train(train)
    model[0].requires_grad_(False) if isinstance(model, nn.Sequential) else None
    before = snapshot(model)
    basis = random_basis(sum(p.numel() for p in model.parameters() if p.requires_grad), 3,
                         seed=0)  # frozen parameters are not differentiated (trainable_only)
    kw = dict(scale=scale, temperature=temperature)
    subspace_curvature(model, (x, y), basis, verify_split=True, **kw)
    loss_gradient(model, (x, y), basis=basis, **kw)
    hessian_vector_product(model, (x, y), basis[:, 0], term="g_term", **kw)
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert before[1:] == after[1:]


def test_spectrum_degenerate_and_nonfinite():
    zero = spectrum_stats(torch.zeros(4, 4, dtype=torch.float64))
    assert zero.positive_curvature == 0.0 and zero.fraction_positive == 0.0
    assert zero.spectral_norm == 0.0
    bad = spectrum_stats(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]))
    assert not bad.finite and math.isnan(bad.positive_curvature)
    s = spectrum_stats(torch.diag(torch.tensor([-3.0, 1.0, 2.0], dtype=torch.float64)))
    assert s.spectral_norm == 3.0 and s.top_eigenvalue == 2.0
    assert math.isclose(s.positive_curvature, 0.0)
    assert math.isclose(s.fraction_positive, 2 / 3)
    assert torch.equal(s.eigenvalues, torch.tensor([-3.0, 1.0, 2.0], dtype=torch.float64))


def test_random_basis_kinds_and_seeds():
    r = random_basis(500, 20, seed=7)
    assert r.shape == (500, 20) and r.dtype == torch.float64
    assert torch.allclose(r.T @ r, torch.eye(20, dtype=torch.float64), atol=1e-12)
    assert torch.equal(r, random_basis(500, 20, seed=7))
    assert not torch.equal(r, random_basis(500, 20, seed=8))
    assert torch.equal(random_basis(500, 20, seed=7, dtype=torch.float32), r.float())
    s = random_basis(10_000, 30, kind="sparse", seed=1)
    assert torch.allclose(s.norm(dim=0), torch.ones(30, dtype=torch.float64))
    nnz = (s != 0).sum(0).double()
    assert abs(float(nnz.mean()) - 100.0) < 10  # density 1/sqrt(D): ~100 per column
    values = s[s != 0] * nnz.sqrt().expand_as(s)[s != 0]
    assert torch.allclose(values.abs(), torch.ones_like(values))
    with pytest.raises(ValueError, match="kind"):
        random_basis(10, 2, kind="dense")
    with pytest.raises(ValueError, match="exceeds"):
        random_basis(3, 5)


def test_nonfinite_at_extreme_scale_is_data_not_a_crash():
    model = relu_net(3, 0)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.arange(10) % 3
    basis = random_basis(sum(p.numel() for p in model.parameters()), 4, seed=0)
    res = subspace_curvature(model, (x, y), basis, scale=1e120)
    assert not res.finite
    s = res.stats("hessian")
    assert not s.finite or s.positive_curvature == 0.0


# ----------------------------------------------------------------------- estimators


@pytest.mark.parametrize("term", ["hessian", "g_term"])
def test_hutchinson_within_three_standard_errors(term):
    model, x, y = make_case("tanh-mlp-bias")
    full = dense_full_hessian(model, x, y, temperature=0.8)
    if term == "g_term":
        basis = torch.eye(full.shape[0], dtype=torch.float64)
        full = subspace_curvature(model, (x, y), basis, temperature=0.8).g_term
    tr = hutchinson_trace(model, (x, y), term=term, num_probes=200, seed=1, temperature=0.8)
    fr = hutchinson_frobenius(model, (x, y), term=term, num_probes=200, seed=2,
                              temperature=0.8)
    assert abs(tr.value - float(torch.trace(full))) < 3 * tr.std_error
    assert abs(fr.value - float(full.norm())) < 3 * fr.std_error
    assert tr.std_error > 0 and fr.num_probes == 200


def test_hutchpp_trace_and_frobenius_of_the_dense_hessian():
    model, x, y = make_case("tanh-mlp-bias")
    full = dense_full_hessian(model, x, y, temperature=0.8)
    tr = hutchpp_trace(model, (x, y), num_matvecs=60, seed=3, temperature=0.8)
    fr = hutchpp_frobenius(model, (x, y), num_matvecs=60, seed=4, temperature=0.8)
    assert abs(tr.value - float(torch.trace(full))) < 4 * tr.std_error
    assert abs(fr.value - float(full.norm())) < 4 * fr.std_error
    assert tr.num_probes == 60 and tr.samples.numel() == 20 and 0 < tr.std_error < math.inf


def test_hutchpp_is_exact_when_the_sketch_covers_the_range():
    """The G-term of 4 samples with 3 classes has rank <= 8: a sketch of 10 columns captures
    it, so Hutch++ returns the exact trace and norm (no sampled remainder)."""
    model, x, y = make_case("tanh-mlp-bias")
    x, y = x[:4], y[:4]
    eye = torch.eye(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    g = subspace_curvature(model, (x, y), eye, terms=("g_term",)).g_term
    tr = hutchpp_trace(model, (x, y), term="g_term", num_matvecs=30, seed=0)
    fr = hutchpp_frobenius(model, (x, y), term="g_term", num_matvecs=30, seed=0)
    assert math.isclose(tr.value, float(torch.trace(g)), rel_tol=1e-10)
    assert math.isclose(fr.value, float(g.norm()), rel_tol=1e-10)
    assert tr.std_error < 1e-10 * abs(tr.value)


def test_hutchpp_has_smaller_variance_than_hutchinson_on_a_low_rank_dominated_matrix():
    g = torch.Generator().manual_seed(0)
    n = 120
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.cat([torch.tensor([90.0, 70.0, -50.0, 40.0, 30.0, 20.0], dtype=torch.float64),
                     0.05 * torch.randn(n - 6, generator=g, dtype=torch.float64)])
    a = q @ torch.diag(eig) @ q.T

    def matvec(v):
        return a @ v

    for kind, exact in (("trace", float(eig.sum())), ("frobenius", float(eig.norm()))):
        pp = torch.tensor([hutchpp(matvec, n, kind=kind, num_matvecs=30, seed=s).value
                           for s in range(40)])
        hu = torch.tensor([hutchinson_estimate(matvec, n, kind=kind, num_probes=30,
                                               seed=s).value for s in range(40)])
        assert float(((pp - exact) ** 2).mean()) < 0.01 * float(((hu - exact) ** 2).mean())
        one = hutchpp(matvec, n, kind=kind, num_matvecs=30, seed=0)
        assert abs(one.value - exact) < 4 * one.std_error


def test_hutchpp_bad_input():
    def matvec(v):
        return v

    with pytest.raises(ValueError, match="num_matvecs >= 3"):
        hutchpp(matvec, 10, num_matvecs=2)
    with pytest.raises(ValueError, match="kind"):
        hutchpp(matvec, 10, kind="nuclear")
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_estimate(matvec, 10, num_probes=0)
    # rank 3 and a sketch of 3 columns: exact
    u = torch.linalg.qr(torch.randn(10, 3, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(1)))[0]
    a = u @ torch.diag(torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)) @ u.T
    assert math.isclose(hutchpp(lambda v: a @ v, 10, num_matvecs=9).value, 4.0, rel_tol=1e-12)
    assert math.isclose(hutchpp(lambda v: a @ v, 10, kind="frobenius", num_matvecs=9).value,
                        math.sqrt(30), rel_tol=1e-12)


@pytest.mark.parametrize("term", ["hessian", "g_term", "h_term"])
def test_hvp_matches_dense(term):
    model, x, y = make_case("cnn-avgpool")
    D = sum(p.numel() for p in model.parameters())
    eye = torch.eye(D, dtype=torch.float64)
    ref = subspace_curvature(model, (x, y), eye, scale=1.3, batch_size=4).matrix(term)
    v = torch.randn(D, 3, dtype=torch.float64)
    out = hessian_vector_product(model, (x, y), v, term=term, scale=1.3, batch_size=4)
    assert float((out - ref @ v).norm() / (ref @ v).norm()) < 1e-10
    full = dense_full_hessian(model, x, y, scale=1.3)
    if term == "hessian":
        assert float((ref - full).norm() / full.norm()) < 1e-10


def test_full_gradient_matches_autograd():
    model, x, y = make_case("tanh-mlp-bias")
    g = loss_gradient(model, (x, y), temperature=1.5, batch_size=4)
    loss = torch.nn.functional.cross_entropy(model(x) / 1.5, y)
    ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    assert float((g - ref).norm() / ref.norm()) < 1e-12


def test_lanczos_top_eigenpairs_match_dense():
    model, x, y = make_case("tanh-mlp-bias")
    full = dense_full_hessian(model, x, y)
    evals = torch.linalg.eigvalsh(full)
    top = hessian_top_eigenpairs(model, (x, y), k=3, max_iterations=80, tol=1e-10, seed=0)
    assert top.converged
    expected = evals.flip(0)[:3]
    assert torch.allclose(top.eigenvalues, expected, rtol=1e-6)
    assert float(top.residuals.max()) < 1e-6 * float(expected.abs().max())
    v = top.eigenvectors[:, 0]
    assert math.isclose(float(v @ full @ v), float(expected[0]), rel_tol=1e-6)
    mag = hessian_top_eigenpairs(model, (x, y), k=1, which="magnitude", seed=1, tol=1e-10)
    assert math.isclose(float(mag.eigenvalues[0].abs()), float(evals.abs().max()), rel_tol=1e-6)


# ----------------------------------------------------------------------- bad input


def test_bad_input_errors_are_clear():
    model, x, y = make_case("relu-mlp")
    D = sum(p.numel() for p in model.parameters())
    basis = random_basis(D, 3, seed=0)
    with pytest.raises(ValueError, match=f"model has {D} parameters"):
        subspace_curvature(model, (x, y), random_basis(D + 1, 3))
    with pytest.raises(ValueError, match="dtype"):
        subspace_curvature(model, (x, y), basis.float())
    with pytest.raises(ValueError, match="inputs have dtype"):
        subspace_curvature(model, (x.float(), y), basis)
    with pytest.raises(ValueError, match="integer class indices"):
        subspace_curvature(model, (x, y.double()), basis)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        subspace_curvature(model, (x, y + 4), basis)
    late = y.clone()
    late[-1] = 4  # out of range only in the last chunk / the last row
    for bs in (None, 5):
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
            subspace_curvature(model, (x, late), basis, batch_size=bs)
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
            hessian_vector_product(model, (x, late), basis[:, 0], batch_size=bs)
    from goldilocks_zone import projected_logit_jacobians

    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        projected_logit_jacobians(model, (x, late), basis, batch_size=5)
    with pytest.raises(ValueError, match="empty"):
        subspace_curvature(model, (x[:0], y[:0]), basis)
    with pytest.raises(ValueError, match="temperature"):
        subspace_curvature(model, (x, y), basis, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        subspace_curvature(model, (x, y), basis, temperature=-1.0)
    with pytest.raises(ValueError, match="disagree"):
        subspace_curvature(model, (x, y[:-1]), basis)
    flat = nn.Sequential(model, nn.Flatten(0))
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        subspace_curvature(flat, (x, y), basis)
    with pytest.raises(TypeError, match="tuple"):
        subspace_curvature(model, [x, y, y], basis)
    dropout = nn.Sequential(nn.Linear(6, 4).double(), nn.Dropout(0.5))
    with pytest.raises(ValueError, match="dropout"):
        subspace_curvature(dropout, (x, y), random_basis(28, 2), train_mode=True)


def test_train_mode_batchnorm_does_not_touch_running_stats():
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(12, 6, dtype=torch.float64)
    y = torch.arange(12) % 3
    basis = random_basis(sum(p.numel() for p in model.parameters()), 3, seed=0)
    mean_before = model[1].running_mean.clone()
    ev = subspace_curvature(model, (x, y), basis)
    tr = subspace_curvature(model, (x, y), basis, train_mode=True)
    assert torch.equal(model[1].running_mean, mean_before)
    assert model.training  # the caller's flag is restored
    assert not torch.allclose(ev.hessian, tr.hessian)
