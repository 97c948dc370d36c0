r"""``expected-g`` (P1 Figs. 3-4): the measured positive curvature of the G-term against the
random-model prediction :math:`\kappa(\mathbb{E}\,G)` of P1 Eq. 9.

Three panels, one tidy table with a ``panel`` column:

* ``panel="scale"``: for each seed and :math:`\alpha` on the scale grid, the projected logit
  Jacobians :math:`J_sR` (:func:`goldilocks_zone.projected_logit_jacobians`) give the G-term
  :math:`G_R = \frac1S\sum_s (J_sR)^\top M_s (J_sR)` (its :math:`\kappa`, :math:`\pi`, norms), the
  random-model fit :math:`\sigma_c^2, \sigma_E^2` (:func:`goldilocks_zone.theory.fit_random_model`),
  :math:`\Gamma_p` of :math:`\bar M` and the prediction ``expected_curvature`` (Eq. 9).
* ``panel="dim"``: the same at a fixed scale ``dim_scale`` for subspace dimensions ``dims``
  (one basis per dimension, drawn with the seed): :math:`\kappa(G)` rises like :math:`\sqrt d`
  while the noise dominates and saturates towards :math:`\Gamma_p` once the mean does.
* ``panel="logits"``: :math:`\Gamma_p^{-2}` of :math:`M = \operatorname{diag}(p) - pp^\top`,
  :math:`p = \operatorname{softmax}(a z)` for ``logit_sets`` random logit vectors
  :math:`z \sim \mathcal N(0, I_K)` and logit scales :math:`a \in 10^{[-2, 2]}`; rows
  ``series="set"`` (one per logit set), ``series="mean"`` (the average of the per-set values)
  and ``series="pooled"`` (:math:`\Gamma_p^{-2}` of the mean matrix over the sets, the quantity
  Eq. 9 uses when the sets are the samples). :math:`\Gamma_p^{-2}` rises from
  :math:`1/(K-1)` (uniform outputs) to 1 (confident outputs), which is why
  :math:`\kappa(\mathbb{E}\,G)` declines at large scales.

Eq. 9 uses the subspace dimension ``d``; :math:`\sigma_c^2, \sigma_E^2` have divisor
``n - ddof``. Rows whose softmax saturates in floating point (:math:`\operatorname{Tr}\bar M =
0`, G exactly 0) have ``saturated=True`` and are left out of the comparison with Eq. 9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import log_grid, torch_dtype
from goldilocks_zone.experiments._shared.config import DdofConfig, knob
from goldilocks_zone.experiments._shared.curvature_sweep import (
    ScaleGridConfig,
    check_log_range,
    scale_grid,
    seed_setups,
)
from goldilocks_zone.experiments._shared.plotting import (
    band,
    describe,
    new_figure,
    save_figure,
    style_axis,
)


@dataclass
class Config(DdofConfig, ScaleGridConfig):
    dims: tuple[int, ...] = knob((2, 5, 10, 20, 50, 100, 200),
                                 "subspace dimensions of the kappa-vs-d panel")
    dim_scale: float = knob(1.0, "scale alpha of the kappa-vs-d panel")
    logit_sets: int = knob(30, "random logit vectors (Gamma_p panel)")
    logit_log10_range: tuple[float, ...] = knob((-2.0, 2.0),
                                                "log10 range of the logit scale (Gamma_p panel)")
    logit_per_decade: int = knob(8, "points per decade of the logit scale")
    logit_classes: int | None = knob(None, "K of the random logits (default: the dataset's)")
    debias: bool = knob(False,
                        "subtract sigma_E^2/S from sigma_c^2 (noise left in the sample mean)")

    def validate(self) -> None:
        super().validate()
        check_log_range("logit_log10_range", self.logit_log10_range, self.logit_per_decade)
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be positive integers, got {self.dims}")
        if not self.dim_scale > 0:
            raise ValueError(f"dim_scale must be > 0, got {self.dim_scale}")
        if self.logit_sets < 1:
            raise ValueError(f"logit_sets must be >= 1, got {self.logit_sets}")
        if self.logit_classes is not None and self.logit_classes < 2:
            raise ValueError(f"logit_classes must be >= 2, got {self.logit_classes}")


QUICK = {"num_samples": 300, "dim": 20, "seeds": (0, 1), "per_decade": 2,
         "dims": (2, 5, 10, 20, 50, 100)}


def g_term_point(problem, basis: torch.Tensor, *, scale: float, batch_size: int | None,
                 debias: bool, ddof: int = 0) -> dict[str, Any]:
    """Measured :math:`\\kappa(G_R)` (and spectrum statistics) and the Eq. 9 prediction from
    one pass of projected Jacobians; ``saturated`` marks a softmax saturated in floating point
    (:func:`goldilocks_zone.theory.is_saturated`)."""
    from goldilocks_zone.curvature import projected_logit_jacobians, spectrum_stats
    from goldilocks_zone.theory import (
        expected_g_curvature,
        fit_random_model,
        gamma_p,
        gauss_newton_from_jacobians,
        is_saturated,
    )

    pj = projected_logit_jacobians(problem.model, problem.data, basis, scale=scale,
                                   batch_size=batch_size)
    g = gauss_newton_from_jacobians(pj.jacobians, pj.probs)
    stats = spectrum_stats(g)
    fit = fit_random_model(pj.jacobians, debias=debias, ddof=ddof)
    gp = float(gamma_p(pj.probs))
    finite = bool(torch.isfinite(pj.jacobians).all()) and stats.finite \
        and math.isfinite(fit.sigma_c2) and math.isfinite(fit.sigma_e2)
    expected = (float(expected_g_curvature(fit.sigma_c2, fit.sigma_e2, gp, basis.shape[1]))
                if finite else math.nan)
    return {"term": "g_term", **stats.as_dict(), "expected_curvature": expected,
            "sigma_c2": fit.sigma_c2, "sigma_e2": fit.sigma_e2, "gamma_p": gp,
            # M-bar underflowed to 0 (every output one-hot): G is the zero matrix there
            "saturated": bool(finite and is_saturated(pj.probs)),
            "finite": finite}


def logit_panel(num_sets: int, num_classes: int, scales: tuple[float, ...], seed: int
                ) -> list[dict[str, Any]]:
    r""":math:`\Gamma_p^{-2}` rows for random logits :math:`z \sim \mathcal N(0, I_K)` (one
    generator seeded with ``seed``) scaled by each value of ``scales``."""
    from goldilocks_zone.theory import gamma_p

    gen = torch_generator(int(seed))
    logits = torch.randn(num_sets, num_classes, generator=gen, dtype=torch.float64)
    rows = []
    for a in scales:
        probs = torch.softmax(a * logits, dim=-1)
        per_set = gamma_p(probs.unsqueeze(-2))  # (num_sets,): one vector per set
        pooled = float(gamma_p(probs))  # the sets as samples of M-bar
        for i, value in enumerate(per_set.tolist()):
            rows.append({"panel": "logits", "logit_scale": a, "series": "set", "logit_set": i,
                         "gamma_p": value, "gamma_p_inv_sq": value**-2})
        inv_sq = per_set.pow(-2)
        rows.append({"panel": "logits", "logit_scale": a, "series": "mean", "logit_set": -1,
                     "gamma_p": float(inv_sq.mean() ** -0.5),
                     "gamma_p_inv_sq": float(inv_sq.mean())})
        rows.append({"panel": "logits", "logit_scale": a, "series": "pooled", "logit_set": -1,
                     "gamma_p": pooled, "gamma_p_inv_sq": pooled**-2})
    return rows


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import random_basis

    scales = scale_grid(config.log10_range, config.per_decade)
    rows: list[dict[str, Any]] = []
    jobs = [("scale", a) for a in scales] + [("dim", d) for d in config.dims]
    num_classes = None
    for seed, problem, basis in seed_setups(config, ctx):
        num_classes = problem.num_classes
        too_big = [d for d in config.dims if d > problem.num_params]
        if too_big:
            raise ValueError(f"dims {too_big} exceed the number of parameters "
                             f"{problem.num_params} of {config.model!r}")
        for panel, value in ctx.progress(jobs, total=len(jobs), desc=f"expected-g seed {seed}"):
            if panel == "scale":
                b, scale, dim = basis, float(value), config.dim
            else:  # one basis per dimension, drawn with the seed
                scale, dim = config.dim_scale, int(value)
                b = basis if dim == config.dim else random_basis(
                    problem.num_params, dim, kind=config.basis, seed=seed,
                    dtype=torch_dtype(config.dtype), device=config.device)
            point = g_term_point(problem, b, scale=scale, batch_size=config.batch_size,
                                 debias=config.debias, ddof=config.ddof)
            rows.append({"panel": panel, "scale": scale, "seed": seed, "dim": dim, **point})
    k = config.logit_classes or int(num_classes)
    rows.extend(logit_panel(config.logit_sets, k,
                            log_grid(config.logit_log10_range[0], config.logit_log10_range[1],
                                     config.logit_per_decade), seed=config.seeds[0]))
    table = pd.DataFrame(rows)
    table["saturated"] = table["saturated"].astype("boolean")  # NA on the logits panel
    for column in ("seed", "dim", "logit_set"):  # integer columns with gaps between panels
        table[column] = table[column].astype("Int64")
    table["num_classes"] = int(num_classes)
    table.loc[table["panel"] == "logits", "num_classes"] = k
    ctx.record("summary", summarise(table))
    return table


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    sc = table[table["panel"] == "scale"]
    saturated = (sc["saturated"].fillna(False).astype(bool) if "saturated" in sc
                 else pd.Series(False, index=sc.index))
    mean = sc.groupby("scale")[["positive_curvature", "expected_curvature"]].mean()
    rel = ((mean["positive_curvature"] - mean["expected_curvature"]).abs()
           / mean["expected_curvature"].abs().clip(lower=1e-12))
    # agreement where there is something to agree on: no seed saturated (M-bar = 0) and
    # kappa(G) not collapsed
    any_saturated = saturated.groupby(sc["scale"]).any()
    live = (mean["positive_curvature"] > 0.5) & ~any_saturated
    dim = table[table["panel"] == "dim"].groupby("dim")[
        ["positive_curvature", "expected_curvature"]].mean()
    logits = table[(table["panel"] == "logits") & (table["series"] == "mean")]
    return {
        "kappa_g_at_low_end": float(mean["positive_curvature"].iloc[0]),
        "kappa_eg_at_low_end": float(mean["expected_curvature"].iloc[0]),
        "peak_kappa_g": float(mean["positive_curvature"].max()),
        "saturated_rows": int(saturated.sum()),
        "smallest_saturated_scale": (float(sc.loc[saturated, "scale"].min())
                                     if saturated.any() else None),
        "median_relative_gap_kappa_g_vs_eq9": float(rel[live].median()) if live.any() else None,
        "kappa_g_vs_dim": {int(d): round(float(v), 4)
                           for d, v in dim["positive_curvature"].items()},
        "kappa_eg_vs_dim": {int(d): round(float(v), 4)
                            for d, v in dim["expected_curvature"].items()},
        "gamma_p_inv_sq_range": ([float(logits["gamma_p_inv_sq"].iloc[0]),
                                  float(logits["gamma_p_inv_sq"].iloc[-1])]
                                 if not logits.empty else None),
    }


# --------------------------------------------------------------------------- figure


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    fig, axes = new_figure(3, 1, width=3.5, height=2.9)
    ax_s, ax_d, ax_l = axes[0]

    sc = table[table["panel"] == "scale"]
    if not sc.empty:
        dim = int(sc["dim"].iloc[0])
        band(ax_s, sc, "scale", "positive_curvature", color="C2",
             label=r"measured $\kappa(G)$", markersize=2.5)
        band(ax_s, sc, "scale", "expected_curvature", color="k", linestyle="--", marker=None,
             label=r"Eq. 9 $\kappa(\mathbb{E}\,G)$")
        band(ax_s, sc, "scale", "gamma_p", color="C1", linestyle=":", marker=None,
             label=r"$\Gamma_p$")
        ax_s.axhline(math.sqrt(dim), color="0.5", linewidth=0.8, linestyle="-.",
                     label=rf"$\sqrt{{d}}$, d={dim}")
        saturated = sc["saturated"].fillna(False).astype(bool) if "saturated" in sc else None
        if saturated is not None and saturated.any():
            start = float(sc.loc[saturated, "scale"].min())
            ax_s.axvspan(start, float(sc["scale"].max()), color="0.85", zorder=0,
                         label=r"saturated: one-hot softmax ($\bar M = 0$)")
        style_axis(ax_s, xscale="log", ylim=(0, None))
    style_axis(ax_s, xlabel=r"initialisation scale $\alpha$",
               ylabel="positive curvature of the G-term", title=r"(a) $\kappa(G)$ vs Eq. 9",
               legend={"loc": "lower left", "fontsize": 7})

    dm = table[table["panel"] == "dim"]
    if not dm.empty:
        band(ax_d, dm, "dim", "positive_curvature", color="C2", label=r"measured $\kappa(G)$")
        band(ax_d, dm, "dim", "expected_curvature", color="k", linestyle="--", marker=None,
             label=r"Eq. 9 $\kappa(\mathbb{E}\,G)$")
        ds = np.array(sorted(dm["dim"].unique()), dtype=float)
        ax_d.plot(ds, np.sqrt(ds), color="0.5", linewidth=0.8, linestyle="-.",
                  label=r"$\sqrt{d}$")
        style_axis(ax_d, xscale="log", yscale="log",
                   title=rf"(b) $\kappa$ vs dimension at $\alpha$={float(dm['scale'].iloc[0]):g}")
        from matplotlib.ticker import FormatStrFormatter, LogLocator

        ax_d.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_d.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_d.yaxis.set_minor_formatter(FormatStrFormatter(""))
        ax_d.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    style_axis(ax_d, xlabel="subspace dimension d", ylabel="positive curvature of the G-term",
               legend={"loc": "upper left", "fontsize": 7})

    lg = table[table["panel"] == "logits"]
    if not lg.empty:
        k = int(lg["num_classes"].iloc[0])
        sets = lg[lg["series"] == "set"]
        for i, (_, g) in enumerate(sets.groupby("logit_set")):
            g = g.sort_values("logit_scale")
            ax_l.plot(g["logit_scale"], g["gamma_p_inv_sq"], color="0.6", linewidth=0.5,
                      alpha=0.6, label=f"{sets['logit_set'].nunique()} logit sets"
                      if i == 0 else None)
        for series, style, label in (("mean", {"color": "C0", "linewidth": 2.0}, "average"),
                                     ("pooled", {"color": "C3", "linestyle": "--",
                                                 "linewidth": 1.2},
                                      r"pooled $\bar M$ over sets")):
            g = lg[lg["series"] == series].sort_values("logit_scale")
            ax_l.plot(g["logit_scale"], g["gamma_p_inv_sq"], label=label, **style)
        ax_l.axhline(1.0 / (k - 1), color="0.3", linewidth=0.8, linestyle=":")
        ax_l.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
        ax_l.text(float(lg["logit_scale"].min()), 1.0 / (k - 1), rf" $1/(K-1)$, K={k}",
                  va="bottom", fontsize=7)
        style_axis(ax_l, xscale="log", ylim=(0, 1.05))
    style_axis(ax_l, xlabel=r"logit scale $a$ ($p = \mathrm{softmax}(a z)$)",
               ylabel=r"$\Gamma_p^{-2}$",
               title=r"(c) $\Gamma_p^{-2}$ of $\mathrm{diag}(p) - pp^\top$",
               legend={"loc": "upper left", "fontsize": 7})
    fig.suptitle(f"Expected G-term curvature: {describe(config)}", fontsize=9)
    return save_figure(fig, fig_dir, "expected_g")


EXPERIMENT = register_module(
    __name__, id="expected-g",
    paper="P1 Figs. 3-4",
    summary="kappa(G) vs the random-model prediction (Eq. 9) over scale and dimension; Gamma_p",
    key_columns=("panel", "term", "scale", "dim"),
)
