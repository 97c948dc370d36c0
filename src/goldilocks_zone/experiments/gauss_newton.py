r"""``gauss-newton`` (P1 Fig. 2): positive curvature and spectral norms of the subspace
Hessian, its G-term and its H-term against the initialisation scale :math:`\alpha`.

Protocol. As ``scale-sweep``; every point stores three rows (``term`` = ``hessian``,
``g_term``, ``h_term``) with :math:`\kappa`, :math:`\pi`, :math:`\|\cdot\|_2 = \max|\lambda|`
(``spectral_norm``) and the largest signed eigenvalue (``top_eigenvalue``).

Theory (homogeneous network of degree ``L``): at small :math:`\alpha` the outputs are nearly
uniform, :math:`J(\alpha\theta) = \alpha^{L-1}J(\theta)` and
:math:`\nabla^2 f_k(\alpha\theta) = \alpha^{L-2}\nabla^2 f_k(\theta)`, so
:math:`\|G_R\|_2 \propto \alpha^{2L-2}` and :math:`\|H_R\|_2 \propto \alpha^{L-2}`; H dominates
and :math:`\kappa \approx 0`. Where :math:`\|G_R\|_2 \gtrsim \|H_R\|_2` (the *fundamental
condition*) :math:`\kappa` of the Hessian is clearly positive.

Slope fit (:func:`fit_small_scale_slopes`). The power laws hold while the softmax outputs stay
close to uniform; both norms deviate from them by a relative :math:`O(\alpha^L)`, as does the
loss from :math:`\log K`. The fit region is therefore chosen from the table alone: the
contiguous run of grid points from the smallest :math:`\alpha` whose seed-mean loss satisfies
:math:`|L - \log K| \le` ``uniform_tolerance`` :math:`\cdot \log K` (default 1%). If fewer than
``min_fit_points`` points qualify, the first ``min_fit_points`` are used and the fit is flagged.
The least-squares slope of :math:`\log_{10}\|\cdot\|_2` against :math:`\log_{10}\alpha` is
reported per seed and for the seed mean, next to :math:`2L-2` and :math:`L-2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.config import knob
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

TERMS = ("hessian", "g_term", "h_term")
TERM_LABELS = {"hessian": r"Hessian $\nabla^2 L$", "g_term": "G-term", "h_term": "H-term"}
TERM_COLORS = {"hessian": "C0", "g_term": "C2", "h_term": "C3"}
#: Line style of each term in the log panels (the Hessian dashed, drawn above its two terms).
TERM_STYLES = {t: {"linestyle": (0, (4, 2)) if t == "hessian" else "-",
                   "zorder": 3 if t == "hessian" else 2} for t in TERMS}


@dataclass
class Config(ScaleGridConfig):
    uniform_tolerance: float = knob(
        0.01, "slope-fit region: |loss - log K| <= this * log K (near-uniform outputs)")
    min_fit_points: int = knob(3, "fewest points in the slope fit")

    def validate(self) -> None:
        super().validate()
        if not self.uniform_tolerance > 0:
            raise ValueError(f"uniform_tolerance must be > 0, got {self.uniform_tolerance}")
        if self.min_fit_points < 2:
            raise ValueError(f"min_fit_points must be >= 2, got {self.min_fit_points}")


# Half-decade grid, 300 samples, d = 20, three seeds: about half a minute on one CPU core;
# the zone (kappa ~ 0 at both ends, a peak near alpha = 1) is already clear.
QUICK = {"num_samples": 300, "dim": 20, "seeds": (0, 1, 2), "per_decade": 2}


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import subspace_curvature
    from goldilocks_zone.models import homogeneity

    scales = scale_grid(config.log10_range, config.per_decade)
    rows: list[dict[str, Any]] = []
    current = degree = None
    for seed, problem, basis, alpha in sweep_points(config, ctx, scales, desc="gauss-newton"):
        if problem is not current:
            current = problem
            h = homogeneity(problem.model)
            degree = h.degree if h.is_homogeneous else None
        curv = subspace_curvature(problem.model, problem.data, basis, scale=alpha,
                                  batch_size=config.batch_size)
        for row in curvature_rows(curv, TERMS, scale=alpha, temperature=1.0, seed=seed,
                                  dim=config.dim):
            row.update(num_classes=int(problem.num_classes),
                       degree=math.nan if degree is None else int(degree))
            rows.append(row)
    table = pd.DataFrame(rows)
    fit = fit_small_scale_slopes(table, uniform_tolerance=config.uniform_tolerance,
                                 min_fit_points=config.min_fit_points)
    ctx.record("slope_fit", fit)
    ctx.record("summary", summarise(table, fit))
    return table


# --------------------------------------------------------------------------- analysis


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of ``y`` on ``x`` (finite points only)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)


def fit_small_scale_slopes(table: pd.DataFrame, *, uniform_tolerance: float = 0.01,
                           min_fit_points: int = 3) -> dict[str, Any]:
    r"""Fit :math:`\log_{10}\|G_R\|_2` and :math:`\log_{10}\|H_R\|_2` against
    :math:`\log_{10}\alpha` over the near-uniform-output region at small :math:`\alpha` (see
    the module docstring). Works on the tidy table alone (figures are redrawn from it).

    Returns the region, per-seed and seed-mean slopes, intercepts of the seed-mean fits, and
    the predictions :math:`2L-2`, :math:`L-2` when the model is homogeneous.
    """
    hess = table[table["term"] == "hessian"]
    num_classes = int(table["num_classes"].iloc[0])
    log_k = math.log(num_classes)
    loss = hess.groupby("scale")["loss"].mean().sort_index()
    near_uniform = (loss - log_k).abs() <= uniform_tolerance * log_k
    leading = int(near_uniform.astype(int).cumprod().sum())  # the run from the smallest alpha
    fallback = leading < min_fit_points
    region = [float(a) for a in loss.index[:max(leading, min_fit_points)]]
    degree = table["degree"].iloc[0]
    degree = None if pd.isna(degree) else int(degree)
    out: dict[str, Any] = {
        "region": [min(region), max(region)],
        "num_points": len(region),
        "rule": f"|loss - log K| <= {uniform_tolerance:g} log K from the smallest alpha",
        "fallback_first_points": fallback,
        "degree": degree,
        "predicted": ({"g_term": 2 * degree - 2, "h_term": degree - 2}
                      if degree is not None else None),
    }
    in_region = table[table["scale"].isin(region)]
    for term in ("g_term", "h_term", "hessian"):
        rows = in_region[in_region["term"] == term]
        per_seed = {}
        with np.errstate(divide="ignore", invalid="ignore"):  # log of 0 / NaN: not fitted
            for seed, g in rows.groupby("seed"):
                s, _ = _slope(np.log10(g["scale"].to_numpy(float)),
                              np.log10(g["spectral_norm"].to_numpy(float)))
                per_seed[int(seed)] = s
            # seed mean of log-norms
            log_norm = np.log10(rows["spectral_norm"].to_numpy(float))
            mean_log = rows.assign(log_norm=log_norm).groupby("scale")["log_norm"].mean()
        s, c = _slope(np.log10(mean_log.index.to_numpy(float)), mean_log.to_numpy(float))
        out[term] = {"slope": s, "intercept": c, "per_seed": per_seed}
    return out


def condition_mask(table: pd.DataFrame) -> pd.Series:
    r"""Per :math:`\alpha`: does the seed mean satisfy :math:`\|G_R\|_2 \ge \|H_R\|_2`?"""
    norms = table.pivot_table(index="scale", columns="term", values="spectral_norm",
                              aggfunc="mean", dropna=False)
    return (norms["g_term"] >= norms["h_term"]).sort_index()  # NaN compares False


def summarise(table: pd.DataFrame, fit: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers: the κ peak (:func:`goldilocks_zone.theory.zone.find_zone`; NaN with
    ``all_non_finite`` true when no κ is finite), the fitted and predicted slopes (NaN when
    fewer than two finite points), and κ where :math:`\\|G_R\\|_2 \\ge \\|H_R\\|_2`."""
    from goldilocks_zone.theory.zone import find_zone

    hess = table[table["term"] == "hessian"]
    kappa = hess.groupby("scale")["positive_curvature"].mean().sort_index()
    zone = find_zone(kappa.index.to_numpy(float), kappa.to_numpy(float))
    kappa = kappa[np.isfinite(kappa.to_numpy(float))]
    mask = condition_mask(table)
    inside = kappa[mask.reindex(kappa.index, fill_value=False)]
    outside = kappa[~mask.reindex(kappa.index, fill_value=False)]
    return {
        "peak_kappa_hessian": zone.peak_kappa,
        "scale_at_peak": zone.peak_x,
        "all_non_finite": zone.all_non_finite,
        "slope_g_norm": fit["g_term"]["slope"],
        "slope_h_norm": fit["h_term"]["slope"],
        "predicted_slopes_2L-2_L-2": (None if fit["predicted"] is None else
                                      [fit["predicted"]["g_term"], fit["predicted"]["h_term"]]),
        "fit_region_scale": fit["region"],
        "condition_scales": ([float(inside.index.min()), float(inside.index.max())]
                             if not inside.empty else None),
        "min_kappa_where_G_ge_H": float(inside.min()) if not inside.empty else None,
        "max_kappa_where_G_lt_H": float(outside.max()) if not outside.empty else None,
    }


