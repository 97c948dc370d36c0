"""spectrum_stats over the whole float64 range, degenerate and non-finite matrices."""

import math

import pytest
import torch

from goldilocks_zone import spectrum_stats


def symmetric(d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, dtype=torch.float64, generator=g)
    return a + a.T + shift * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("factor", [1e-300, 1e-167, 1e-100, 1e+100, 1e+300])
def test_kappa_and_pi_are_scale_invariant_over_the_float64_range(factor):
    m = symmetric(7, seed=1, shift=0.5)
    ref = spectrum_stats(m)
    s = spectrum_stats(m * factor)
    assert s.finite
    assert math.isclose(s.positive_curvature, ref.positive_curvature, rel_tol=1e-12)
    assert s.fraction_positive == ref.fraction_positive
    assert ref.fraction_positive not in (0.0, 1.0)  # the test can see a wrong count
    # Norms and eigenvalues come back in the matrix's own units.
    assert math.isclose(s.frobenius, ref.frobenius * factor, rel_tol=1e-12)
    assert math.isclose(s.trace, ref.trace * factor, rel_tol=1e-10)
    assert math.isclose(s.top_eigenvalue, ref.top_eigenvalue * factor, rel_tol=1e-12)
    assert torch.allclose(s.eigenvalues / factor, ref.eigenvalues, rtol=1e-12, atol=0)


def test_eigenvalues_near_1e_minus_167_no_longer_give_kappa_zero():
    # A naive Frobenius norm of eigenvalues ~1e-167 underflows (1e-334 < min subnormal).
    m = torch.diag(torch.tensor([3.0, 2.0, 1.0, -1.0], dtype=torch.float64)) * 1e-167
    assert float((m * m).sum()) == 0.0
    s = spectrum_stats(m)
    assert math.isclose(s.positive_curvature, 5 / math.sqrt(15), rel_tol=1e-14)
    assert s.fraction_positive == 0.75
    assert s.frobenius > 0


def test_huge_entries_do_not_overflow_kappa():
    m = torch.diag(torch.tensor([1.0, 1.0, -0.5], dtype=torch.float64)) * 1e308
    s = spectrum_stats(m)
    assert math.isclose(s.positive_curvature, 1.5 / math.sqrt(2.25), rel_tol=1e-14)
    assert math.isfinite(s.frobenius)


def test_zero_matrix_has_documented_values():
    s = spectrum_stats(torch.zeros(4, 4, dtype=torch.float64))
    assert s.finite
    assert (s.positive_curvature, s.fraction_positive, s.trace, s.frobenius,
            s.spectral_norm, s.top_eigenvalue) == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert torch.equal(s.eigenvalues, torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entries_give_nan_not_a_crash(bad):
    m = symmetric(3, seed=2)
    m[0, 1] = bad
    s = spectrum_stats(m)
    assert not s.finite
    assert math.isnan(s.positive_curvature) and math.isnan(s.fraction_positive)
    assert bool(torch.isnan(s.eigenvalues).all())


def test_float32_and_subnormal_inputs():
    m = symmetric(5, seed=3, shift=1.0)
    ref = spectrum_stats(m)
    assert math.isclose(spectrum_stats(m.float()).positive_curvature,
                        ref.positive_curvature, rel_tol=1e-6)
    tiny = m * 1e-310  # subnormal entries: only a few significant bits remain
    assert abs(spectrum_stats(tiny).positive_curvature - ref.positive_curvature) < 1e-3


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="square"):
        spectrum_stats(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-empty"):
        spectrum_stats(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="square"):
        spectrum_stats([[1.0]])
