"""P2's random model: exact curvature, outlier counting, gradient overlap, sigma_z sweep,
clustering cosines (SCIENCE.md §6)."""

from __future__ import annotations

import math

import pytest
import torch

from goldilocks_zone.theory import random_model as rm

SMALL = rm.RandomModelParams(dim=40, num_classes=4, num_samples=24, sigma_z=1.5,
                             label_margin=1.0, sigma_c=1.0, sigma_e=0.7, sigma_shared=0.5,
                             sigma_h=2.0)


def test_g_term_and_gradient_are_the_exact_derivatives_of_the_loss():
    """With no logit curvature the logits are linear in theta, z = z0 + J theta: the model's G
    and gradient must be the autograd Hessian and gradient of the mean cross-entropy at 0."""
    params = SMALL.replace(sigma_h=0.0)
    s = rm.simulate(params, seed=3)
    jac, z0, y = s.logit_gradients, s.logits, s.labels

    def loss(theta):
        z = z0 + torch.einsum("nkd,d->nk", jac, theta)
        return torch.nn.functional.cross_entropy(z, y)

    theta = torch.zeros(params.dim, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(loss, theta)
    grad = torch.autograd.functional.jacobian(loss, theta)
    torch.testing.assert_close(s.g_term, hess, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.gradient, grad, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(s.h_term) == 0
    torch.testing.assert_close(s.hessian, s.g_term + s.h_term)
    assert s.loss == pytest.approx(float(loss(theta)))
    # G is PSD with rank <= N (K - 1)
    ev = torch.linalg.eigvalsh(s.g_term)
    assert ev.min() > -1e-10 * ev.max()


@pytest.mark.parametrize("mode", rm.LOGIT_HESSIAN_MODES)
def test_h_term_has_the_goe_variance_of_the_weighted_logit_hessians(mode):
    """E||H||_F^2 = sigma_H^2 ||p - y||_F^2 (D + 1) / N^2 for both the collapsed draw and the
    explicit sum of N K independent logit Hessians; H is symmetric with trace ~ 0."""
    params = SMALL.replace(dim=30, sigma_c=0.0, sigma_shared=0.0)
    ratios = []
    for seed in range(6):
        s = rm.simulate(params, seed=seed, logit_hessians=mode)
        y = torch.nn.functional.one_hot(s.labels, params.num_classes).double()
        w2 = float((s.probs - y).pow(2).sum())
        expected = params.sigma_h ** 2 * w2 * (params.dim + 1) / params.num_samples ** 2
        ratios.append(float(s.h_term.pow(2).sum()) / expected)
        torch.testing.assert_close(s.h_term, s.h_term.T)
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.12)


def test_explicit_logit_hessians_refuse_huge_problems():
    with pytest.raises(ValueError, match="collapsed"):
        rm.simulate(rm.RandomModelParams(), logit_hessians="explicit")
    with pytest.raises(ValueError, match="logit_hessians"):
        rm.simulate(SMALL, logit_hessians="dense")


def test_seeds_and_common_random_numbers():
    a, b = rm.simulate(SMALL, seed=1), rm.simulate(SMALL, seed=1)
    torch.testing.assert_close(a.hessian, b.hessian, rtol=0, atol=0)
    c = rm.simulate(SMALL, seed=2)
    assert not torch.allclose(a.hessian, c.hessian)
    # changing sigma_z leaves the noise, means and logit-Hessian draws alone
    d = rm.simulate(SMALL.replace(sigma_z=3.0), seed=1)
    torch.testing.assert_close(d.logit_gradients, a.logit_gradients, rtol=0, atol=0)
    torch.testing.assert_close(d.logits, 2.0 * a.logits)
    # a shared draw gives the same result as drawing from the seed
    drw = rm.draw(SMALL.dim, SMALL.num_classes, SMALL.num_samples, seed=1)
    torch.testing.assert_close(rm.simulate(SMALL, draw_=drw).hessian, a.hessian, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shape"):
        rm.simulate(SMALL.replace(dim=41), draw_=drw)


def test_bad_parameters_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="sigma_e"):
        rm.RandomModelParams(sigma_e=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        rm.RandomModelParams(num_classes=10, num_samples=5)
    with pytest.raises(ValueError, match="label_margin"):
        rm.RandomModelParams(label_margin=math.inf)
    with pytest.raises(ValueError, match="sigma_zs"):
        rm.sigma_z_sweep(SMALL, [])


def test_count_outliers_finds_the_top_group_above_the_edge():
    # a group of 3 well above a group of 5 above the edge at 1.0, then the bulk
    ev = [10.0, 9.5, 9.0, 4.0, 3.8, 3.7, 3.5, 3.4] + [0.9 - 0.01 * i for i in range(50)]
    out = rm.count_outliers(torch.tensor(ev).flip(0), 1.0)
    assert (out.num_outliers, out.num_above_edge) == (3, 8)
    assert out.gap_ratio == pytest.approx(9.0 / 4.0)
    # a continuum above the edge with no gap: nothing is separated
    cont = [1.0 + 0.05 * i for i in range(20)] + [0.5]
    assert rm.count_outliers(cont, 1.0).num_outliers == 0
    # the last member of the group is compared to the edge, not to the bulk below it
    assert rm.count_outliers([5.0, 4.8, 1.2, 0.3], 1.0).num_outliers == 2
    assert rm.count_outliers([5.0, 4.8, 0.9, 0.3], 1.0).num_outliers == 2
    assert rm.count_outliers([1.1, 1.05, 0.5], 1.0).num_outliers == 0
    with pytest.raises(ValueError, match="min_gap_ratio"):
        rm.count_outliers([1.0], 0.5, min_gap_ratio=1.0)


def test_gradient_overlap_is_a_decomposition_of_the_gradient_power():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))
    lam = torch.linspace(-1, 5, 30, dtype=torch.float64)
    h = q @ torch.diag(lam) @ q.T
    g = 2.0 * q[:, -2] + 1.0 * q[:, -1]  # eigenvalues 5 and the next one down
    ov = rm.gradient_overlap(h, g)
    assert torch.all(ov.eigenvalues[:-1] >= ov.eigenvalues[1:])
    assert float(ov.cosines.pow(2).sum()) == pytest.approx(1.0)
    assert ov.power_in_top(1) == pytest.approx(1 / 5)
    assert ov.power_in_top(2) == pytest.approx(1.0)
    assert rm.gradient_overlap(h, torch.zeros(30, dtype=torch.float64)).power_in_top(30) == 0


