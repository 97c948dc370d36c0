r"""``confidence`` (P1 §4): positive curvature, model confidence and initial loss over many
random initialisations at one scale.

Protocol. For ``num_inits`` seeds (``first_seed``, ``first_seed + 1``, ...) build the model
and a random ``d``-dim basis with that seed and measure, on a fixed training subsample
(``data_seed``) at scale ``scale`` and temperature ``temperature``: the mean prediction entropy
:math:`\frac1S\sum_s H(p_s)` (``mean_entropy``; :math:`\log K` for uniform outputs),
:math:`\kappa = \operatorname{Tr}H_R/\|H_R\|_F` and ``fraction_positive`` of the subspace
Hessian with the spectral norms of its G- and H-term, the initial ``loss``, ``accuracy``, the
prior mismatch :math:`\|q - \bar p\|_2` and the projected gradient norm. The summary gives
Pearson and Spearman correlations (two-sided p-values, scipy) between entropy, :math:`\kappa`
and the loss.

Expected (theory at a fixed scale inside the zone): less confident inits (higher entropy) keep
:math:`M_s = \operatorname{diag}(p_s) - p_sp_s^\top` away from saturation, hence a stronger
G-term (higher :math:`\kappa`, P1 Eq. 9 through :math:`\Gamma_p`) and a lower loss:
:math:`\kappa` rises with entropy and falls with the initial loss, which falls with entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import config_problem
from goldilocks_zone.experiments._shared.config import (
    DeviceConfig,
    DimConfig,
    ModelDataConfig,
    NetworkConfig,
    SamplesConfig,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure, style_axis

#: Pairs whose correlation is reported: (x, y).
PAIRS = (("mean_entropy", "positive_curvature"), ("mean_entropy", "loss"),
         ("positive_curvature", "loss"))
LABELS = {
    "mean_entropy": "mean prediction entropy",
    "positive_curvature": r"positive curvature $\kappa$",
    "loss": "initial loss",
    "fraction_positive": r"fraction positive $\pi$",
}


@dataclass
class Config(NetworkConfig, DimConfig, SamplesConfig, ModelDataConfig, DeviceConfig):
    num_inits: int = knob(100, "random initialisations")
    first_seed: int = knob(0, "seeds first_seed, first_seed+1, ...")
    scale: float = knob(1.0, "initialisation scale alpha")
    temperature: float = knob(1.0, "softmax temperature T")
    basis: str = knob("orthonormal", "orthonormal or sparse")

    def validate(self) -> None:
        super().validate()
        if self.num_inits < 3:
            raise ValueError("num_inits must be >= 3 to compute correlations")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError("scale must be a positive number")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError("temperature must be a positive number")
        if self.basis not in ("orthonormal", "sparse"):
            raise ValueError("basis must be 'orthonormal' or 'sparse'")


QUICK = {"num_inits": 24, "num_samples": 500, "dim": 30}


def correlations(table: pd.DataFrame, pairs=PAIRS) -> dict[str, dict[str, float]]:
    """Pearson and Spearman coefficients with two-sided p-values for each pair (finite rows)."""
    from scipy import stats

    out = {}
    for x, y in pairs:
        a, b = table[x].to_numpy(float), table[y].to_numpy(float)
        mask = np.isfinite(a) & np.isfinite(b)
        a, b = a[mask], b[mask]
        if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            out[f"{x} vs {y}"] = {k: math.nan for k in
                                  ("pearson_r", "pearson_p", "spearman_rho", "spearman_p")}
            continue
        pr, sr = stats.pearsonr(a, b), stats.spearmanr(a, b)
        out[f"{x} vs {y}"] = {"pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
                              "spearman_rho": float(sr.statistic),
                              "spearman_p": float(sr.pvalue), "n": int(a.size)}
    return out


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import models as model_lib
    from goldilocks_zone.curvature import random_basis, subspace_curvature
    from goldilocks_zone.training.gradient_descent import evaluate, initial_params

    rows = []
    seeds = range(config.first_seed, config.first_seed + config.num_inits)
    # the data subsample (data_seed) is shared by every init
    problem = config_problem(config, config.first_seed)
    data, num_classes, x = problem.data, problem.num_classes, problem.inputs
    for seed in ctx.progress(seeds, total=config.num_inits, desc="random inits"):
        model = model_lib.create(config.model, tuple(x.shape[1:]), num_classes,
                                 activation=config.activation, init=config.init, seed=seed)
        model = model.to(dtype=x.dtype, device=x.device)
        num_params = sum(p.numel() for p in model.parameters())
        basis = random_basis(num_params, config.dim, kind=config.basis, seed=seed,
                             dtype=x.dtype, device=x.device)
        sc = subspace_curvature(model, data, basis, scale=config.scale,
                                temperature=config.temperature, batch_size=config.batch_size)
        ev = evaluate(model, initial_params(model, scale=config.scale), data,
                      temperature=config.temperature, batch_size=config.batch_size)
        h, g, hh = sc.stats("hessian"), sc.stats("g_term"), sc.stats("h_term")
        rows.append({
            "seed": seed, "scale": config.scale, "temperature": config.temperature,
            "dim": config.dim, "num_samples": sc.num_samples,
            "mean_entropy": ev.mean_entropy,
            "normalised_entropy": ev.mean_entropy / math.log(num_classes),
            "positive_curvature": h.positive_curvature,
            "fraction_positive": h.fraction_positive,
            "spectral_norm": h.spectral_norm, "top_eigenvalue": h.top_eigenvalue,
            "g_spectral_norm": g.spectral_norm, "h_spectral_norm": hh.spectral_norm,
            "loss": sc.loss, "accuracy": sc.accuracy,
            "mismatch": float((sc.class_prior - sc.mean_probs).norm()),
            "mean_prob_max": float(sc.mean_probs.max()),
            "projected_grad_norm": float(sc.projected_gradient.norm()),
            "finite": sc.finite,
        })
    table = pd.DataFrame(rows)
    table["model"] = config.model
    table["dataset"] = config.dataset
    corr = correlations(table)
    ctx.record("dataset_fingerprint", problem.dataset.fingerprint)
    ctx.record("correlations", corr)
    ctx.record("summary", {
        **{k: f"Pearson r = {v['pearson_r']:+.3f} (p = {v['pearson_p']:.2g}), Spearman rho = "
              f"{v['spearman_rho']:+.3f} (p = {v['spearman_p']:.2g})" for k, v in corr.items()},
        **{f"{name} range": f"{table[col].min():.3g} .. {table[col].max():.3g}"
           for name, col in (("kappa", "positive_curvature"), ("entropy", "mean_entropy"))},
    })
    return table


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib as mpl

    corr = correlations(table)
    fig, axes = new_figure(3, 1, width=3.0, height=2.7)
    colour = table["mismatch"].to_numpy(float)
    norm = mpl.colors.Normalize(vmin=float(np.nanmin(colour)), vmax=float(np.nanmax(colour)))
    scatter = None
    for ax, (x, y) in zip(axes[0], PAIRS):
        a, b = table[x].to_numpy(float), table[y].to_numpy(float)
        scatter = ax.scatter(a, b, c=colour, cmap="viridis", norm=norm, s=14, lw=0.3,
                             edgecolor="k")
        mask = np.isfinite(a) & np.isfinite(b)
        if mask.sum() >= 3 and np.ptp(a[mask]) > 0:
            slope, intercept = np.polyfit(a[mask], b[mask], 1)
            grid = np.linspace(a[mask].min(), a[mask].max(), 20)
            ax.plot(grid, slope * grid + intercept, color="tab:red", lw=1)
        c = corr[f"{x} vs {y}"]
        style_axis(ax, xlabel=LABELS[x], ylabel=LABELS[y], title_size=8,
                   title=f"Pearson r = {c['pearson_r']:+.2f} (p = {c['pearson_p']:.1g})\n"
                         f"Spearman ρ = {c['spearman_rho']:+.2f} (p = {c['spearman_p']:.1g})")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[0, -1], label=r"prior mismatch $\|q-\bar p\|_2$")
    fig.suptitle(f"{len(table)} random inits of {config.model} on "
                 f"{config.dataset}, $\\alpha$ = {config.scale}, "
                 f"T = {config.temperature}, d = {config.dim}", fontsize=9)
    return save_figure(fig, fig_dir, "confidence")


register_module(
    __name__, id="confidence",
    paper="P1 §4",
    summary="entropy, positive curvature and initial loss over many random inits",
    key_columns=("scale", "temperature", "dim"),
)
