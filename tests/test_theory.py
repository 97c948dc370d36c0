"""P1's theory functions against closed forms, limits and Monte Carlo (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goldilocks_zone.theory import (
    authors_gradient_slope,
    expected_g_curvature,
    expected_projected_gradient,
    fit_random_model,
    gamma_p,
    gauss_newton_from_jacobians,
    gradient_noise_scale,
    is_saturated,
    matrix_positive_curvature,
    mean_softmax_covariance,
    predicted_gradient_slope,
    softmax_covariance,
)

F64 = torch.float64


def _probs(num_samples: int, num_classes: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(num_samples, num_classes, generator=g, dtype=F64)
    return torch.softmax(logits, dim=-1)


def test_softmax_covariance_matches_definition():
    p = _probs(4, 5, 1.0, 0)
    m = softmax_covariance(p)
    for s in range(4):
        ref = torch.diag(p[s]) - torch.outer(p[s], p[s])
        torch.testing.assert_close(m[s], ref)
    # rows sum to zero (the all-ones vector is in the kernel), PSD
    torch.testing.assert_close(m.sum(-1), torch.zeros(4, 5, dtype=F64))
    assert torch.linalg.eigvalsh(m).min() > -1e-14


def test_mean_softmax_covariance_is_sample_mean():
    p = _probs(7, 4, 2.0, 1)
    torch.testing.assert_close(mean_softmax_covariance(p), softmax_covariance(p).mean(0))
    # batched over leading axes
    pb = torch.stack([p, _probs(7, 4, 0.5, 2)])
    torch.testing.assert_close(mean_softmax_covariance(pb)[1],
                               softmax_covariance(pb[1]).mean(0))


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_gamma_p_is_sqrt_k_minus_one_at_uniform_outputs(num_classes):
    p = torch.full((5, num_classes), 1.0 / num_classes, dtype=F64)
    assert float(gamma_p(p)) == pytest.approx(math.sqrt(num_classes - 1), rel=1e-12)


def test_gamma_p_tends_to_one_for_confident_outputs():
    # one sample, one dominant class: M tends to rank one
    values = []
    for scale in (1.0, 10.0, 100.0):
        p = _probs(1, 10, scale, 3)
        values.append(float(gamma_p(p)))
    assert values[0] > values[1] > 1.0
    assert values[-1] == pytest.approx(1.0, abs=1e-3)
    # exactly one-hot: defined, equal to the limit 1
    assert float(gamma_p(torch.eye(10, dtype=F64)[:1])) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 20), st.floats(0.01, 20.0), st.integers(0, 10_000))
def test_gamma_p_range(num_classes, num_samples, scale, seed):
    g = float(gamma_p(_probs(num_samples, num_classes, scale, seed)))
    assert 1.0 - 1e-9 <= g <= math.sqrt(num_classes - 1) + 1e-9


def test_gamma_p_batched_over_logit_sets():
    p = torch.stack([_probs(3, 6, s, i) for i, s in enumerate((0.1, 1.0, 10.0))])
    batched = gamma_p(p)
    assert batched.shape == (3,)
    for i in range(3):
        assert float(batched[i]) == pytest.approx(float(gamma_p(p[i])), rel=1e-12)


def test_matrix_positive_curvature_closed_forms():
    assert float(matrix_positive_curvature(torch.eye(9, dtype=F64))) == pytest.approx(3.0)
    assert float(matrix_positive_curvature(torch.diag(torch.tensor([1.0, -1.0], dtype=F64)))) \
        == pytest.approx(0.0)
    assert float(matrix_positive_curvature(torch.zeros(3, 3, dtype=F64))) == 0.0


@pytest.mark.parametrize("dim", [1, 10, 50, 400])
def test_eq9_limits(dim):
    gamma = 2.2
    # sigma_c -> 0: isotropic noise, kappa = sqrt(d)
    assert float(expected_g_curvature(1e-14, 1.0, gamma, dim)) == pytest.approx(
        math.sqrt(dim), rel=1e-9)
    # sigma_E -> 0: the mean dominates, kappa = Gamma_p
    assert float(expected_g_curvature(1.0, 1e-14, gamma, dim)) == pytest.approx(gamma, rel=1e-9)
    # G vanishes: defined as 0
    assert float(expected_g_curvature(0.0, 0.0, gamma, dim)) == 0.0


def test_eq9_is_scale_free_and_monotone():
    # homogeneous of degree 0 in the variances, even at extreme magnitudes
    base = float(expected_g_curvature(0.3, 0.7, 2.0, 50))
    for f in (1e-200, 1e-30, 1e30, 1e200):
        assert float(expected_g_curvature(0.3 * f, 0.7 * f, 2.0, 50)) == pytest.approx(
            base, rel=1e-12)
    # more signal (sigma_c) -> closer to Gamma_p; here Gamma_p < sqrt(d), so kappa decreases
    ratios = torch.logspace(-4, 4, 30, dtype=F64)
    k = expected_g_curvature(ratios, torch.ones_like(ratios), 3.0, 50)
    assert bool((k[1:] <= k[:-1] + 1e-12).all())
    assert float(k[0]) == pytest.approx(math.sqrt(50), rel=1e-3)
    assert float(k[-1]) == pytest.approx(3.0, rel=1e-3)


def test_eq9_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        expected_g_curvature(-1.0, 1.0, 2.0, 5)
    with pytest.raises(ValueError, match="Gamma_p"):
        expected_g_curvature(1.0, 1.0, 0.0, 5)


def test_fit_random_model_recovers_variances():
    g = torch.Generator().manual_seed(0)
    num_samples, num_classes, dim = 400, 6, 80
    sigma_c, sigma_e = 0.7, 1.9
    mean = sigma_c * torch.randn(num_classes, dim, generator=g, dtype=F64)
    jac = mean + sigma_e * torch.randn(num_samples, num_classes, dim, generator=g, dtype=F64)
    fit = fit_random_model(jac)
    assert fit.sigma_e2 == pytest.approx(sigma_e**2, rel=0.02)
    # the sample mean keeps sigma_E^2 / S of noise; debiasing removes it
    assert fit.sigma_c2 == pytest.approx(sigma_c**2 + sigma_e**2 / num_samples, rel=0.06)
    debiased = fit_random_model(jac, debias=True)
    assert debiased.sigma_c2 == pytest.approx(fit.sigma_c2 - fit.sigma_e2 / num_samples)
    assert fit.logit_mean.shape == (num_classes, dim)
    with pytest.raises(ValueError, match=r"\(S, K, d\)"):
        fit_random_model(jac[0])


def test_gauss_newton_from_jacobians_matches_dense_reference():
    g = torch.Generator().manual_seed(1)
    jac = torch.randn(9, 4, 6, generator=g, dtype=F64)
    p = _probs(9, 4, 1.5, 2)
    ref = torch.einsum("skd,skl,sle->de", jac, softmax_covariance(p), jac) / 9
    torch.testing.assert_close(gauss_newton_from_jacobians(jac, p), ref)


@pytest.mark.parametrize("case", ["spread", "confident", "saturated"])
def test_g_term_names_are_one_implementation(case):
    r"""P2's ``g_term_from_jacobians`` and P1's ``gauss_newton_from_jacobians`` are one function:
    bitwise equal, exactly symmetric, and equal to the dense float64 definition
    :math:`\frac1S\sum_s J_s^\top(\mathrm{diag}\,p_s - p_sp_s^\top)J_s`, also when every
    softmax is saturated (there :math:`X^\top\mathrm{diag}(p)X - V^\top V` loses all digits)."""
    from goldilocks_zone.theory.random_model import g_term_from_jacobians

    g = torch.Generator().manual_seed(11)
    jac = torch.randn(30, 5, 7, generator=g, dtype=F64)
    noise = torch.randn(30, 5, generator=g, dtype=F64)
    if case == "saturated":  # runner-up ~e^-40 below the top class, G tiny against |J|^2
        jac = 1e6 * jac
        top = torch.randint(0, 5, (30,), generator=g)
        logits = 40.0 * torch.nn.functional.one_hot(top, 5).to(F64) + 0.1 * noise
    else:
        logits = (0.5 if case == "spread" else 3.0) * noise
    p = torch.softmax(logits, dim=-1)
    gn = gauss_newton_from_jacobians(jac, p)
    assert torch.equal(g_term_from_jacobians(jac, p), gn)
    assert torch.equal(gn, gn.T)
    ref = torch.einsum("skd,skl,sle->de", jac, softmax_covariance(p), jac) / 30
    torch.testing.assert_close(gn, ref, rtol=1e-10, atol=1e-13 * float(ref.abs().max()))
    assert torch.linalg.eigvalsh(gn).min() >= 0


def test_eq9_against_monte_carlo_random_model():
    """Build J_s R = C + E_s with the model's statistics and measure kappa(G) directly: Eq. 9
    should predict it (d >> K so that C C^T is close to d sigma_c^2 I)."""
    g = torch.Generator().manual_seed(5)
    num_samples, num_classes, dim = 800, 5, 200
    probs = _probs(num_samples, num_classes, 1.0, 7)
    for sigma_c, sigma_e in ((1.0, 0.05), (1.0, 0.5), (0.2, 1.0), (0.01, 1.0)):
        mean = sigma_c * torch.randn(num_classes, dim, generator=g, dtype=F64)
        jac = mean + sigma_e * torch.randn(num_samples, num_classes, dim, generator=g,
                                           dtype=F64)
        measured = float(matrix_positive_curvature(gauss_newton_from_jacobians(jac, probs)))
        fit = fit_random_model(jac, debias=True)
        predicted = float(expected_g_curvature(fit.sigma_c2, fit.sigma_e2, gamma_p(probs), dim))
        assert measured == pytest.approx(predicted, rel=0.1), (sigma_c, sigma_e)


def test_eq10_slope_and_leading_term():
    g = torch.Generator().manual_seed(3)
    num_classes, dim, sigma_c = 10, 2000, 0.3
    mean = sigma_c * torch.randn(num_classes, dim, generator=g, dtype=F64)
    q = torch.full((num_classes,), 0.1, dtype=F64)
    # p-bar equal to the prior: the leading term vanishes
    assert float(expected_projected_gradient(mean, q, q).norm()) == 0.0
    slope = predicted_gradient_slope(float(mean.var(correction=0)), dim)
    ratios = []
    for i in range(20):
        p = torch.softmax(torch.randn(num_classes, generator=g, dtype=F64) * (1 + i / 5), 0)
        grad = expected_projected_gradient(mean, p, q)
        ratios.append(float(grad.norm() / (p - q).norm()))
    # each ratio is close to sqrt(d) sigma_c for d >> K (concentration of C C^T)
    assert max(abs(r / slope - 1) for r in ratios) < 0.1
    assert slope == pytest.approx(math.sqrt(dim) * sigma_c, rel=0.05)
    assert gradient_noise_scale(4.0, 50, 200) == pytest.approx(2 * math.sqrt(50 / 200))


def test_gauss_newton_from_jacobians_is_accurate_for_confident_outputs():
    """Saturated softmax: G is tiny but PSD; the naive two-term formula loses it to round-off."""
    g = torch.Generator().manual_seed(4)
    jac = 1e6 * torch.randn(50, 10, 8, generator=g, dtype=F64)
    # every sample saturated: the runner-up is ~e^-40 ~ 4e-18 below the top class
    top = torch.randint(0, 10, (50,), generator=g)
    logits = 40.0 * torch.nn.functional.one_hot(top, 10).to(F64) \
        + 0.1 * torch.randn(50, 10, generator=g, dtype=F64)
    p = torch.softmax(logits, dim=-1)
    gn = gauss_newton_from_jacobians(jac, p)
    assert torch.linalg.eigvalsh(gn).min() >= 0
    # reference: the pairwise form sum_{k<j} p_k p_j (j_k - j_j)(j_k - j_j)^T, with the
    # weights from log-probabilities (no cancellation anywhere)
    lp = torch.log_softmax(logits, dim=-1)
    weights = torch.exp(lp.unsqueeze(-1) + lp.unsqueeze(-2)).triu(diagonal=1)  # (S, K, K)
    diff = jac.unsqueeze(2) - jac.unsqueeze(1)  # (S, K, K, d)
    ref = torch.einsum("skj,skjd,skje->de", weights, diff, diff) / 50
    torch.testing.assert_close(gn, ref, rtol=1e-8, atol=0.0)


def test_positive_curvature_and_gamma_p_survive_tiny_magnitudes():
    a = torch.diag(torch.tensor([3.0, 1.0, -1.0], dtype=F64))
    for f in (1e-300, 1.0, 1e300):
        assert float(matrix_positive_curvature(f * a)) == pytest.approx(3 / math.sqrt(11))
    # K = 2 with a runner-up of ~e^-700: M has entries ~1e-304, Gamma_p is still exactly 1
    p = torch.softmax(torch.tensor([[0.0, -700.0]], dtype=F64), dim=-1)
    assert float(gamma_p(p)) == pytest.approx(1.0, rel=1e-12)


def test_fit_random_model_ddof_conventions():
    """ddof=0 divides by n (package default), ddof=1 by n - 1 (the authors' torch.std)."""
    g = torch.Generator().manual_seed(11)
    jac = torch.randn(7, 3, 4, generator=g, dtype=F64)
    mean = jac.mean(0)
    n_c, n_e = mean.numel(), jac.numel()
    ss_c = float(((mean - mean.mean()) ** 2).sum())
    ss_e = float(((jac - mean) ** 2).sum())
    plain = fit_random_model(jac)
    authors = fit_random_model(jac, ddof=1)
    assert plain.ddof == 0 and authors.ddof == 1
    assert plain.sigma_c2 == pytest.approx(ss_c / n_c, rel=1e-12)
    assert plain.sigma_e2 == pytest.approx(ss_e / n_e, rel=1e-12)
    assert authors.sigma_c2 == pytest.approx(ss_c / (n_c - 1), rel=1e-12)
    assert authors.sigma_e2 == pytest.approx(ss_e / (n_e - 1), rel=1e-12)
    # exactly the notebook's expressions: J.mean(0).std([0,1])**2 and (J - C).std([0,1,2])**2
    assert authors.sigma_c2 == pytest.approx(float(mean.std(dim=(0, 1)) ** 2), rel=1e-12)
    assert authors.sigma_e2 == pytest.approx(float((jac - mean).std(dim=(0, 1, 2)) ** 2),
                                             rel=1e-12)
    for bad in (2, -1, True):
        with pytest.raises(ValueError, match="ddof"):
            fit_random_model(jac, ddof=bad)
    with pytest.raises(ValueError, match="ddof=1"):
        fit_random_model(jac[:, :1, :1], ddof=1)


def test_eq10_two_constants():
    assert predicted_gradient_slope(0.04, 50) == pytest.approx(math.sqrt(50) * 0.2)
    assert authors_gradient_slope(0.04, 50) == pytest.approx(50 * 0.2)
    with pytest.raises(ValueError):
        authors_gradient_slope(-1.0, 50)


def test_saturation_flag_and_eq9_limit():
    """One-hot outputs: M-bar = 0, Gamma_p is its limit 1, Eq. 9 stays finite (kappa is
    scale-free) and the row is flagged saturated; a merely confident output is not."""
    one_hot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    assert is_saturated(one_hot)
    assert float(gamma_p(one_hot)) == 1.0
    limit = float(expected_g_curvature(0.3, 0.1, gamma_p(one_hot), 50))
    assert limit == pytest.approx(float(expected_g_curvature(0.3, 0.1, 1.0, 50)))
    assert 1.0 < limit < math.sqrt(50)
    confident = torch.softmax(torch.tensor([[30.0, 0.0, 0.0]], dtype=F64), dim=-1)
    assert not is_saturated(confident)
    # M-bar ~ 1e-300 (runner-up e^-690) is tiny but not zero: not saturated
    tiny = torch.softmax(torch.tensor([[690.0, 0.0, 0.0]], dtype=F64), dim=-1)
    assert 0 < float(mean_softmax_covariance(tiny).diagonal().sum()) < 1e-290
    assert not is_saturated(tiny)