def test_clustering_cosines_match_the_model_and_a_brute_force_count():
    params = rm.RandomModelParams(dim=2000, num_classes=3, num_samples=30, sigma_c=1.0,
                                  sigma_e=1.0, sigma_shared=0.8)
    s = rm.simulate(params.replace(sigma_h=0.0), seed=0)
    q = rm.logit_gradient_cosines(s.logit_gradients, s.labels)
    theory = rm.clustering_theory(params)
    assert q.same_logit_same_class == pytest.approx(theory["q_slsc"], abs=0.05)
    assert q.same_logit == pytest.approx(theory["q_sl"], abs=0.05)
    assert abs(q.different_logits) < 0.02
    assert q.same_logit_same_class > q.same_logit > q.different_logits
    # brute force over all ordered pairs of distinct samples, one zero row left out
    jac = s.logit_gradients[:9, :, :50].clone()
    jac[4, 1] = 0.0
    labels = s.labels[:9]
    u = jac / jac.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    sums = {"slsc": [], "sl": [], "dl": []}
    for m in range(9):
        for n in range(9):
            for k in range(3):
                for l in range(3):
                    if m == n or not (jac[m, k].any() and jac[n, l].any()):
                        continue
                    key = "dl" if k != l else ("slsc" if labels[m] == labels[n] else "sl")
                    sums[key].append(float(u[m, k] @ u[n, l]))
    # streamed in two chunks
    acc = rm.CosineAccumulator(3)
    acc.update(jac[:4], labels[:4])
    acc.update(jac[4:], labels[4:])
    got = acc.result()
    assert got.same_logit_same_class == pytest.approx(sum(sums["slsc"]) / len(sums["slsc"]))
    assert got.same_logit == pytest.approx(sum(sums["sl"]) / len(sums["sl"]))
    assert got.different_logits == pytest.approx(sum(sums["dl"]) / len(sums["dl"]))
    assert (got.pairs_slsc, got.pairs_sl, got.pairs_dl) == tuple(len(sums[k]) for k in sums)


