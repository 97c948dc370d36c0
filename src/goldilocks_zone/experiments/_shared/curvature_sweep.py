r"""Pieces shared by P1's curvature experiments (``scale-sweep``, ``gauss-newton``,
``expected-g``, ``temperature-sweep``): the config knobs, problem + basis set-up for one seed,
tidy rows of a :class:`~goldilocks_zone.SubspaceCurvature`, and the log grid of scales."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from goldilocks_zone.experiments._shared.base import RunContext
from goldilocks_zone.experiments._shared.common import Problem, load_problem, log_grid, torch_dtype
from goldilocks_zone.experiments._shared.config import SubspaceConfig, common, knob

# Sample count used for P1's curvature measurements here. The paper measures on a subsample of
# the training set; 1000 samples (100 per class on average) make the d x d statistics stable to
# a few percent across data draws while keeping a 25-point sweep to minutes on a CPU.
DEFAULT_CURVATURE_SAMPLES = 1000


STAT_COLUMNS = ("positive_curvature", "fraction_positive", "spectral_norm", "top_eigenvalue",
                "trace", "frobenius")


BASIS_KINDS = ("orthonormal", "sparse")


@dataclass
class CurvatureConfig(SubspaceConfig):
    """Knobs shared by P1's curvature experiments (defaults: the paper's)."""

    seeds: tuple[int, ...] = common("seeds", (0, 1, 2))

    basis: str = knob("orthonormal", "random basis: orthonormal (QR) or sparse")
    batch_size: int | None = knob(None, "chunk size of the curvature pass (memory only)")
    activation: str = knob("relu", "hidden activation")
    data_seed: int = knob(0, "seed of the data subsample")

    def validate(self) -> None:
        super().validate()
        if self.basis not in BASIS_KINDS:
            raise ValueError(f"basis must be one of {BASIS_KINDS}, got {self.basis!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (or none), got {self.batch_size}")


def check_log_range(name: str, value: Sequence[float], per_decade: int) -> None:
    if len(value) != 2 or not value[0] < value[1]:
        raise ValueError(f"{name} must be two increasing log10 exponents (lo, hi), got {value}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1, got {per_decade}")


def setup(config: CurvatureConfig, seed: int) -> tuple[Problem, torch.Tensor]:
    """The problem (model built with ``seed``, data subsample with ``config.data_seed``) and
    the random basis (D, d) drawn with the same ``seed``."""
    from goldilocks_zone.curvature import random_basis

    problem = load_problem(model=config.model, dataset=config.dataset,
                           num_samples=config.num_samples, seed=seed, dtype=config.dtype,
                           device=config.device, activation=config.activation,
                           data_seed=config.data_seed)
    if config.dim > problem.num_params:
        raise ValueError(f"dim={config.dim} exceeds the number of parameters "
                         f"{problem.num_params} of {config.model!r}")
    basis = random_basis(problem.num_params, config.dim, kind=config.basis, seed=seed,
                         dtype=torch_dtype(config.dtype), device=config.device)
    return problem, basis


def record_problem(ctx: RunContext, problem: Problem, config: CurvatureConfig) -> None:
    """Provenance of the measured problem (written to the manifest)."""
    from goldilocks_zone.models import homogeneity

    h = homogeneity(problem.model)
    ctx.record("dataset", {
        "name": config.dataset,
        "num_samples": int(problem.inputs.shape[0]),
        "num_classes": int(problem.num_classes),
        "fingerprint": getattr(problem.dataset, "fingerprint", None),
        "source": str(getattr(problem.dataset, "source", "")),
    })
    ctx.record("model", {"name": config.model, "num_params": problem.num_params,
                         "homogeneous": h.is_homogeneous, "degree": h.degree,
                         "homogeneity_reason": h.reason})


def seed_setups(config: CurvatureConfig, ctx: RunContext
                ) -> Iterator[tuple[int, Problem, torch.Tensor]]:
    """``(seed, problem, basis)`` of :func:`setup` for every seed of ``config``; the first
    seed's problem is recorded (:func:`record_problem`)."""
    for seed in config.seeds:
        problem, basis = setup(config, seed)
        if seed == config.seeds[0]:
            record_problem(ctx, problem, config)
        yield seed, problem, basis


def sweep_points(config: CurvatureConfig, ctx: RunContext, values: Sequence[float], *,
                 desc: str) -> Iterator[tuple[int, Problem, torch.Tensor, float]]:
    """``(seed, problem, basis, value)`` for every seed and every value, in one progress bar;
    the problem and basis of a seed are set up once (:func:`seed_setups`)."""
    setups = seed_setups(config, ctx)
    points = [(seed, v) for seed in config.seeds for v in values]
    current = None
    for seed, value in ctx.progress(points, total=len(points), desc=desc):
        if seed != current:
            current, problem, basis = next(setups)
        yield seed, problem, basis, value


def curvature_rows(curv: Any, terms: Sequence[str] = ("hessian",), **keys: Any
                   ) -> list[dict[str, Any]]:
    """Tidy rows (one per ``term``) of a :class:`~goldilocks_zone.SubspaceCurvature`:
    ``keys`` + ``term`` + the spectrum statistics + loss, accuracy, gradient norm
    :math:`\\|R^\\top\\nabla L\\|`, prior mismatch :math:`\\|q-\\bar p\\|`, ``finite``."""
    rows = []
    grad_norm = float(torch.linalg.vector_norm(curv.projected_gradient))
    for term in terms:
        stats = curv.stats(term)
        rows.append({
            **keys,
            "term": term,
            **stats.as_dict(),
            "loss": curv.loss,
            "accuracy": curv.accuracy,
            "gradient_norm": grad_norm,
            "prior_mismatch": curv.prior_mismatch,
            "finite": bool(curv.finite and stats.finite),
        })
    return rows


def scale_grid(log10_range: Sequence[float], per_decade: int) -> tuple[float, ...]:
    return log_grid(float(log10_range[0]), float(log10_range[1]), int(per_decade))


@dataclass
class ScaleGridConfig(CurvatureConfig):
    """:class:`CurvatureConfig` plus the log grid of scales :math:`\alpha` swept by P1's
    scale experiments (``scale-sweep``, ``gauss-newton``, ``expected-g``, ``temperature-sweep``)."""

    log10_range: tuple[float, ...] = knob((-3.0, 3.0),
                                          "log10 of the smallest and largest scale alpha")
    per_decade: int = knob(4, "grid points per decade of alpha")

    def validate(self) -> None:
        super().validate()
        check_log_range("log10_range", self.log10_range, self.per_decade)


