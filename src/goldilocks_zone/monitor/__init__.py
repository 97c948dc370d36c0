"""Curvature during training: a monitor for any training loop (P2's four properties).

:class:`CurvatureMonitor` measures, every ``every`` steps of *your* loop, on a fixed held-aside
batch and a fixed random basis: κ and π of the subspace Hessian, its G-term / H-term norms, the
top-k full-space Hessian eigenvalues (Lanczos), the share of the gradient in their span, loss,
accuracy and mean softmax entropy. It never changes the model, its buffers, mode, gradients,
the optimiser or any global random state. Optional: :mod:`.lightning` (a PyTorch Lightning
callback, extra ``lightning``) and TensorBoard scalars (extra ``tensorboard``).
"""

from goldilocks_zone.monitor.core import (
    DEFAULT_BUDGET_S,
    DEFAULT_DIM,
    DEFAULT_EVERY,
    DEFAULT_LANCZOS_ITERATIONS,
    DEFAULT_NUM_SAMPLES,
    OUTLIER_RATIO,
    CurvatureMonitor,
    count_outliers_above_bulk,
    held_aside_batch,
    measure,
    preserved_rng_state,
)
from goldilocks_zone.monitor.tensorboard import make_writer, write_scalars

__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_DIM",
    "DEFAULT_EVERY",
    "DEFAULT_LANCZOS_ITERATIONS",
    "DEFAULT_NUM_SAMPLES",
    "OUTLIER_RATIO",
    "CurvatureMonitor",
    "count_outliers_above_bulk",
    "held_aside_batch",
    "make_writer",
    "measure",
    "preserved_rng_state",
    "write_scalars",
]
