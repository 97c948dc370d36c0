"""P3: training confined to random affine hyperplanes and to hyperspheres of fixed radius.

Protocol (Fort & Scherlis 2019, SCIENCE.md §7): take a Xavier initialisation θ_X of a network
with biases, rescale it to a starting point P = s θ_X at radius ‖P‖ = s ‖θ_X‖, draw a random
orthonormal basis R (D × d) and optimise only u in θ = P + R u (the *hyperplane*), or in
θ = r (P + R u)/‖P + R u‖ with r = ‖P‖ (the *hypersphere* of fixed radius r; see
:mod:`goldilocks_zone.training.subspace`). Every run starts at u = 0 and uses the same optimiser,
steps and minibatch order. The unconstrained reference trains all D parameters from the same
starting point. Reported: final train and held-out accuracy vs d for every radius, accuracy vs
radius at a fixed d, and, per radius, the smallest d on the grid whose held-out accuracy reaches
``threshold`` (0.9) × the unconstrained accuracy from the Xavier radius.

Expected: from inside the Goldilocks zone a modest d already gives high accuracy; from far
outside it (huge radius) the same d gives much less. Measured (mnist-5k, ``mlp:100``, defaults
but one seed and scales 0.1/1/10/100 × r_X): at d = 1000 the held-out accuracy is
0.88/0.89/0.61/0.16 on the hyperplane and 0.50/0.83/0.62/0.16 on the sphere (unconstrained:
0.94 from r_X). The sphere is best at the Xavier radius; a hyperplane through a point *inside*
the zone does as well as one through θ_X because it can move outwards into the zone (its final
radius ≈ 34, against r_X ≈ 14), whereas the sphere cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.architecture import (
    TrainTestConfig,
    parameter_radius,
    parse_architecture,
)
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import with_cpu_threads
from goldilocks_zone.experiments._shared.config import SeedsConfig, common, knob
from goldilocks_zone.experiments._shared.plotting import (
    log_colours,
    new_figure,
    save_figure,
    style_axis,
)

SURFACES = ("hyperplane", "sphere")


@dataclass
class Config(TrainTestConfig, SeedsConfig):
    seeds: tuple[int, ...] = common("seeds", (0, 1))

    dims: tuple[int, ...] = knob((1, 3, 10, 30, 100, 300, 1000),
                                 "hyperplane dimensions d (log grid)")
    scales: tuple[float, ...] = knob((0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0),
                                     "starting radii as multiples of the Xavier radius")
    surfaces: tuple[str, ...] = knob(SURFACES, "hyperplane and/or sphere")
    fixed_dim: int = knob(100, "d for the accuracy-vs-radius panel")
    threshold: float = knob(0.9, "fraction of the unconstrained accuracy to reach")
    optimizer: str = "adam"
    lr: float = 0.01
    steps: int = 1000
    batch_size: int | None = knob(128, "minibatch (none = full)")
    basis: str = knob("orthonormal", "orthonormal | sparse")

    def validate(self) -> None:
        super().validate()
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be positive integers, got {self.dims}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales}")
        bad = set(self.surfaces) - set(SURFACES)
        if bad or not self.surfaces:
            raise ValueError(f"surfaces must be among {SURFACES}, got {self.surfaces}")
        if self.fixed_dim not in self.dims:
            raise ValueError(f"fixed_dim={self.fixed_dim} must be one of dims {self.dims}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


QUICK = {"model": "mlp:32", "dataset": "digits", "num_samples": 1000,
         "dims": (2, 8, 32, 128, 512), "scales": (0.1, 1.0, 10.0, 100.0), "fixed_dim": 32,
         "steps": 300, "batch_size": None, "lr": 0.02, "seeds": (0,)}


@with_cpu_threads
def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import random_basis
    from goldilocks_zone.training.subspace import (
        Surface,
        flatten_parameters,
        train_on_surface,
    )

    arch = parse_architecture(config.model)
    dims = sorted(set(int(d) for d in config.dims))
    # d outermost after the unconstrained runs, so only one basis is held at a time (D × d
    # floats; 300 MB for D = 80k, d = 1000 in float32). Each basis is shared by all radii and
    # both surfaces: the comparison across radii uses the same directions.
    jobs = [job for seed in config.seeds
            for job in [(seed, s, "full", None) for s in config.scales]
            + [(seed, s, kind, d) for d in dims for kind in config.surfaces
               for s in config.scales]]
    rows: list[dict[str, Any]] = []
    problem_seed = basis_key = None
    for seed, s, kind, d in ctx.progress(jobs, total=len(jobs), desc="trainings"):
        if seed != problem_seed:  # jobs come seed by seed: one problem held at a time
            problem_seed, problem = seed, config.problem(arch, seed)
            test = config.held_out(problem.inputs)
            if max(dims) > problem.num_params:
                raise ValueError(f"largest d = {max(dims)} exceeds the number of parameters "
                                 f"D = {problem.num_params} of {arch.spec}")
            ctx.record("dataset", getattr(problem.dataset, "fingerprint", None))
        anchor = float(s) * flatten_parameters(problem.model)
        if kind == "full":
            surface = Surface(anchor)
        else:
            if basis_key != (seed, d):
                basis_key = (seed, d)
                basis = random_basis(problem.num_params, d, kind=config.basis,
                                     seed=1_000_003 * seed + d, dtype=problem.inputs.dtype,
                                     device=problem.inputs.device)
            radius = float(anchor.norm()) if kind == "sphere" else None
            surface = Surface(anchor, basis, radius=radius)
        result = train_on_surface(problem.model, problem.data, surface, steps=config.steps,
                                  lr=config.lr, optimizer=config.optimizer,
                                  batch_size=config.batch_size, seed=seed, eval_data=test,
                                  eval_every=config.steps)
        rows.append({
            "architecture": arch.spec, "activation": config.activation,
            "dataset": config.dataset, "surface": kind, "seed": seed,
            "dim": surface.dim, "num_params": problem.num_params,
            "scale": float(s), "radius": float(anchor.norm()),
            "xavier_radius": parameter_radius(problem.model),
            "initial_train_accuracy": float(result.history.train_accuracy[0]),
            "train_loss": result.final_train_loss, "train_accuracy": result.final_train_accuracy,
            "test_loss": result.final_eval_loss, "test_accuracy": result.final_eval_accuracy,
            "final_radius": float(result.history.radius[-1]),
            "finite": result.finite, "steps": result.steps_taken,
        })
    table = pd.DataFrame(rows)
    ctx.record("summary", summarise(table, threshold=config.threshold,
                                    fixed_dim=config.fixed_dim))
    return table


def reference_accuracy(table: pd.DataFrame) -> float:
    """Held-out accuracy of unconstrained training from the Xavier radius (seed mean)."""
    full = table[table["surface"] == "full"]
    if full.empty:
        raise ValueError("the table has no unconstrained ('full') runs")
    scales = full["scale"].unique()
    xavier = scales[np.argmin(np.abs(np.log10(scales)))]
    return float(full.loc[full["scale"] == xavier, "test_accuracy"].mean())


def dimension_needed(table: pd.DataFrame, *, threshold: float = 0.9) -> pd.DataFrame:
    """Per surface and starting scale: the smallest d whose seed-mean held-out accuracy reaches
    ``threshold`` × the unconstrained reference (NaN when no d on the grid does)."""
    target = threshold * reference_accuracy(table)
    out = []
    for (kind, s), grp in table[table["surface"] != "full"].groupby(["surface", "scale"]):
        curve = grp.groupby("dim")["test_accuracy"].mean().sort_index()
        reached = curve.index[curve.to_numpy() >= target]
        out.append({"surface": kind, "scale": float(s), "radius": float(grp["radius"].mean()),
                    "dim_needed": float(reached.min()) if len(reached) else np.nan,
                    "best_accuracy": float(curve.max())})
    return pd.DataFrame(out)


def summarise(table: pd.DataFrame, *, threshold: float, fixed_dim: int) -> dict[str, Any]:
    ref = reference_accuracy(table)
    needed = dimension_needed(table, threshold=threshold)
    at_d = (table[(table["surface"] != "full") & (table["dim"] == fixed_dim)]
            .groupby(["surface", "scale"])["test_accuracy"].mean())
    full = table[table["surface"] == "full"].groupby("scale")["test_accuracy"].mean()
    scales = sorted(table["scale"].unique())
    xavier = min(scales, key=lambda s: abs(np.log10(s)))
    summary: dict[str, Any] = {
        "unconstrained_accuracy": ref,
        "target_accuracy": threshold * ref,
        "fixed_dim": fixed_dim,
        "unconstrained_accuracy_by_scale": {f"{s:g}": float(v) for s, v in full.items()},
    }
    for kind in needed["surface"].unique():
        sub = needed[needed["surface"] == kind]
        summary[f"{kind}_dim_needed_by_scale"] = {
            f"{r.scale:g}": (None if np.isnan(r.dim_needed) else int(r.dim_needed))
            for r in sub.itertuples()}
        summary[f"{kind}_accuracy_at_fixed_dim_by_scale"] = {
            f"{s:g}": float(at_d[(kind, s)]) for s in scales if (kind, s) in at_d.index}
        if (kind, xavier) in at_d.index and (kind, scales[-1]) in at_d.index:
            summary[f"{kind}_xavier_minus_outermost_at_fixed_dim"] = float(
                at_d[(kind, xavier)] - at_d[(kind, scales[-1])])
    return summary


# --------------------------------------------------------------------------- plot


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib as mpl

    paths: list[Path] = []
    threshold = config.threshold
    ref = reference_accuracy(table)
    kinds = [k for k in SURFACES if k in set(table["surface"])]
    scales = sorted(table["scale"].unique())
    color, _ = log_colours(scales, fallback="C0")
    full = table[table["surface"] == "full"]

    fig, axes = new_figure(len(kinds), 1, width=3.4, height=2.7, sharey=True)
    for j, kind in enumerate(kinds):
        ax = axes[0, j]
        sub = table[table["surface"] == kind]
        for s in scales:
            curve = sub[sub["scale"] == s].groupby("dim")["test_accuracy"].agg(["mean", "std"])
            ax.plot(curve.index, curve["mean"], "-o", ms=3, color=color(s),
                    label=rf"$\|P\|$ = {s:g} $r_X$")
        ax.axhline(ref, color="k", ls="--", lw=0.9, label="unconstrained")
        ax.axhline(threshold * ref, color="k", ls=":", lw=0.9, label=f"{threshold:g} × unconstr.")
        style_axis(ax, xscale="log", xlabel="subspace dimension $d$",
                   ylabel="held-out accuracy" if j == 0 else None, title_size=None,
                   title="random hyperplane $P + Ru$" if kind == "hyperplane"
                   else r"hypersphere $\|\theta\| = \|P\|$")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    paths += save_figure(fig, fig_dir, "hyperplane_accuracy_vs_dim")

    fixed = config.fixed_dim
    fig, axes = new_figure(2, 1, width=3.4, height=2.7)
    ax = axes[0, 0]
    markers = {"hyperplane": "o", "sphere": "s"}
    for kind in kinds:
        sub = table[(table["surface"] == kind) & (table["dim"] == fixed)]
        curve = sub.groupby("radius")["test_accuracy"].mean()
        ax.plot(curve.index, curve.to_numpy(), "-", marker=markers[kind], ms=3.5,
                label=f"{kind}, d = {fixed}")
    curve = full.groupby("radius")["test_accuracy"].mean()
    ax.plot(curve.index, curve.to_numpy(), "-^", ms=3.5, color="k", label="unconstrained")
    ax.axvline(float(table["xavier_radius"].mean()), color="k", ls="--", lw=0.9,
               label="Xavier radius")
    style_axis(ax, xscale="log", xlabel=r"starting radius $\|P\|$", ylabel="held-out accuracy",
               legend={"fontsize": 7})

    ax = axes[0, 1]
    needed = dimension_needed(table, threshold=threshold)
    top = float(table.loc[table["surface"] != "full", "dim"].max())
    for kind in kinds:
        sub = needed[needed["surface"] == kind].sort_values("radius")
        ax.plot(sub["radius"], sub["dim_needed"], "-", marker=markers[kind], ms=4, label=kind)
        miss = sub[sub["dim_needed"].isna()]
        if not miss.empty:
            ax.scatter(miss["radius"], np.full(len(miss), top * 2), marker=markers[kind],
                       facecolors="none", edgecolors=ax.lines[-1].get_color(), s=28, zorder=3)
    ax.axvline(float(table["xavier_radius"].mean()), color="k", ls="--", lw=0.9)
    style_axis(ax, xscale="log", yscale="log")
    grid = sorted(table.loc[table["surface"] != "full", "dim"].unique())
    ax.set_yticks([*grid, top * 2], [f"{d:g}" for d in grid] + ["not\nreached"])
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
    style_axis(ax, ylim=(min(grid) / 1.5, top * 3), xlabel=r"starting radius $\|P\|$",
               ylabel=f"$d$ for {threshold:g} × unconstrained accuracy",
               legend={"fontsize": 7, "loc": "best"})
    paths += save_figure(fig, fig_dir, "hyperplane_accuracy_vs_radius")
    return paths


register_module(
    __name__, id="hyperplane-training",
    paper="P3",
    summary="train only u in θ = P + R u (and on the sphere ‖θ‖ = ‖P‖): accuracy vs d and vs "
            "the starting radius; the d needed for 90% of unconstrained accuracy",
    key_columns=("surface", "scale", "radius", "dim"),
    renamed={"architecture": "model", "num_train": "num_samples", "basis_kind": "basis"},
)
