r"""``scale-sweep`` (P1 Fig. 1, left): positive curvature and the fraction of positive
eigenvalues of the subspace Hessian against the initialisation scale :math:`\alpha`.

Protocol. For every seed, build the model with that seed (Kaiming-normal, no biases) and draw a
random basis :math:`R \in \mathbb{R}^{D\times d}` with the same seed; a fixed subsample of the
training set (``data_seed``) is shared by all seeds. For each :math:`\alpha` on a log grid
(:math:`10^{-3}` to :math:`10^{3}`, four points per decade) measure the subspace Hessian
:math:`R^\top\nabla^2L(\alpha\theta)R` (parameters scaled functionally, the model is never
modified) and record :math:`\kappa = \operatorname{Tr}/\|\cdot\|_F` and
:math:`\pi = \#\{\lambda>0\}/d`.

Expected result: :math:`\kappa \approx 0` and :math:`\pi \approx 1/2` at both ends of the grid
(H-term dominated), a clear positive peak of :math:`\kappa` in between — the Goldilocks zone.

This module also holds the pieces shared by P1's curvature experiments
(:class:`CurvatureConfig`, :class:`ScaleGridConfig`, :func:`setup`, :func:`curvature_rows`,
:func:`band`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from goldilocks_zone.experiments._shared.base import Experiment, RunContext, register
from goldilocks_zone.experiments._shared.common import Problem, load_problem, log_grid, torch_dtype

# Sample count used for P1's curvature measurements here. The paper measures on a subsample of
# the training set; 1000 samples (100 per class on average) make the d x d statistics stable to
# a few percent across data draws while keeping a 25-point sweep to minutes on a CPU.
DEFAULT_CURVATURE_SAMPLES = 1000

STAT_COLUMNS = ("positive_curvature", "fraction_positive", "spectral_norm", "top_eigenvalue",
                "trace", "frobenius")
BASIS_KINDS = ("orthonormal", "sparse")


@dataclass
class CurvatureConfig:
    """Knobs shared by P1's curvature experiments (defaults: the paper's)."""

    model: str = field(default="lenet-300-100", metadata={"help": "model registry name"})
    dataset: str = field(default="fashion-mnist", metadata={"help": "dataset registry name"})
    num_samples: int | None = field(
        default=DEFAULT_CURVATURE_SAMPLES,
        metadata={"help": "training samples the loss is averaged over (subsample; none = all)"})
    dim: int = field(default=50, metadata={"help": "subspace dimension d"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "seeds; a seed fixes the init and the basis"})
    basis: str = field(default="orthonormal",
                       metadata={"help": "random basis: orthonormal (QR) or sparse"})
    dtype: str = field(default="float64", metadata={"help": "float64 or float32"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    batch_size: int | None = field(
        default=None, metadata={"help": "chunk size of the curvature pass (memory only)"})
    activation: str = field(default="relu", metadata={"help": "hidden activation"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data subsample"})

    def validate(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.basis not in BASIS_KINDS:
            raise ValueError(f"basis must be one of {BASIS_KINDS}, got {self.basis!r}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (or none), got {self.num_samples}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (or none), got {self.batch_size}")
        torch_dtype(self.dtype)


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


# --------------------------------------------------------------------------- experiment


@dataclass
class ScaleGridConfig(CurvatureConfig):
    """:class:`CurvatureConfig` plus the log grid of scales :math:`\alpha` swept by P1's
    scale experiments (``scale-sweep``, ``gauss-newton``, ``expected-g``, ``temperature-sweep``)."""

    log10_range: tuple[float, ...] = field(
        default=(-3.0, 3.0), metadata={"help": "log10 of the smallest and largest scale alpha"})
    per_decade: int = field(default=4, metadata={"help": "grid points per decade of alpha"})

    def validate(self) -> None:
        super().validate()
        check_log_range("log10_range", self.log10_range, self.per_decade)


@dataclass
class Config(ScaleGridConfig):
    """``scale-sweep``: the shared curvature knobs and the grid of scales, nothing more."""


# Half-decade grid, 300 samples, d = 20, three seeds: about half a minute on one CPU core;
# the zone (kappa ~ 0 at both ends, a peak near alpha = 1) is already clear.
QUICK = {"num_samples": 300, "dim": 20, "seeds": (0, 1, 2), "per_decade": 2}


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import subspace_curvature

    scales = scale_grid(config.log10_range, config.per_decade)
    rows: list[dict[str, Any]] = []
    total = len(config.seeds) * len(scales)
    points = ((seed, alpha) for seed in config.seeds for alpha in scales)
    problem = basis = None
    current = None
    for seed, alpha in ctx.progress(points, total=total, desc="scale-sweep"):
        if seed != current:
            problem, basis = setup(config, seed)
            current = seed
            if seed == config.seeds[0]:
                record_problem(ctx, problem, config)
        curv = subspace_curvature(problem.model, problem.data, basis, scale=alpha,
                                  batch_size=config.batch_size)
        rows.extend(curvature_rows(curv, ("hessian",), scale=alpha, temperature=1.0,
                                   seed=seed, dim=config.dim))
    table = pd.DataFrame(rows)
    ctx.record("summary", zone_summary(table))
    return table


def zone_summary(table: pd.DataFrame, x: str = "scale") -> dict[str, Any]:
    """Headline numbers of a curvature sweep along ``x``: peak of the seed-mean
    :math:`\\kappa`, where it is, the zone around it
    (:func:`goldilocks_zone.theory.zone.find_zone`) and :math:`\\kappa` at both ends of the
    grid. A curve with no finite value (divergence at extreme settings) is data: its peak is
    NaN and ``all_non_finite`` is true; this never raises."""
    import numpy as np

    from goldilocks_zone.theory.zone import find_zone

    hess = table[table["term"] == "hessian"] if "term" in table else table
    mean = hess.groupby(x)["positive_curvature"].agg(["mean", "std", "count"]).sort_index()
    frac = hess.groupby(x)["fraction_positive"].mean().sort_index()
    if mean.empty:
        return {}
    zone = find_zone(mean.index.to_numpy(float), mean["mean"].to_numpy(float))
    frac_finite = frac[np.isfinite(frac.to_numpy(float))]
    return {
        "peak_kappa": zone.peak_kappa,
        f"{x}_at_peak": zone.peak_x,
        "zone": list(zone.bounds) if zone.bounds is not None else None,
        "all_non_finite": zone.all_non_finite,
        "kappa_at_low_end": float(mean["mean"].iloc[0]),
        "kappa_at_high_end": float(mean["mean"].iloc[-1]),
        "peak_fraction_positive": float(frac_finite.max()) if len(frac_finite) else math.nan,
        "fraction_positive_at_ends": [float(frac.iloc[0]), float(frac.iloc[-1])],
        "sqrt_dim": float(math.sqrt(float(hess["dim"].iloc[0]))),
        "non_finite_rows": int((~hess["finite"].astype(bool)).sum()),
    }


# --------------------------------------------------------------------------- figures


def band(ax, table: pd.DataFrame, x: str, y: str, *, label: str | None = None,
         color: str | None = None, marker: str | None = "o", linestyle: str = "-",
         alpha: float = 0.2, markersize: float = 3.0, **kwargs):
    """Seed mean of ``y`` against ``x`` with a min-max band over seeds; returns the line."""
    g = table.groupby(x)[y].agg(["mean", "min", "max", "count"]).sort_index()
    xs = g.index.to_numpy(dtype=float)
    (line,) = ax.plot(xs, g["mean"].to_numpy(), label=label, color=color, marker=marker,
                      linestyle=linestyle, markersize=markersize, **kwargs)
    if (g["count"] > 1).any():
        ax.fill_between(xs, g["min"].to_numpy(), g["max"].to_numpy(), color=line.get_color(),
                        alpha=alpha, linewidth=0)
    return line


def describe(config: Mapping[str, Any]) -> str:
    """Short subtitle: model, dataset, samples, d, basis, seeds."""
    seeds = config.get("seeds") or []
    return (f"{config.get('model')} on {config.get('dataset')} "
            f"(S={config.get('num_samples')}, d={config.get('dim')}, {config.get('basis')} "
            f"basis, {len(seeds)} seed{'s' if len(seeds) != 1 else ''})")


def plot(table: pd.DataFrame, config: Mapping[str, Any], fig_dir: Path) -> list[Path]:
    from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure

    hess = table[table["term"] == "hessian"]
    fig, axes = new_figure(2, 1, width=3.6, height=2.8)
    ax_k, ax_p = axes[0]
    band(ax_k, hess, "scale", "positive_curvature", color="C0", label="mean over seeds")
    ax_k.axhline(0.0, color="0.3", linewidth=0.8)
    ax_k.set_xscale("log")
    ax_k.set_xlabel(r"initialisation scale $\alpha$")
    ax_k.set_ylabel(r"positive curvature $\kappa = \mathrm{Tr}\,H / \|H\|_F$")
    ax_k.set_title("(a) positive curvature", fontsize=9)
    mean = hess.groupby("scale")["positive_curvature"].mean()
    peak_y = 1.0
    if mean.notna().any():
        peak_x, peak_y = float(mean.idxmax()), float(mean.max())
        ax_k.annotate(rf"peak $\kappa$={peak_y:.2f}" + "\n" + rf"at $\alpha$={peak_x:.3g}",
                      xy=(peak_x, peak_y), xytext=(0.03, 0.97), textcoords="axes fraction",
                      va="top", fontsize=8,
                      arrowprops={"arrowstyle": "->", "color": "0.4", "linewidth": 0.7})
    ax_k.set_ylim(bottom=min(-0.1 * max(peak_y, 1.0), float(hess["positive_curvature"].min())))

    band(ax_p, hess, "scale", "fraction_positive", color="C1")
    ax_p.axhline(0.5, color="0.3", linewidth=0.8, linestyle="--", label="random: 1/2")
    ax_p.set_xscale("log")
    ax_p.set_ylim(0.0, 1.02)
    ax_p.set_xlabel(r"initialisation scale $\alpha$")
    ax_p.set_ylabel(r"positive eigenvalues $\pi$")
    ax_p.set_title("(b) fraction of positive eigenvalues", fontsize=9)
    ax_p.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Goldilocks zone vs scale: {describe(config)}", fontsize=9)
    return save_figure(fig, fig_dir, "scale_sweep")


EXPERIMENT = register(Experiment(
    id="scale-sweep",
    paper="P1 Fig. 1 (left)",
    summary="positive curvature and positive-eigenvalue fraction vs initialisation scale",
    config_cls=Config,
    run=run,
    plot=plot,
    quick=QUICK,
))

__all__ = ["CurvatureConfig", "ScaleGridConfig", "Config", "QUICK", "EXPERIMENT", "band",
           "curvature_rows", "run", "plot", "setup", "zone_summary"]
