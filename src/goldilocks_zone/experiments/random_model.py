r"""``random-model`` (P2 Fig. 5–8): Fort & Ganguli's random model of logits and logit gradients.

Protocol. Simulate :mod:`goldilocks_zone.theory.random_model` (D = 1000 parameters, C = 10 classes,
N samples; clustered logit gradients, weak GOE logit Hessians; SCIENCE.md §6) and form the
Hessian exactly. For every seed:

* **spectrum** at the reference point (``sigma_z``, ``sigma_c``, ...): all D eigenvalues, the
  eigenvalues of the same draw without class structure (the bulk), the cosine between the
  gradient and each sorted eigenvector, the number of outliers separated from the bulk and the
  share of gradient power in the top ``top_k`` (P2 reports 71% in the top 10 at D = 1000);
* **label margin**: the same for several true-class logit margins (0 = logits blind to the
  labels), showing that C outliers holding the gradient need better-than-chance logits;
* **sigma_z sweep**: the top eigenvalue, :math:`\kappa = \mathrm{Tr}H/\|H\|_F` and the gradient
  power on a log grid of logit scales, with the gradient scales grown alongside,
  :math:`\sigma_{c,E} \propto \sigma_z^{\gamma}` (``gradient_growth`` γ, ratio
  :math:`\sigma_c/\sigma_E` fixed).

Expected: a bulk plus C outliers above the bulk edge that carry most of the gradient;
:math:`\kappa` and the top eigenvalue rise, then fall as the softmax freezes.

The table has a ``section`` column: ``spectrum`` (one row per eigenvalue), ``margin`` and
``sigma_z`` (one row per point and seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import log_grid
from goldilocks_zone.experiments._shared.config import SamplesConfig, SeedsConfig, common, knob
from goldilocks_zone.experiments._shared.plotting import band, new_figure, save_figure, style_axis


@dataclass
class Config(SeedsConfig, SamplesConfig):
    num_samples: int = common("num_samples", 500, "samples N (balanced labels)")
    seeds: tuple[int, ...] = common("seeds", (0, 1, 2), "simulation seeds")

    dim: int = knob(1000, "number of parameters D")
    num_classes: int = knob(10, "classes C (= logits K)")
    sigma_z: float = knob(1.0, "logit scale at the reference point")
    label_margin: float = knob(3.0, "true-class logit shift in units of sigma_z (0: blind)")
    sigma_c: float = knob(1.0, "class/logit mean gradient scale")
    sigma_e: float = knob(2.0, "per-sample gradient noise scale")
    sigma_shared: float = knob(0.0, "logit-specific component shared by all classes")
    sigma_h: float = knob(10.0, "logit-Hessian (GOE) scale")
    top_k: int = knob(10, "eigenvectors for the gradient power")
    min_gap_ratio: float = knob(1.5, "relative gap that separates the outlier group")
    margins: tuple[float, ...] = knob((0.0, 1.0, 2.0, 3.0), "label margins compared")
    log10_sigma_z: tuple[float, ...] = knob((-2.0, 5.0), "log10 range of the sigma_z sweep")
    per_decade: int = knob(4, "sigma_z grid points per decade")
    gradient_growth: float = knob(1.0, "sigma_c, sigma_e grow as sigma_z**gradient_growth")
    hessian_growth: float = knob(0.0, "sigma_h grows as sigma_z**hessian_growth")

    def validate(self) -> None:
        super().validate()
        self.params()  # checks the model's parameters
        if not 1 <= self.top_k <= self.dim:
            raise ValueError(f"top_k must be in [1, dim], got {self.top_k}")
        if self.min_gap_ratio <= 1:
            raise ValueError(f"min_gap_ratio must be > 1, got {self.min_gap_ratio}")
        if len(self.log10_sigma_z) != 2 or not self.log10_sigma_z[0] < self.log10_sigma_z[1]:
            raise ValueError(f"log10_sigma_z must be two increasing exponents, got "
                             f"{self.log10_sigma_z}")
        if self.per_decade < 1:
            raise ValueError(f"per_decade must be >= 1, got {self.per_decade}")

    def params(self):
        from goldilocks_zone.theory.random_model import RandomModelParams

        return RandomModelParams(
            dim=self.dim, num_classes=self.num_classes, num_samples=self.num_samples,
            sigma_z=self.sigma_z, label_margin=self.label_margin, sigma_c=self.sigma_c,
            sigma_e=self.sigma_e, sigma_shared=self.sigma_shared, sigma_h=self.sigma_h)


QUICK = {"seeds": (0,), "margins": (0.0, 3.0), "per_decade": 1}


def _spectrum_rows(sample, null_sample, seed: int) -> list[dict[str, Any]]:
    from goldilocks_zone.theory.random_model import gradient_overlap

    ov = gradient_overlap(sample.hessian, sample.gradient)
    null_ev = torch.linalg.eigvalsh(null_sample.hessian).flip(0)
    return [{"section": "spectrum", "seed": seed, "index": i + 1, "eigenvalue": ev,
             "null_eigenvalue": nev, "cosine": cos}
            for i, (ev, nev, cos) in enumerate(zip(ov.eigenvalues.tolist(), null_ev.tolist(),
                                                   ov.cosines.tolist()))]


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.theory import random_model as rm

    params = config.params()
    rows: list[dict[str, Any]] = []
    ctx.record("random_model_params", params.as_dict())
    ctx.record("clustering_theory", rm.clustering_theory(params))
    for seed in ctx.progress(config.seeds, total=len(config.seeds), desc="spectrum"):
        drw = rm.draw(params.dim, params.num_classes, params.num_samples, seed=seed)
        sample = rm.simulate(params, draw_=drw)
        null = rm.simulate(params.replace(sigma_c=0.0, sigma_shared=0.0), draw_=drw)
        rows.extend(_spectrum_rows(sample, null, seed))
        edge = float(torch.linalg.eigvalsh(null.hessian)[-1])
        for m in config.margins:
            p = params.replace(label_margin=float(m))
            s = sample if float(m) == params.label_margin else rm.simulate(p, draw_=drw)
            stats = rm.analyse_spectrum(s, draw_=drw, top_k=config.top_k,
                                        min_gap_ratio=config.min_gap_ratio,
                                        edge=edge if float(m) == params.label_margin else None)
            rows.append({"section": "margin", "seed": seed, "label_margin": float(m),
                         "sigma_z": params.sigma_z, **stats})
    grid = log_grid(float(config.log10_sigma_z[0]), float(config.log10_sigma_z[1]),
                    int(config.per_decade))
    for seed in ctx.progress(config.seeds, total=len(config.seeds), desc="sigma_z sweep"):
        for pt in rm.sigma_z_sweep(params, grid, gradient_growth=config.gradient_growth,
                                   hessian_growth=config.hessian_growth, seed=seed,
                                   top_k=config.top_k, min_gap_ratio=config.min_gap_ratio):
            rows.append({"section": "sigma_z", "seed": seed,
                         "label_margin": params.label_margin, **pt.as_dict()})
    table = pd.DataFrame(rows)
    ctx.record("summary", summarise(table, config.top_k, params.label_margin))
    return table


def summarise(table: pd.DataFrame, top_k: int, label_margin: float) -> dict[str, Any]:
    """Headline numbers: outliers and gradient power at the reference point (per seed), the
    label-blind control, and where :math:`\\kappa` and the top eigenvalue peak in the sweep."""
    top = f"gradient_power_top{top_k}"
    out: dict[str, Any] = {}
    margin = table[table["section"] == "margin"]
    ref = margin[np.isclose(margin["label_margin"], label_margin)]
    if not ref.empty:
        out[top] = float(ref[top].mean())
        out[f"{top}_per_seed"] = [round(float(v), 4) for v in ref[top]]
        out["num_outliers_per_seed"] = [int(v) for v in ref["num_outliers"]]
        out["num_above_edge_per_seed"] = [int(v) for v in ref["num_above_edge"]]
        out["top_eigenvalue"] = float(ref["top_eigenvalue"].mean())
        out["bulk_edge"] = float(ref["bulk_edge"].mean())
        out["accuracy"] = float(ref["accuracy"].mean())
    blind = margin[np.isclose(margin["label_margin"], 0.0)]
    if not blind.empty and label_margin != 0:
        out[f"{top}_label_blind"] = float(blind[top].mean())
        out["num_outliers_label_blind"] = [int(v) for v in blind["num_outliers"]]
    sweep = table[table["section"] == "sigma_z"]
    if not sweep.empty:
        from goldilocks_zone.theory.zone import find_zone

        g = sweep.groupby("sigma_z")[["positive_curvature", "top_eigenvalue"]].mean()  # sorted
        sz = g.index.to_numpy(float)
        zone = find_zone(sz, g["positive_curvature"].to_numpy(float))
        out["peak_kappa"] = zone.peak_kappa
        out["sigma_z_at_peak_kappa"] = zone.peak_x
        out["kappa_all_non_finite"] = zone.all_non_finite
        out["kappa_at_ends"] = [float(g["positive_curvature"].iloc[0]),
                                float(g["positive_curvature"].iloc[-1])]
        out["sigma_z_at_peak_top_eigenvalue"] = find_zone(
            sz, g["top_eigenvalue"].to_numpy(float)).peak_x
        out["top_eigenvalue_at_ends"] = [float(g["top_eigenvalue"].iloc[0]),
                                         float(g["top_eigenvalue"].iloc[-1])]
    return out


# --------------------------------------------------------------------------- figures


def _spectrum_panels(axes, spec: pd.DataFrame, margin: pd.DataFrame, config: Config
                     ) -> None:
    top_k = config.top_k
    top = f"gradient_power_top{top_k}"
    seed = int(spec["seed"].min())
    s = spec[spec["seed"] == seed].sort_values("index")
    ev, nev = s["eigenvalue"].to_numpy(), s["null_eigenvalue"].to_numpy()
    ref_margin = config.label_margin
    ref = margin[(margin["seed"] == seed) & np.isclose(margin["label_margin"], ref_margin)]
    edge = float(ref["bulk_edge"].iloc[0]) if not ref.empty else float(nev.max())
    n_out = int(ref["num_outliers"].iloc[0]) if not ref.empty else 0

    ax = axes[0]
    lo, hi = min(ev.min(), nev.min()), ev.max()
    bins = np.linspace(lo, hi * 1.02, 120)
    ax.hist(nev, bins=bins, color="0.75", histtype="stepfilled",
            label="without class structure")
    ax.hist(ev, bins=bins, color="C0", histtype="step", linewidth=1.1, label="random model")
    if n_out:
        ax.plot(ev[:n_out], np.full(n_out, 0.7), "v", color="C3", markersize=4,
                label=f"{n_out} separated outliers")
    ax.axvline(edge, color="C3", linestyle="--", linewidth=0.8, label="bulk edge")
    style_axis(ax, yscale="log", xlabel=r"Hessian eigenvalue $\lambda$", ylabel="count",
               title=f"(a) spectrum: bulk + outliers (D={len(ev)})", title_size=None,
               legend={"fontsize": 7, "loc": "upper right"})

    ax = axes[1]
    idx = s["index"].to_numpy()
    cos2 = s["cosine"].to_numpy() ** 2
    ax.plot(idx, cos2, ".", color="C0", markersize=3, label=r"$\cos^2(\nabla L, v_i)$")
    style_axis(ax, xscale="log", yscale="log", ylim=(max(cos2[cos2 > 0].min(), 1e-8), 1.5),
               xlabel=r"eigenvector index $i$ (by eigenvalue)",
               ylabel=r"$\cos^2$ with the gradient")
    ax2 = ax.twinx()
    ax2.plot(idx, np.cumsum(cos2), color="C1", linewidth=1.2, label="cumulative power")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("cumulative gradient power", color="C1")
    ax2.axvline(top_k, color="0.4", linestyle=":", linewidth=0.8)
    share = float(np.sum(cos2[:top_k]))
    ax2.annotate(f"top {top_k}: {100 * share:.0f}%", (top_k, share), xytext=(25, -25),
                 textcoords="offset points", fontsize=8, color="C1",
                 arrowprops={"arrowstyle": "->", "color": "C1", "linewidth": 0.8})
    ax2.grid(False)
    ax.set_title("(b) gradient overlap with eigenvectors")

    ax = axes[2]
    g = margin.groupby("label_margin")[[top, "num_outliers"]].agg(["mean", "min", "max"])
    xs = g.index.to_numpy(dtype=float)
    ax.errorbar(xs, g[(top, "mean")], yerr=[g[(top, "mean")] - g[(top, "min")],
                                             g[(top, "max")] - g[(top, "mean")]],
                marker="o", color="C1", capsize=2, label=f"gradient power in top {top_k}")
    style_axis(ax, ylim=(0, 1.05), xlabel=r"label margin $m$ (true-logit shift / $\sigma_z$)")
    ax.set_ylabel(f"gradient power in top {top_k}", color="C1")
    ax3 = ax.twinx()
    ax3.plot(xs, g[("num_outliers", "mean")], "s--", color="C3", markersize=4,
             label="separated outliers")
    ax3.set_ylabel("separated outliers", color="C3")
    ax3.set_ylim(0, max(2 * config.num_classes, 1))
    ax3.axhline(config.num_classes, color="C3", linewidth=0.6, alpha=0.5)
    ax3.grid(False)
    ax.set_title("(c) labels single out C outliers")


def _sweep_panels(axes, sweep: pd.DataFrame, config: Config) -> None:
    top_k = config.top_k
    gamma = config.gradient_growth
    ax = axes[0]
    band(ax, sweep, "sigma_z", "top_eigenvalue", color="C0", label="Hessian")
    band(ax, sweep, "sigma_z", "spectral_norm_h", color="C2", marker=None, linestyle="--",
         label=r"$\|H\text{-term}\|_2$")
    style_axis(ax, xscale="log", yscale="log", xlabel=r"logit scale $\sigma_z$",
               ylabel=r"top eigenvalue $\lambda_{\max}$",
               title=rf"(d) top eigenvalue ($\sigma_c\propto\sigma_z^{{{gamma:g}}}$)",
               title_size=None, legend={"fontsize": 7})

    ax = axes[1]
    band(ax, sweep, "sigma_z", "positive_curvature", color="C0", label="Hessian")
    band(ax, sweep, "sigma_z", "positive_curvature_g", color="C1", marker=None,
         linestyle="--", label="G-term")
    ax.axhline(0, color="0.3", linewidth=0.8)
    style_axis(ax, xscale="log", xlabel=r"logit scale $\sigma_z$",
               ylabel=r"$\kappa = \mathrm{Tr}\,H / \|H\|_F$",
               title="(e) positive curvature rises, then falls", title_size=None,
               legend={"fontsize": 7})

    ax = axes[2]
    band(ax, sweep, "sigma_z", f"gradient_power_top{top_k}", color="C1",
         label=f"gradient power in top {top_k}")
    ent = sweep.assign(norm_entropy=sweep["mean_entropy"]
                       / math.log(config.num_classes))
    band(ax, ent, "sigma_z", "norm_entropy", color="C4", marker=None, linestyle="--",
         label=r"mean entropy / $\log C$")
    style_axis(ax, xscale="log", ylim=(0, 1.05), xlabel=r"logit scale $\sigma_z$",
               title="(f) freezing of the softmax", title_size=None, legend={"fontsize": 7})


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    paths: list[Path] = []
    spec = table[table["section"] == "spectrum"]
    margin = table[table["section"] == "margin"]
    sweep = table[table["section"] == "sigma_z"]
    if not spec.empty and not margin.empty:
        fig, axes = new_figure(3, 1, width=3.6, height=2.9)
        _spectrum_panels(axes[0], spec, margin, config)
        paths += save_figure(fig, fig_dir, "random_model_spectrum")
    if not sweep.empty:
        fig, axes = new_figure(3, 1, width=3.6, height=2.9)
        _sweep_panels(axes[0], sweep, config)
        paths += save_figure(fig, fig_dir, "random_model_sigma_z")
    return paths


register_module(
    __name__, id="random-model",
    paper="P2",
    summary="Fort & Ganguli's random model: bulk + C outliers, gradient in the top "
            "eigenvectors, top eigenvalue and Tr H/||H|| vs sigma_z",
    key_columns=("section", "label_margin", "sigma_z", "dim"),
)
