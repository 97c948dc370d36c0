"""The curvature core: pure functions of a model, data and a basis (SCIENCE.md §1–3).

- :mod:`.basis`: random subspace bases;
- :mod:`.subspace`: subspace Hessian, G-term, H-term, projected logit Jacobians;
- :mod:`.spectrum`: positive curvature, fraction of positive eigenvalues, norms;
- :mod:`.estimators`: full-space Hessian-vector products, gradient, Hutchinson, Hutch++,
  Lanczos;
- :mod:`.distributed`: one measurement (or estimator) over data shards on a Dask cluster;
- :mod:`.functional`: :class:`FunctionalModel`, the one functional evaluation of a user's
  model (never modified);
- :mod:`.batches`: the one validated data pass and the standard per-batch statistics.
"""

from goldilocks_zone.curvature.basis import random_basis
from goldilocks_zone.curvature.batches import BatchStatistics, take_samples
from goldilocks_zone.curvature.distributed import (
    ShardedOperator,
    combine_subspace_curvatures,
    distributed_hutchinson,
    distributed_hutchpp,
    distributed_subspace_curvature,
    distributed_top_eigenpairs,
)
from goldilocks_zone.curvature.estimators import (
    HessianEigenpairs,
    StochasticEstimate,
    hessian_top_eigenpairs,
    hessian_vector_product,
    hutchinson_estimate,
    hutchinson_frobenius,
    hutchinson_trace,
    hutchpp,
    hutchpp_frobenius,
    hutchpp_trace,
    lanczos,
    loss_gradient,
)
from goldilocks_zone.curvature.functional import FunctionalModel, UnsupportedModelError
from goldilocks_zone.curvature.spectrum import SpectrumStats, spectrum_stats
from goldilocks_zone.curvature.subspace import (
    ProjectedJacobians,
    SubspaceCurvature,
    projected_logit_jacobians,
    subspace_curvature,
    subspace_g_term,
)

__all__ = ["BatchStatistics", "FunctionalModel", "HessianEigenpairs", "ProjectedJacobians",
           "SpectrumStats", "StochasticEstimate", "SubspaceCurvature", "hessian_top_eigenpairs",
           "hessian_vector_product", "hutchinson_frobenius", "hutchinson_trace", "lanczos",
           "loss_gradient", "projected_logit_jacobians", "random_basis", "spectrum_stats",
           "subspace_curvature", "subspace_g_term", "take_samples", "UnsupportedModelError",
           "hutchinson_estimate", "hutchpp", "hutchpp_frobenius", "hutchpp_trace",
           "ShardedOperator", "combine_subspace_curvatures", "distributed_hutchinson",
           "distributed_hutchpp", "distributed_subspace_curvature", "distributed_top_eigenpairs"]
