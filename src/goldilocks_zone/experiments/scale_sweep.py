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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.curvature_sweep import (
    ScaleGridConfig,
    curvature_rows,
    scale_grid,
    sweep_points,
)
from goldilocks_zone.experiments._shared.plotting import (
    band,
    describe,
    new_figure,
    save_figure,
    style_axis,
)


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
    for seed, problem, basis, alpha in sweep_points(config, ctx, scales, desc="scale-sweep"):
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


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    hess = table[table["term"] == "hessian"]
    fig, axes = new_figure(2, 1, width=3.6, height=2.8)
    ax_k, ax_p = axes[0]
    band(ax_k, hess, "scale", "positive_curvature", color="C0", label="mean over seeds")
    ax_k.axhline(0.0, color="0.3", linewidth=0.8)
    style_axis(ax_k, xscale="log", xlabel=r"initialisation scale $\alpha$",
               ylabel=r"positive curvature $\kappa = \mathrm{Tr}\,H / \|H\|_F$",
               title="(a) positive curvature")
    mean = hess.groupby("scale")["positive_curvature"].mean()
    peak_y = 1.0
    if mean.notna().any():
        peak_x, peak_y = float(mean.idxmax()), float(mean.max())
        ax_k.annotate(rf"peak $\kappa$={peak_y:.2f}" + "\n" + rf"at $\alpha$={peak_x:.3g}",
                      xy=(peak_x, peak_y), xytext=(0.03, 0.97), textcoords="axes fraction",
                      va="top", fontsize=8,
                      arrowprops={"arrowstyle": "->", "color": "0.4", "linewidth": 0.7})
    lowest = float(hess["positive_curvature"].min())  # NaN when nothing is finite
    ax_k.set_ylim(bottom=min(-0.1 * max(peak_y, 1.0), lowest) if math.isfinite(lowest)
                  else -0.1)

    band(ax_p, hess, "scale", "fraction_positive", color="C1")
    ax_p.axhline(0.5, color="0.3", linewidth=0.8, linestyle="--", label="random: 1/2")
    style_axis(ax_p, xscale="log", ylim=(0.0, 1.02), xlabel=r"initialisation scale $\alpha$",
               ylabel=r"positive eigenvalues $\pi$",
               title="(b) fraction of positive eigenvalues",
               legend={"loc": "lower right", "fontsize": 8})
    fig.suptitle(f"Goldilocks zone vs scale: {describe(config)}", fontsize=9)
    return save_figure(fig, fig_dir, "scale_sweep")


EXPERIMENT = register_module(
    __name__, id="scale-sweep",
    paper="P1 Fig. 1 (left)",
    summary="positive curvature and positive-eigenvalue fraction vs initialisation scale",
    key_columns=("term", "scale", "temperature", "dim"),
)

__all__ = ["Config", "QUICK", "EXPERIMENT", "run", "plot", "zone_summary"]