# --------------------------------------------------------------------------- figure


def _shade_condition(ax, mask: pd.Series) -> None:
    """Shade the alpha ranges where ||G||_2 >= ||H||_2 (half-way between grid points)."""
    xs = mask.index.to_numpy(float)
    if len(xs) < 2:
        return
    logs = np.log10(xs)
    edges = np.concatenate([[logs[0]], (logs[1:] + logs[:-1]) / 2, [logs[-1]]])
    for i in np.flatnonzero(mask.to_numpy()):
        ax.axvspan(10 ** edges[i], 10 ** edges[i + 1], color="gold", alpha=0.25, linewidth=0,
                   zorder=0)


def _norm_limits(table: pd.DataFrame, fit: Mapping[str, Any]) -> tuple[float, float]:
    """y-limits of the log-norm panels: the H-term/Hessian range and the G-term's power law
    at small scale; the G-term's super-exponential collapse at large scale runs off the
    bottom instead of squashing the rest."""
    rows = table["term"].isin(("hessian", "h_term")) | (
        (table["term"] == "g_term") & (table["scale"] <= fit["region"][1]))
    v = table.loc[rows, "spectral_norm"].astype(float)
    values = v[np.isfinite(v) & (v > 0)].tolist()
    if not values:
        return 1e-12, 1.0
    lo, hi = math.log10(min(values)), math.log10(max(values))
    pad = max(0.05 * (hi - lo), 0.5)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    from matplotlib.lines import Line2D

    fit = fit_small_scale_slopes(table, uniform_tolerance=config.uniform_tolerance,
                                 min_fit_points=config.min_fit_points)
    mask = condition_mask(table)
    ylim = _norm_limits(table, fit)
    fig, axes = new_figure(3, 1, width=3.4, height=2.8)
    ax_k, ax_n, ax_t = axes[0]
    for ax in (ax_k, ax_n, ax_t):
        _shade_condition(ax, mask)
        style_axis(ax, xscale="log", xlabel=r"initialisation scale $\alpha$")

    # per term: (a) kappa, (b) spectral norms max|lambda| (log-log), (c) largest signed
    # eigenvalue (log scale: non-positive values are left out)
    omitted = 0
    for term in TERMS:
        rows = table[table["term"] == term]
        style = {"color": TERM_COLORS[term], "markersize": 2.5}
        band(ax_k, rows, "scale", "positive_curvature", **style)
        band(ax_n, rows[rows["spectral_norm"] > 0], "scale", "spectral_norm", **style,
             **TERM_STYLES[term])
        keep = rows[rows["top_eigenvalue"] > 0]
        omitted += len(rows) - len(keep)
        band(ax_t, keep, "scale", "top_eigenvalue", **style, **TERM_STYLES[term])
    ax_k.axhline(0.0, color="0.3", linewidth=0.8)
    style_axis(ax_k, ylabel=r"positive curvature $\kappa$",
               title=r"(a) $\kappa$ of Hessian, G-term, H-term")

    # (b) the fitted small-scale slopes
    lo, hi = fit["region"]
    xs = np.logspace(math.log10(lo), math.log10(hi) + 0.75, 20)
    pred = fit["predicted"] or {}
    lines = []
    for term in ("g_term", "h_term"):
        s, c = fit[term]["slope"], fit[term]["intercept"]
        if math.isfinite(s):
            ax_n.plot(xs, 10 ** (c + s * np.log10(xs)), color="k", linewidth=1.0,
                      linestyle=":", zorder=4)
            name = "G" if term == "g_term" else "H"
            expected = f" (theory {pred[term]})" if term in pred else ""
            lines.append(rf"slope $\|{name}\|_2$: {s:.3f}{expected}")
    ax_n.text(0.97, 0.03, "\n".join(lines), transform=ax_n.transAxes, ha="right", va="bottom",
              fontsize=7.5, bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0})
    style_axis(ax_n, yscale="log", ylim=ylim, ylabel=r"spectral norm $\max|\lambda|$",
               title="(b) spectral norms")

    if omitted:
        ax_t.text(0.03, 0.97, f"{omitted} non-positive values not shown",
                  transform=ax_t.transAxes, va="top", fontsize=7)
    style_axis(ax_t, yscale="log", ylim=ylim, ylabel=r"largest eigenvalue $\lambda_{\max}$",
               title="(c) largest signed eigenvalue")

    handles = [Line2D([], [], color=TERM_COLORS[t], marker="o", markersize=3,
                      linestyle=TERM_STYLES[t]["linestyle"], label=TERM_LABELS[t]) for t in TERMS]
    handles.append(Line2D([], [], color="k", linestyle=":", label="small-scale fit"))
    if mask.any():
        from matplotlib.patches import Patch

        handles.append(Patch(color="gold", alpha=0.25,
                             label=r"$\|G_R\|_2 \geq \|H_R\|_2$ (fundamental condition)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
               fontsize=8, frameon=False)
    fig.suptitle(f"Gauss-Newton decomposition: {describe(config)}", fontsize=9)
    return save_figure(fig, fig_dir, "gauss_newton")


EXPERIMENT = register_module(
    __name__, id="gauss-newton",
    paper="P1 Fig. 2",
    summary="kappa and spectral norms of Hessian, G-term and H-term vs scale; slopes 2L-2, L-2",
    key_columns=("term", "scale", "temperature", "dim"),
)
