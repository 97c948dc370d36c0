"""goldilocks-zone: measure, explain and reproduce the Goldilocks zone of initialisation.

The curvature core (:mod:`goldilocks_zone.curvature`) restricts the cross-entropy Hessian to
random subspaces, splits it into Gauss-Newton G-term and H-term, and summarises spectra.
"""

from goldilocks_zone import data, models
from goldilocks_zone.curvature import (
    HessianEigenpairs,
    ProjectedJacobians,
    SpectrumStats,
    StochasticEstimate,
    SubspaceCurvature,
    hessian_top_eigenpairs,
    hessian_vector_product,
    hutchinson_frobenius,
    hutchinson_trace,
    hutchpp_frobenius,
    hutchpp_trace,
    lanczos,
    loss_gradient,
    projected_logit_jacobians,
    random_basis,
    spectrum_stats,
    subspace_curvature,
    subspace_g_term,
)
from goldilocks_zone.curvature.distributed import distributed_subspace_curvature

__version__ = "0.1.0"

__all__ = [
    "Diagnosis",
    "HessianEigenpairs",
    "ProjectedJacobians",
    "SpectrumStats",
    "StochasticEstimate",
    "SubspaceCurvature",
    "diagnose",
    "hessian_top_eigenpairs",
    "hessian_vector_product",
    "hutchinson_frobenius",
    "hutchinson_trace",
    "lanczos",
    "data",
    "loss_gradient",
    "models",
    "projected_logit_jacobians",
    "random_basis",
    "spectrum_stats",
    "subspace_curvature",
    "subspace_g_term",
    "hutchpp_trace",
    "hutchpp_frobenius",
    "distributed_subspace_curvature",
]


def __getattr__(name: str):
    # The diagnosis layer sits above the engine and imports plotting: load it on first use.
    if name in ("diagnose", "Diagnosis"):
        from goldilocks_zone import diagnosis

        globals().update(diagnose=diagnosis.diagnose, Diagnosis=diagnosis.Diagnosis)
        return globals()[name]
    raise AttributeError(name)
