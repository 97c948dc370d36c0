r"""``temperature-sweep`` (P1 Fig. 1, middle and right): positive curvature of the subspace
Hessian against the softmax temperature :math:`T`, at :math:`\alpha = 1` and at other scales.

Protocol. Same model, data subsample, seeds and bases as ``scale-sweep``. The temperature grid
is :math:`T = \alpha^{-L}` for :math:`\alpha` on the scale-sweep grid, i.e.
:math:`T \in 10^{[-3L,\,3L]}` with four points per decade of :math:`\alpha` (``4/L`` per
decade of ``T``), where ``L`` is the homogeneity degree of the model
(:func:`goldilocks_zone.models.homogeneity`). For each scale in ``scales`` the curvature is
measured at every ``T`` (logits divided by ``T``, parameters multiplied by the scale).

Equivalence check (homogeneous models only). For a positively homogeneous network of degree
``L``, :math:`f(x;\alpha\theta) = \alpha^L f(x;\theta)`, hence
:math:`\nabla^2L(\alpha\theta;\,T{=}1) = \alpha^{-2}\,\nabla^2L(\theta;\,T{=}\alpha^{-L})` and
:math:`\kappa,\pi` at scale :math:`\alpha` equal those at :math:`T=\alpha^{-L}` with the same
basis. With ``equivalence=True`` the scale sweep is measured too (rows with
``sweep="scale"``) and each of its rows carries

* ``equivalent_temperature`` :math:`=\alpha^{-L}`,
* ``kappa_gap`` :math:`= |\kappa_{\rm scale}(\alpha) - \kappa_{\rm temp}(T{=}\alpha^{-L})|`,
* ``identity_residual`` :math:`= \|\alpha^2 H_{\rm scale} - H_{\rm temp}\|_F/\|H_{\rm temp}\|_F`.

The maxima over the grid are recorded in the manifest. For a non-homogeneous model (biases,
tanh, ...) the identity does not hold: the overlay is skipped with a note and ``L`` for the
temperature range is the number of weight layers (``nominal_degree`` overrides it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.config import knob
from goldilocks_zone.experiments._shared.curvature_sweep import (
    ScaleGridConfig,
    curvature_rows,
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

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Config(ScaleGridConfig):
    # the grid fields of ScaleGridConfig, described for this sweep (same defaults and checks)
    log10_range: tuple[float, ...] = knob(
        (-3.0, 3.0), "log10 range of the equivalent scale alpha; T = alpha^-L spans 10^[-3L, 3L]")
    per_decade: int = knob(4, "grid points per decade of the equivalent alpha")
    scales: tuple[float, ...] = knob((1.0, 0.1, 10.0),
                                     "scales alpha at which kappa(T) is measured (must include 1)")
    equivalence: bool = knob(
        True, "also run the scale sweep and compare under T = alpha^-L (homogeneous models)")
    nominal_degree: int | None = knob(None,
                                      "L for the temperature range of a non-homogeneous model "
                                      "(default: number of weight layers)")

    def validate(self) -> None:
        super().validate()
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ValueError(f"scales must be positive finite numbers, got {self.scales}")
        if 1.0 not in self.scales:
            raise ValueError(f"scales must include 1.0 (the reference curve of the paper and of "
                             f"the scale/temperature comparison), got {self.scales}")
        if self.nominal_degree is not None and self.nominal_degree < 1:
            raise ValueError(f"nominal_degree must be >= 1, got {self.nominal_degree}")


QUICK = {"num_samples": 300, "dim": 20, "seeds": (0,), "per_decade": 2, "scales": (1.0, 10.0)}


def weight_layer_count(model: nn.Module) -> int:
    """Number of Linear/Conv layers: the nominal depth used for a non-homogeneous model."""
    return sum(isinstance(m, _WEIGHT_LAYERS) for m in model.modules())


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import subspace_curvature
    from goldilocks_zone.models import homogeneity

    alphas = scale_grid(config.log10_range, config.per_decade)
    rows: list[dict[str, Any]] = []
    for seed, problem, basis in seed_setups(config, ctx):
        h = homogeneity(problem.model)
        degree = (int(h.degree) if h.is_homogeneous
                  else config.nominal_degree or max(weight_layer_count(problem.model), 1))
        ctx.record("degree", {"L": degree, "homogeneous": h.is_homogeneous, "reason": h.reason})
        temperatures = [a ** (-degree) for a in alphas]
        if config.equivalence and not h.is_homogeneous:
            ctx.record("equivalence_note",
                       f"scale/temperature overlay skipped: {config.model} is not positively "
                       f"homogeneous ({h.reason}); the temperature grid uses L={degree}")
        reference: dict[int, tuple[float, torch.Tensor]] = {}
        jobs = [("temperature", s, i) for s in config.scales for i in range(len(alphas))]
        if config.equivalence and h.is_homogeneous:
            jobs += [("scale", a, i) for i, a in enumerate(alphas)]
        for sweep, value, i in ctx.progress(jobs, total=len(jobs),
                                            desc=f"temperature-sweep seed {seed}"):
            scale = float(value)
            temperature = float(temperatures[i]) if sweep == "temperature" else 1.0
            curv = subspace_curvature(problem.model, problem.data, basis, scale=scale,
                                      temperature=temperature, batch_size=config.batch_size)
            (row,) = curvature_rows(curv, ("hessian",), sweep=sweep, scale=scale,
                                    temperature=temperature, seed=seed, dim=config.dim)
            row.update(degree=degree, equivalent_temperature=math.nan, kappa_gap=math.nan,
                       identity_residual=math.nan)
            if sweep == "temperature" and scale == 1.0:
                reference[i] = (row["positive_curvature"], curv.hessian)
            if sweep == "scale":
                kappa_t, hess_t = reference[i]
                gap = abs(row["positive_curvature"] - kappa_t)
                denom = float(torch.linalg.matrix_norm(hess_t))
                resid = float(torch.linalg.matrix_norm(scale**2 * curv.hessian - hess_t))
                resid = resid / denom if denom > 0 else resid
                row.update(equivalent_temperature=temperatures[i], kappa_gap=gap,
                           identity_residual=resid)
            rows.append(row)
    table = pd.DataFrame(rows)
    gaps, residuals = (table[c][np.isfinite(table[c])] for c in ("kappa_gap", "identity_residual"))
    summary: dict[str, Any] = {}
    ref = table[(table["sweep"] == "temperature") & (table["scale"] == 1.0)]
    if not ref.empty:
        from goldilocks_zone.theory.zone import find_zone

        mean = ref.groupby("temperature")["positive_curvature"].mean().sort_index()
        zone = find_zone(mean.index.to_numpy(float), mean.to_numpy(float))
        summary.update(peak_kappa=zone.peak_kappa, temperature_at_peak=zone.peak_x,
                       zone=list(zone.bounds) if zone.bounds is not None else None,
                       all_non_finite=zone.all_non_finite)
    if len(gaps):
        max_gap = float(gaps.max())
        max_residual = float(residuals.max()) if len(residuals) else math.nan
        summary.update(max_kappa_gap_scale_vs_temperature=max_gap,
                       max_hessian_identity_residual=max_residual)
        ctx.record("equivalence", {"max_kappa_gap": max_gap, "max_identity_residual": max_residual,
                                   "pairs": len(gaps)})
    ctx.record("summary", summary)
    return table


# --------------------------------------------------------------------------- figure


def _power(x, exponent: float):
    """``x ** exponent`` for the secondary axis; matplotlib probes x = 0, which maps to inf."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.power(np.asarray(x, dtype=float), exponent)


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    temp = table[table["sweep"] == "temperature"]
    scale_rows = table[table["sweep"] == "scale"]
    degree = int(table["degree"].iloc[0])
    fig, axes = new_figure(2, 1, width=3.7, height=2.9)
    ax_a, ax_b = axes[0]

    # (a) alpha = 1: kappa(T), with the scale sweep overlaid at T = alpha^-L
    ref = temp[temp["scale"] == 1.0]
    band(ax_a, ref, "temperature", "positive_curvature", color="C0",
         label=r"temperature sweep ($\alpha=1$)")
    if not scale_rows.empty:
        g = scale_rows.groupby("equivalent_temperature")["positive_curvature"].mean()
        ax_a.plot(g.index.to_numpy(), g.to_numpy(), linestyle="none", marker="x", color="C3",
                  markersize=5, label=rf"scale sweep at $T=\alpha^{{-{degree}}}$")
        gap = float(scale_rows["kappa_gap"].max())
        ax_a.text(0.03, 0.97, f"max |Δκ| = {gap:.1e}", transform=ax_a.transAxes, va="top",
                  fontsize=8)
        top = ax_a.secondary_xaxis("top", functions=(
            lambda t, L=degree: _power(t, -1.0 / L), lambda a, L=degree: _power(a, -float(L))))
        top.set_xlabel(r"(a) $\alpha = 1$; top axis: equivalent scale $\alpha = T^{-1/L}$",
                       fontsize=9)
    else:
        ax_a.text(0.03, 0.97, "not homogeneous:\nno scale overlay", transform=ax_a.transAxes,
                  va="top", fontsize=8)
    ax_a.axhline(0.0, color="0.3", linewidth=0.8)
    style_axis(ax_a, xscale="log", xlabel=r"softmax temperature $T$",
               ylabel=r"positive curvature $\kappa$",
               title=r"(a) $\kappa$ vs $T$ at $\alpha = 1$" if scale_rows.empty else None,
               legend={"loc": "center right", "fontsize": 7})

    # (b) kappa(T) at several alpha
    scales = sorted(temp["scale"].unique())
    colors = plt.cm.viridis(np.linspace(0.0, 0.8, len(scales)))
    for color, s in zip(colors, scales):
        band(ax_b, temp[temp["scale"] == s], "temperature", "positive_curvature",
             color=color, label=rf"$\alpha={s:g}$", markersize=2.5)
    ax_b.axhline(0.0, color="0.3", linewidth=0.8)
    style_axis(ax_b, xscale="log", xlabel=r"softmax temperature $T$",
               ylabel=r"positive curvature $\kappa$",
               title=r"(b) $\kappa$ vs $T$ at several scales",
               legend={"loc": "upper right", "fontsize": 7})
    fig.suptitle(f"Scale and temperature: {describe(config)}, L={degree}", fontsize=9)
    return save_figure(fig, fig_dir, "temperature_sweep")


EXPERIMENT = register_module(
    __name__, id="temperature-sweep",
    paper="P1 Fig. 1 (middle, right)",
    summary="positive curvature vs softmax temperature; equals the scale sweep at T = a^-L",
    key_columns=("sweep", "term", "scale", "temperature", "dim"),
)
