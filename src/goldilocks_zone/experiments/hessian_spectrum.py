r"""``hessian-spectrum`` (P2 Fig. 5 beside a real network): the full-space Hessian spectrum of
a small network — a bulk plus outliers — next to the random model's.

Protocol. Build a small MLP on real data (float64) and, at initialisation and after a short
minibatch-SGD training, estimate the spectral density of the full Hessian
:math:`\nabla^2 L \in \mathbb R^{D\times D}` by stochastic Lanczos quadrature
(:func:`goldilocks_zone.curvature.slq.stochastic_lanczos_quadrature` on
:func:`goldilocks_zone.hessian_vector_product`, ``num_probes`` probes of ``num_steps`` steps) and
its ``top_k`` largest eigenpairs by Lanczos (:func:`goldilocks_zone.hessian_top_eigenpairs`);
record the cosine between the loss gradient and each top eigenvector. Beside it, the random
model (:mod:`~goldilocks_zone.theory.random_model`, defaults) with its exact spectrum — and its
SLQ estimate, as a check of the estimator on a known spectrum. Outliers of the network are
counted with the random model's gap rule
(:func:`~goldilocks_zone.theory.random_model.count_outliers`), the bulk edge being the smallest
of the ``top_k`` computed eigenvalues (``top_k`` ≫ C, so it lies in the bulk).

Expected: for both, a bulk concentrated near zero with a few outliers (about C after training)
far above it, and much of the gradient in the top eigenvectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.config import (
    ModelDataConfig,
    SamplesConfig,
    SGDConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure, style_axis

SOURCES = ("network", "random-model", "random-model (SLQ)")


@dataclass
class Config(SGDConfig, SamplesConfig, ModelDataConfig):
    model: str = common("model", "mlp")
    num_samples: int = common("num_samples", 1000)

    widths: tuple[int, ...] = knob((32,), "hidden widths (mlp only)")
    activation: str = knob("relu", "hidden activation")
    num_probes: int = knob(10, "SLQ probes")
    num_steps: int = knob(80, "Lanczos steps per SLQ probe")
    top_k: int = knob(30, "top eigenpairs by Lanczos")
    lanczos_iterations: int = knob(150, "Lanczos iterations")
    bandwidth: float = knob(0.01, "density smoothing, a fraction of the spectral range")
    grid_points: int = knob(400, "density grid points")
    seed: int = knob(0, "model/training/probe seed")
    random_dim: int = knob(1000, "random model's D")

    def validate(self) -> None:
        super().validate()
        if self.num_probes < 1 or self.num_steps < 2:
            raise ValueError("num_probes >= 1 and num_steps >= 2 needed")
        if self.top_k < 2:
            raise ValueError(f"top_k must be >= 2, got {self.top_k}")
        if not 0 < self.bandwidth < 1:
            raise ValueError(f"bandwidth must be a fraction in (0, 1), got {self.bandwidth}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")


QUICK = {"dataset": "digits", "num_samples": 500, "train_samples": 1000, "train_steps": 300,
         "num_probes": 6, "num_steps": 50, "top_k": 25, "lanczos_iterations": 100,
         "random_dim": 500}


def _grid(nodes: torch.Tensor, config: Config) -> tuple[torch.Tensor, float]:
    lo, hi = float(nodes.min()), float(nodes.max())
    h = config.bandwidth * max(hi - lo, 1e-12)
    return torch.linspace(lo - 4 * h, hi + 4 * h, config.grid_points, dtype=torch.float64), h


def _density_rows(grid: torch.Tensor, dens: torch.Tensor, **keys: Any) -> list[dict[str, Any]]:
    return [{"section": "density", **keys, "eigenvalue": float(x), "density": float(d)}
            for x, d in zip(grid, dens)]


def _top_rows(eigs: torch.Tensor, cos: torch.Tensor, **keys: Any) -> list[dict[str, Any]]:
    return [{"section": "top", **keys, "index": i + 1, "eigenvalue": float(eigs[i]),
             "cosine": float(cos[i])} for i in range(eigs.numel())]


def _stats_row(eigs: torch.Tensor, cos: torch.Tensor, trace: tuple[float, float],
               num_classes: int, **keys: Any) -> dict[str, Any]:
    from goldilocks_zone.theory.random_model import count_outliers

    out = count_outliers(eigs, float(eigs.min()))
    return {"section": "stats", **keys, "num_classes": num_classes,
            "num_outliers": out.num_outliers,
            "gap_ratio": out.gap_ratio, "top_eigenvalue": float(eigs.max()),
            "trace": trace[0], "trace_std_error": trace[1],
            "gradient_power_top_c": float(cos[:num_classes].pow(2).sum()),
            "gradient_power_top_k": float(cos.pow(2).sum())}


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import models as model_lib
    from goldilocks_zone.curvature import (
        hessian_top_eigenpairs,
        hessian_vector_product,
        loss_gradient,
    )
    from goldilocks_zone.curvature.slq import gaussian_density, stochastic_lanczos_quadrature
    from goldilocks_zone.experiments._shared.functional_training import (
        accuracy_and_loss,
        load_split,
        model_params,
    )
    from goldilocks_zone.theory import random_model as rm
    from goldilocks_zone.training.minibatch import sgd_trajectory

    dtype = torch.float64
    train, probe = load_split(config.dataset, train_samples=config.train_samples,
                              probe_samples=config.num_samples, data_seed=config.data_seed,
                              dtype=dtype)
    kwargs = {"widths": tuple(config.widths)} if config.model == "mlp" else {}
    net = model_lib.create(config.model, tuple(train.input_shape), train.num_classes,
                           activation=config.activation, bias=config.bias, seed=config.seed,
                           **kwargs).to(dtype)
    dim = sum(p.numel() for p in net.parameters())
    c = train.num_classes
    ctx.record("network", {"model": config.model, "num_params": dim, "dataset": config.dataset,
                           "num_samples": len(probe), "fingerprint": probe.fingerprint})
    data = probe.data
    rows: list[dict[str, Any]] = []
    traj = sgd_trajectory(net, model_params(net), train.inputs, train.targets,
                          steps=config.train_steps, lr=config.lr,
                          batch_size=config.batch_size, seed=config.seed, yield_at=(0,))
    for step, theta in ctx.progress(traj, total=2 if config.train_steps else 1,
                                    desc="hessian-spectrum"):
        stage = "init" if step == 0 else "trained"
        acc, loss = accuracy_and_loss(net, theta, *data)
        res = stochastic_lanczos_quadrature(
            lambda v, theta=theta: hessian_vector_product(net, data, v, params=theta), dim,
            num_probes=config.num_probes, num_steps=config.num_steps, seed=config.seed)
        pairs = hessian_top_eigenpairs(net, data, k=config.top_k, params=theta,
                                       max_iterations=config.lanczos_iterations, tol=1e-6,
                                       seed=config.seed)
        g = loss_gradient(net, data, params=theta)
        cos = (pairs.eigenvectors.T.to(torch.float64) @ g) / g.norm()
        keys = {"stage": stage, "source": "network", "step": step}
        grid, h = _grid(torch.cat([res.nodes.reshape(-1), pairs.eigenvalues]), config)
        rows += _density_rows(grid, res.density(grid, h), **keys)
        rows += _top_rows(pairs.eigenvalues, cos, **keys)
        rows.append({**_stats_row(pairs.eigenvalues, cos, res.trace(), c, **keys),
                     "accuracy": acc, "loss": loss, "dim": dim,
                     "lanczos_converged": bool(pairs.converged)})
        if config.train_steps == 0:
            break
    # the random model beside it: exact spectrum, and SLQ of the same matrix
    params = rm.RandomModelParams(dim=config.random_dim, num_classes=c)
    sample = rm.simulate(params, seed=config.seed)
    ov = rm.gradient_overlap(sample.hessian, sample.gradient)
    exact = ov.eigenvalues
    res = stochastic_lanczos_quadrature(lambda v: sample.hessian @ v, params.dim,
                                        num_probes=config.num_probes,
                                        num_steps=config.num_steps, seed=config.seed)
    grid, h = _grid(exact, config)
    keys = {"stage": "random model", "step": -1}
    rows += _density_rows(grid, gaussian_density(exact, grid, h), source="random-model", **keys)
    rows += _density_rows(grid, res.density(grid, h), source="random-model (SLQ)", **keys)
    k = min(config.top_k, params.dim)
    rows += _top_rows(exact[:k], ov.cosines[:k], source="random-model", **keys)
    edge = rm.bulk_edge(params, seed=config.seed)
    rm_out = rm.count_outliers(exact, edge)
    rows.append({**_stats_row(exact[:k], ov.cosines[:k], (float(exact.sum()), 0.0), c,
                              source="random-model", **keys),
                 "num_outliers": rm_out.num_outliers, "gap_ratio": rm_out.gap_ratio,
                 "accuracy": sample.accuracy, "loss": sample.loss, "dim": params.dim})
    rows.append({**_stats_row(exact[:k], ov.cosines[:k], res.trace(), c,
                              source="random-model (SLQ)", **keys), "dim": params.dim,
                 "exact_trace": float(exact.sum())})
    table = pd.DataFrame(rows)
    ctx.record("summary", summarise(table))
    return table


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    st = table[table["section"] == "stats"]
    out: dict[str, Any] = {}
    for _, r in st.iterrows():
        name = f"{r['source']} ({r['stage']})" if r["source"] == "network" else r["source"]
        out[name] = {"num_outliers": int(r["num_outliers"]),
                     "top_eigenvalue": round(float(r["top_eigenvalue"]), 6),
                     "gradient_power_top_c": round(float(r["gradient_power_top_c"]), 4),
                     "trace": [round(float(r["trace"]), 6),
                               round(float(r["trace_std_error"]), 6)]}
    slq = st[st["source"] == "random-model (SLQ)"]
    if not slq.empty and "exact_trace" in slq:
        r = slq.iloc[0]
        out["slq_trace_error_in_std_errors"] = float(
            abs(r["trace"] - r["exact_trace"]) / max(r["trace_std_error"], 1e-300))
    return out


# --------------------------------------------------------------------------- figure


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    dens = table[table["section"] == "density"]
    top = table[table["section"] == "top"]
    st = table[table["section"] == "stats"]
    fig, axes = new_figure(4, 1, width=3.1, height=2.7)
    stage_color = {"init": "C0", "trained": "C1", "random model": "C3"}

    ax = axes[0][0]
    net = dens[dens["source"] == "network"]
    for stage, g in net.groupby("stage", sort=False):
        ax.plot(g["eigenvalue"], g["density"].clip(lower=1e-8), color=stage_color[stage],
                label=f"{stage} (SLQ)")
        t = top[(top["source"] == "network") & (top["stage"] == stage)]
        ax.plot(t["eigenvalue"], np.full(len(t), 2e-8 if stage == "init" else 8e-8), "|",
                color=stage_color[stage], markersize=7)
    style_axis(ax, yscale="log", ylim=(1e-8, None), xlabel=r"Hessian eigenvalue $\lambda$",
               ylabel="spectral density", title="(a) network: full-space spectrum",
               legend={"fontsize": 7})

    ax = axes[0][1]
    rnd = dens[dens["source"].str.startswith("random-model")]
    for src, g in rnd.groupby("source", sort=False):
        ax.plot(g["eigenvalue"], g["density"].clip(lower=1e-8),
                color="C3" if src == "random-model" else "0.3",
                linestyle="-" if src == "random-model" else "--",
                label="exact" if src == "random-model" else "SLQ estimate")
    t = top[top["source"] == "random-model"]
    ax.plot(t["eigenvalue"], np.full(len(t), 2e-8), "|", color="C3", markersize=8)
    style_axis(ax, yscale="log", ylim=(1e-8, None), xlabel=r"Hessian eigenvalue $\lambda$",
               title="(b) random model", legend={"fontsize": 7})

    ax_top, ax_cos = axes[0][2], axes[0][3]
    for (src, stage), g in top[top["source"].isin(["network", "random-model"])].groupby(
            ["source", "stage"], sort=False):
        g = g.sort_values("index")
        lam = g["eigenvalue"].to_numpy()
        n_out = st[(st["source"] == src) & (st["stage"] == stage)]["num_outliers"]
        lab = f"network, {stage}" if src == "network" else "random model"
        outliers = "" if n_out.empty else f" ({int(n_out.iloc[0])} outliers)"
        style = {"markersize": 2.5, "color": stage_color[stage]}
        ax_top.plot(g["index"], lam / lam[0], "o-", **style, label=lab + outliers)
        ax_cos.plot(g["index"], np.cumsum(g["cosine"].to_numpy() ** 2), "o-", **style,
                    label=lab)
    if not st.empty:
        ax_top.axvline(float(st["num_classes"].iloc[0]), color="0.5", linestyle=":",
                       linewidth=0.8)
    style_axis(ax_top, yscale="log", xlabel="eigenvalue index $i$",
               ylabel=r"$\lambda_i / \lambda_1$", title="(c) top eigenvalues (Lanczos / exact)",
               legend={"fontsize": 6.5})
    style_axis(ax_cos, ylim=(0, 1.02), xlabel="eigenvalue index $i$",
               ylabel=r"$\sum_{j\leq i}\cos^2(\nabla L, v_j)$",
               title="(d) gradient power in the top eigenvectors", legend={"fontsize": 7})
    return save_figure(fig, fig_dir, "hessian_spectrum")


register_module(
    __name__, id="hessian-spectrum",
    paper="P2",
    summary="full-space Hessian spectrum of a small network (SLQ density, Lanczos outliers, "
            "gradient overlap) beside the random model's",
    key_columns=("section", "source", "stage"),
)