def test_outliers_hold_the_gradient_at_d1000():
    """Acceptance (P2 Fig. 5-6): at D = 1000, C = 10 the spectrum is a bulk plus C outliers
    separated from it, and the top-10 eigenvectors carry the majority of the gradient power."""
    params = rm.RandomModelParams()
    s = rm.simulate(params, seed=0)
    stats = rm.analyse_spectrum(s, seed=0)
    assert stats["num_outliers"] == params.num_classes
    assert stats["gap_ratio"] >= rm.MIN_GAP_RATIO
    assert stats["num_above_edge"] >= stats["num_outliers"]
    assert stats["top_eigenvalue"] > 2 * stats["bulk_edge"]
    assert stats["gradient_power_top10"] > 0.5
    # the control: logits blind to the labels spread the gradient over ~C(K-1) outliers
    blind = rm.simulate(params.replace(label_margin=0.0), seed=0)
    assert rm.gradient_overlap(blind.hessian, blind.gradient).power_in_top(10) < 0.3


def test_curvature_rises_then_falls_with_sigma_z():
    """Acceptance (P2 Fig. 7-8): with sigma_c grown alongside sigma_z, Tr H / ||H|| is ~0
    at small sigma_z (weak logit curvature dominates), peaks, and falls back to ~0 once the
    softmax has frozen; the top eigenvalue also rises, then falls."""
    params = rm.RandomModelParams(dim=120, num_samples=200)
    grid = [1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4]
    pts = rm.sigma_z_sweep(params, grid, seed=0, with_edge=False)
    kappa = [p.stats["positive_curvature"] for p in pts]
    top = [p.stats["top_eigenvalue"] for p in pts]
    peak = max(range(len(grid)), key=kappa.__getitem__)
    assert 0 < peak < len(grid) - 1
    assert kappa[peak] > 5.0
    assert abs(kappa[0]) < 0.5 and abs(kappa[-1]) < 0.5
    assert all(a <= b for a, b in zip(kappa[:peak], kappa[1:peak + 1]))
    top_peak = max(range(len(grid)), key=top.__getitem__)
    assert 0 < top_peak < len(grid) - 1 and top[-1] < 0.01 * top[top_peak]
    # freezing: the entropy falls from log K to ~0; the ratio sigma_c / sigma_e is fixed
    assert pts[0].stats["mean_entropy"] == pytest.approx(math.log(10), rel=1e-3)
    assert pts[-1].stats["mean_entropy"] < 1e-3
    assert {round(p.params.sigma_c / p.params.sigma_e, 12) for p in pts} == {0.5}


def test_simulate_logits_is_the_cheap_path_to_the_same_logits():
    z, y = rm.simulate_logits(SMALL, seed=4)
    s = rm.simulate(SMALL, seed=4)
    torch.testing.assert_close(z, s.logits, rtol=0, atol=0)
    assert torch.equal(y, s.labels)
    # the margin shifts only the true class's logit, by label_margin * sigma_z on average
    big = SMALL.replace(num_samples=20000)
    z, y = rm.simulate_logits(big, seed=0)
    true = z.gather(1, y[:, None]).mean()
    other = (z.sum() - z.gather(1, y[:, None]).sum()) / (z.numel() - y.numel())
    assert float(true - other) == pytest.approx(big.label_margin * big.sigma_z, abs=0.05)
