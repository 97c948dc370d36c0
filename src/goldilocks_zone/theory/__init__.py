"""The papers' formulas as pure functions on tensors: P1's Gauss-Newton theory (Eq. 9, Eq. 10,
Γ_p) in :mod:`~goldilocks_zone.theory.formulas` and P2's random model of gradients and Hessians
in :mod:`~goldilocks_zone.theory.random_model`. No model code lives here."""

from goldilocks_zone.theory.formulas import (
    RandomModelFit,
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

__all__ = [
    "RandomModelFit",
    "authors_gradient_slope",
    "expected_g_curvature",
    "expected_projected_gradient",
    "fit_random_model",
    "gamma_p",
    "gauss_newton_from_jacobians",
    "gradient_noise_scale",
    "is_saturated",
    "matrix_positive_curvature",
    "mean_softmax_covariance",
    "predicted_gradient_slope",
    "softmax_covariance",
]
