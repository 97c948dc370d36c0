"""P3: the Goldilocks zone as a shell of radii ‖θ‖ around the Xavier radius.

Protocol (Fort & Scherlis 2019, SCIENCE.md §7): draw a Xavier initialisation θ_X of a network
*with biases*, and evaluate the subspace Hessian H_R = Rᵀ ∇²L(r θ_X/‖θ_X‖) R on a fixed random
d-dimensional basis R at radii r = ‖θ‖ on a log grid around the Xavier radius r_X = ‖θ_X‖ (the
curvature engine's ``scale`` = r / r_X multiplies every parameter, biases included; the model
is never modified). Record κ = Tr H_R / ‖H_R‖_F and the fraction of positive eigenvalues π, the
same for the Gauss-Newton G- and H-term with their spectral norms, and the Kaiming radius r_K
(‖θ‖ of a Kaiming init of the same architecture and seed). Networks are architecture specs: a
registered model name (``small-cnn``, ...) or ``mlp:W1xW2x...`` (hidden widths).

Expected: κ and π clearly positive on a shell of radii that contains r_X; κ ≈ 0 (π ≈ 1/2) far
outside, where the softmax saturates and the G-term dies. Far inside, with biases, κ → 0 only
where the H-term of readout-weight × last-hidden-bias couplings wins (P3's fully-connected
nets); where the readout-bias G-term wins (e.g. the small CNN on 8×8 digits) a plateau of
positive κ remains (docs/experiments.md). Measured (mnist-5k, 500 samples, d = 20, one seed,
radii 10^-2..10^2 × r_X): κ at r_X / innermost / outermost radius is 3.94 / 0.39 / 1.00 for
``mlp:100`` ReLU, 2.22 / 0.30 / 0.22 for tanh, 3.60 / 1.33 / 0.02 for ``mlp:100x100`` ReLU; the
``small-cnn`` stays near κ ≈ 1 from 0.01 to 10 × r_X and turns negative outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.architecture import (
    build_problem,
    kaiming_radius,
    parameter_radius,
    parse_architecture,
)
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import with_cpu_threads
from goldilocks_zone.experiments._shared.config import (
    DeviceConfig,
    DimConfig,
    SamplesConfig,
    SeedsConfig,
    ThreadsConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import band, new_figure, save_figure, style_axis

# --------------------------------------------------------------------------- config


@dataclass
class Config(ThreadsConfig, DimConfig, SeedsConfig, SamplesConfig, DeviceConfig):
    num_samples: int = common("num_samples", 1000)
    seeds: tuple[int, ...] = common("seeds", (0, 1, 2))

    models: tuple[str, ...] = field(
        default=("mlp:100", "mlp:400", "mlp:100x100", "mlp:100x100x100", "small-cnn"),
        metadata={"help": "networks: 'mlp:W1xW2...' (hidden widths) or a registered model name"})
    activations: tuple[str, ...] = knob(("relu", "tanh"), "hidden activations")
    datasets: tuple[str, ...] = knob(("mnist-5k", "fashion-mnist", "digits"), "real data sets")
    radius_lo: float = knob(-2.0, "smallest radius, log10(r / r_Xavier)")
    radius_hi: float = knob(2.0, "largest radius, log10(r / r_Xavier)")
    per_decade: int = knob(4, "radius grid points per decade")
    basis: str = knob("orthonormal", "orthonormal | sparse")
    data_seed: int = knob(0, "seed of the data subsample")
    batch_size: int | None = knob(None, "curvature chunk size")

    def validate(self) -> None:
        super().validate()
        if not self.models or not self.activations or not self.datasets:
            raise ValueError("models, activations and datasets must be non-empty")
        for spec in self.models:
            parse_architecture(spec)
        if not self.radius_lo < 0.0 < self.radius_hi:
            raise ValueError(f"the radius grid must straddle the Xavier radius: need "
                             f"radius_lo < 0 < radius_hi, got {self.radius_lo}, {self.radius_hi}")
        if self.per_decade < 1:  # dim and num_samples: DimConfig, SamplesConfig
            raise ValueError(f"per_decade must be >= 1, got {self.per_decade}")

    @property
    def relative_radii(self) -> np.ndarray:
        """r / r_Xavier on the log grid; contains 1 exactly when 10^0 is a grid point."""
        n = int(round((self.radius_hi - self.radius_lo) * self.per_decade)) + 1
        return 10.0 ** np.linspace(self.radius_lo, self.radius_hi, n)


QUICK = {"models": ("mlp:32", "mlp:32x32", "small-cnn"), "activations": ("relu", "tanh"),
         "datasets": ("digits",), "num_samples": 400, "per_decade": 2, "dim": 20, "seeds": (0, 1)}


# --------------------------------------------------------------------------- run


@with_cpu_threads
def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import random_basis, subspace_curvature

    rel = config.relative_radii
    settings = [(parse_architecture(a), act, ds, seed) for ds in config.datasets
                for a in config.models for act in config.activations
                for seed in config.seeds]
    rows: list[dict[str, Any]] = []
    fingerprints: dict[str, Any] = {}
    for arch, act, ds, seed in ctx.progress(settings, total=len(settings), desc="networks"):
        problem = build_problem(arch, dataset=ds, num_samples=config.num_samples, seed=seed,
                                activation=act, dtype=config.dtype, device=config.device,
                                data_seed=config.data_seed)
        fingerprints[ds] = getattr(problem.dataset, "fingerprint", None)
        r_x = parameter_radius(problem.model)
        r_k = kaiming_radius(arch, problem, activation=act, seed=seed)
        basis = random_basis(problem.num_params, config.dim, kind=config.basis,
                             seed=10_000 + seed, dtype=problem.inputs.dtype,
                             device=problem.inputs.device)
        for ratio in rel:
            res = subspace_curvature(problem.model, problem.data, basis, scale=float(ratio),
                                     batch_size=config.batch_size)
            row: dict[str, Any] = {
                "architecture": arch.spec, "model": arch.model,
                "depth": arch.depth if arch.depth is not None else np.nan,
                "activation": act, "dataset": ds, "seed": seed,
                "num_params": problem.num_params, "dim": config.dim,
                "radius": float(ratio) * r_x, "scale": float(ratio),
                "relative_radius": float(ratio),
                "xavier_radius": r_x, "kaiming_radius": r_k,
                "loss": res.loss, "accuracy": res.accuracy, "finite": res.finite,
            }
            for term, prefix in (("hessian", ""), ("g_term", "g_"), ("h_term", "h_")):
                stats = res.stats(term)
                row[f"{prefix}positive_curvature"] = stats.positive_curvature
                row[f"{prefix}fraction_positive"] = stats.fraction_positive
                row[f"{prefix}spectral_norm"] = stats.spectral_norm
            row["top_eigenvalue"] = res.stats("hessian").top_eigenvalue
            rows.append(row)
    table = pd.DataFrame(rows)
    ctx.record("datasets", fingerprints)
    ctx.record("summary", summarise(table))
    return table


def shell_table(table: pd.DataFrame, *, column: str = "positive_curvature",
                level: float = 0.5) -> pd.DataFrame:
    """Per network (architecture, activation, dataset), seed-averaged: κ at the Xavier radius,
    at the innermost and outermost radii, the peak, and the shell = the radius interval
    (relative to r_X): the zone of the mean κ curve at ``level``
    (:func:`goldilocks_zone.theory.zone.find_zone`). A curve with no finite value has a NaN
    peak and shell and ``all_non_finite`` true (data, never an error)."""
    from goldilocks_zone.theory.zone import find_zone

    out = []
    keys = ["architecture", "activation", "dataset"]
    for key, grp in table.groupby(keys, sort=False):
        curve = grp.groupby("relative_radius")[column].mean().sort_index()
        rel = curve.index.to_numpy(float)
        vals = curve.to_numpy(float)
        zone = find_zone(rel, vals, fraction=level)
        shell = zone.bounds if zone.bounds is not None else (np.nan, np.nan)
        ix = int(np.argmin(np.abs(np.log10(rel))))  # the Xavier radius
        out.append(dict(zip(keys, key)) | {
            "at_xavier": float(vals[ix]), "innermost": float(vals[0]),
            "outermost": float(vals[-1]), "peak": zone.peak_kappa,
            "peak_relative_radius": zone.peak_x,
            "shell_lo": shell[0], "shell_hi": shell[1],
            "all_non_finite": zone.all_non_finite,
            "kaiming_relative_radius": float(
                (grp["kaiming_radius"] / grp["xavier_radius"]).mean()),
        })
    return pd.DataFrame(out)


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    shells = shell_table(table)
    xavier_in_shell = (shells["shell_lo"] <= 1.0) & (1.0 <= shells["shell_hi"])
    return {
        "networks": int(len(shells)),
        "kappa_at_xavier_mean": float(shells["at_xavier"].mean()),
        "kappa_at_xavier_min": float(shells["at_xavier"].min()),
        "kappa_innermost_mean": float(shells["innermost"].mean()),
        "kappa_outermost_mean": float(shells["outermost"].mean()),
        "kappa_peak_mean": float(shells["peak"].mean()),
        "xavier_radius_in_shell": int(xavier_in_shell.sum()),
        "networks_all_non_finite": int(shells["all_non_finite"].sum()),
        "fraction_positive_at_xavier_mean": float(
            shell_table(table, column="fraction_positive")["at_xavier"].mean()),
        "per_network": {
            f"{r.architecture}/{r.activation}/{r.dataset}": {
                "kappa_at_xavier": round(r.at_xavier, 4), "kappa_inner": round(r.innermost, 4),
                "kappa_outer": round(r.outermost, 4),
                "shell": [r.shell_lo, r.shell_hi]}
            for r in shells.itertuples()},
    }


# --------------------------------------------------------------------------- plot


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    from matplotlib.lines import Line2D

    paths: list[Path] = []
    datasets = list(dict.fromkeys(table["dataset"]))
    activations = list(dict.fromkeys(table["activation"]))
    archs = list(dict.fromkeys(table["architecture"]))
    colors = {a: f"C{i}" for i, a in enumerate(archs)}
    for column, label, baseline, name in (
            ("positive_curvature", r"positive curvature $\kappa$ = Tr$H$/$\|H\|_F$", 0.0,
             "radius_shell_kappa"),
            ("fraction_positive", r"fraction of positive eigenvalues $\pi$", 0.5,
             "radius_shell_fraction_positive")):
        fig, axes = new_figure(len(activations), len(datasets), width=3.3, height=2.5,
                               sharex=True)
        for i, ds in enumerate(datasets):
            for j, act in enumerate(activations):
                ax = axes[i, j]
                sub = table[(table["dataset"] == ds) & (table["activation"] == act)]
                for arch in archs:
                    grp = sub[sub["architecture"] == arch]
                    if grp.empty:
                        continue
                    band(ax, grp, "relative_radius", column, color=colors[arch], label=arch,
                         alpha=0.15, markersize=2.5, lw=1.2)
                    rk = float((grp["kaiming_radius"] / grp["xavier_radius"]).mean())
                    ax.axvline(rk, color=colors[arch], ls=":", lw=0.9)
                ax.axvline(1.0, color="k", ls="--", lw=0.9)
                ax.axhline(baseline, color="0.5", lw=0.7)
                style_axis(ax, xscale="log", title=f"{ds}, {act}", title_size=None,
                           xlabel=(r"radius $\|\theta\|$ / Xavier radius"
                                   if i == len(datasets) - 1 else None),
                           ylabel=label if j == 0 else None)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        handles += [Line2D([], [], color="k", ls="--", lw=0.9),
                    Line2D([], [], color="0.3", ls=":", lw=0.9)]
        labels += ["Xavier radius", "Kaiming radius\n(colour: network)"]
        axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize=7)
        paths += save_figure(fig, fig_dir, name)

    # Gauss-Newton split on the absolute radius axis, for the first network of each data set:
    # κ of Hessian, G-term and H-term, and the spectral norms that decide which term dominates.
    fig, axes = new_figure(2, len(datasets), width=3.3, height=2.5, sharex="row")
    for i, ds in enumerate(datasets):
        first = table[table["dataset"] == ds].iloc[0]
        grp = table[(table["dataset"] == ds) & (table["architecture"] == first["architecture"])
                    & (table["activation"] == first["activation"])]
        stats = grp.groupby("radius")[["positive_curvature", "g_positive_curvature",
                                        "h_positive_curvature", "g_spectral_norm",
                                        "h_spectral_norm"]].mean()
        r_x, r_k = float(grp["xavier_radius"].mean()), float(grp["kaiming_radius"].mean())
        ax = axes[i, 0]
        ax.plot(stats.index, stats["positive_curvature"], "-o", ms=2.5, color="k",
                label="Hessian")
        ax.plot(stats.index, stats["g_positive_curvature"], "-", color="C0", label="G-term")
        ax.plot(stats.index, stats["h_positive_curvature"], "-", color="C3", label="H-term")
        ax.axhline(0.0, color="0.5", lw=0.7)
        style_axis(ax, ylabel=r"$\kappa$", title_size=None,
                   title=f"{first['architecture']}, {first['activation']}, {ds}")
        ax = axes[i, 1]
        ax.plot(stats.index, stats["g_spectral_norm"].where(stats["g_spectral_norm"] > 0),
                "-", color="C0", label=r"$\|G_R\|_2$")
        ax.plot(stats.index, stats["h_spectral_norm"].where(stats["h_spectral_norm"] > 0),
                "-", color="C3", label=r"$\|H_R\|_2$ (H-term)")
        style_axis(ax, yscale="log", ylabel="spectral norm", title="Gauss-Newton split",
                   title_size=None)
        for ax in axes[i]:
            ax.axvline(r_x, color="k", ls="--", lw=0.9, label="Xavier radius")
            ax.axvline(r_k, color="0.3", ls=":", lw=0.9, label="Kaiming radius")
            style_axis(ax, xscale="log",
                       xlabel=r"radius $\|\theta\|$" if i == len(datasets) - 1 else None)
        if i == 0:
            axes[i, 0].legend(fontsize=7)
            axes[i, 1].legend(fontsize=7)
    paths += save_figure(fig, fig_dir, "radius_shell_gauss_newton")
    return paths


register_module(
    __name__, id="radius-shell",
    paper="P3",
    summary="κ and π of the subspace Hessian vs the radius of a rescaled Xavier init "
            "(networks with biases, ReLU/tanh, MLPs and a CNN): a shell around the Xavier radius",
    key_columns=("architecture", "activation", "dataset", "radius", "scale", "dim"),
    renamed={"architectures": "models", "basis_kind": "basis"},
)
