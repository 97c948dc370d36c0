r"""Local geometry over training: P2's four properties watched by the curvature monitor.

Protocol. For each model (LeNet-300-100 and a small CNN, bias-free, Kaiming) and each
initialisation scale :math:`\alpha` (inside and outside the Goldilocks zone), the initial
parameters are :math:`\alpha\theta_0` and a plain PyTorch minibatch-SGD loop trains on
Fashion-MNIST with the scale-compensated learning rate :math:`\eta_0/\alpha^{L-2}`
(L = homogeneity degree). The loop calls :class:`~goldilocks_zone.monitor.CurvatureMonitor`
every ``monitor_every`` steps — the use case the monitor exists for — which measures on the
first ``monitor_samples`` training samples and a fixed ``dim``-dimensional random basis.

Rows: the monitor's table (one row per monitored step) with ``model, scale, seed, lr, depth,
epoch, steps_per_epoch``. Checks (summary; one per property, on each model's run from the
scale with the largest κ at initialisation, the "in-zone" run):

1. **outliers**: median ``num_outliers`` after the first epoch in ``[K/2, K]``;
2. **gradient confinement**: median ``gradient_top_k_fraction`` after the first epoch ≥ 0.5;
3. **rise then fall** of the top eigenvalue :math:`\lambda_1`: in at least one run of the
   model whose last measurement is complete, :math:`\lambda_1` peaks after the first
   measurement and ends ≤ 0.9 × the peak;
4. **the zone**: the scale with the best held-aside accuracy after the first epoch lies in the
   zone of κ at initialisation (:func:`~goldilocks_zone.theory.zone.find_zone` over scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import cpu_threads, torch_device, torch_dtype
from goldilocks_zone.experiments._shared.config import (
    DeviceConfig,
    DimConfig,
    SamplesConfig,
    SeedsConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import (
    log_colours,
    new_figure,
    save_figure,
    style_axis,
)

#: Thresholds of the numeric checks (module docstring).
CONFINEMENT_THRESHOLD = 0.5
FALL_FRACTION = 0.9


@dataclass
class Config(DimConfig, SeedsConfig, SamplesConfig, DeviceConfig):
    models: tuple[str, ...] = knob(("lenet-300-100", "small-cnn"), "registry model names")
    dataset: str = common("dataset", "fashion-mnist")
    num_samples: int | None = common("num_samples", None,
                                     "training points (subsample; none = all)")
    scales: tuple[float, ...] = knob((0.1, 1.0, 10.0), "initialisation scales alpha")
    cnn_channels: tuple[int, ...] = knob((16, 32, 32), "channels of small-cnn's conv stages")
    epochs: int = knob(10, "training epochs")
    batch_size: int = knob(128, "SGD minibatch size")
    base_lr: float = knob(0.05, "eta_0; lr = eta_0 / alpha^(L-2)")
    momentum: float = knob(0.0, "SGD momentum")
    monitor_every: int = knob(100, "monitor every k SGD steps")
    monitor_samples: int = knob(512, "held-aside samples")
    lanczos_iterations: int = knob(40, "Lanczos steps")
    budget_s: float = knob(60.0, "seconds per measurement")
    activation: str = "relu"
    init: str = "kaiming"
    dtype: str = common("dtype", "float32")
    threads: int = knob(1, "intra-op CPU threads (0 = torch's)")
    data_seed: int = knob(0, "seed of the subsample")

    def validate(self) -> None:
        super().validate()
        if not self.models:
            raise ValueError("models must not be empty")
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ValueError("scales must be a non-empty list of positive numbers")
        for name in ("epochs", "batch_size", "monitor_every", "monitor_samples",
                     "lanczos_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError("base_lr must be a positive number")
        if not 0 <= self.momentum < 1:
            raise ValueError("momentum must lie in [0, 1)")
        if not self.budget_s > 0:
            raise ValueError("budget_s must be positive")


QUICK = {"num_samples": 2000, "epochs": 3, "monitor_every": 8, "monitor_samples": 64, "dim": 8,
         "lanczos_iterations": 12, "budget_s": 10.0, "cnn_channels": (4, 8, 8)}


def _scaled_model(config: Config, name: str, input_shape, num_classes: int, seed: int,
                  scale: float):
    import torch

    from goldilocks_zone import models as model_lib

    kwargs = {"channels": tuple(config.cnn_channels)} if name == "small-cnn" else {}
    net = model_lib.create(name, tuple(input_shape), num_classes, activation=config.activation,
                           bias=False, init=config.init, seed=seed, **kwargs)
    net = net.to(dtype=torch_dtype(config.dtype), device=torch_device(config.device))
    with torch.no_grad():  # the experiment's own freshly built model
        for p in net.parameters():
            p.mul_(scale)
    hom = model_lib.homogeneity(net)
    depth = int(hom.degree) if hom.is_homogeneous else 2
    return net, depth


def train_and_monitor(net, inputs, targets, *, lr: float, epochs: int, batch_size: int,
                      momentum: float, seed: int, monitor) -> int:
    """Plain minibatch SGD on ``(inputs, targets)`` calling ``monitor.step`` after every
    optimiser step (and once before the first). Returns the number of steps per epoch."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    gen = torch_generator(seed)
    n = inputs.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    step = 0
    monitor.step(step)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(inputs.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(net(inputs[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            monitor.step(step)
    if step % monitor.every:
        monitor.measure_now(step)
    return steps_per_epoch


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import data as data_lib
    from goldilocks_zone.monitor import CurvatureMonitor

    dt, dev = torch_dtype(config.dtype), torch_device(config.device)
    ds = data_lib.load(config.dataset, split="train", num_samples=config.num_samples,
                       seed=config.data_seed)
    inputs, targets = ds.inputs.to(dtype=dt, device=dev), ds.targets.to(device=dev)
    runs = [(m, seed, s) for m in config.models for seed in config.seeds for s in config.scales]
    tables = []
    with cpu_threads(config.threads):
        for name, seed, scale in ctx.progress(runs, total=len(runs), desc="training-geometry"):
            net, depth = _scaled_model(config, name, ds.input_shape, ds.num_classes, seed,
                                       scale)
            lr = config.base_lr / scale ** (depth - 2)
            monitor = CurvatureMonitor(net, (inputs, targets), every=config.monitor_every,
                                       dim=config.dim, num_samples=config.monitor_samples,
                                       seed=seed, lanczos_iterations=config.lanczos_iterations,
                                       budget_s=config.budget_s)
            per_epoch = train_and_monitor(net, inputs, targets, lr=lr, epochs=config.epochs,
                                          batch_size=config.batch_size,
                                          momentum=config.momentum, seed=seed, monitor=monitor)
            t = monitor.table()
            for i, (col, value) in enumerate({"model": name, "scale": scale, "seed": seed,
                                              "lr": lr, "depth": depth}.items()):
                t.insert(i, col, value)
            t.insert(6, "epoch", t["step"] / per_epoch)
            t["steps_per_epoch"] = per_epoch
            tables.append(t)
            last = t.iloc[-1]
            ctx.log(f"{name} alpha={scale:g} seed={seed} lr={lr:.3g}: final held-aside acc "
                    f"{last['accuracy']:.3f}, kappa {last['positive_curvature']:.2f}, "
                    f"measurement {t['seconds'].median():.2f} s")
    table = pd.concat(tables, ignore_index=True)
    table["dataset"] = config.dataset
    ctx.record("dataset_fingerprint", getattr(ds, "fingerprint", None))
    ctx.record("summary", summarise(table))
    return table


# --------------------------------------------------------------------------- checks


def _runs(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``model, scale, seed, epoch`` present (a monitor's own saved table has
    none: it is one run)."""
    t = table.copy()
    for col, default in (("model", "model"), ("scale", 1.0), ("seed", 0), ("epoch", np.nan)):
        if col not in t:
            t[col] = default
    return t


def _after_first_epoch(run_rows: pd.DataFrame) -> pd.DataFrame:
    epoch = run_rows["epoch"].astype(float)
    if epoch.notna().any():
        return run_rows[epoch >= 1.0]
    return run_rows.iloc[1:]


def checks(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model and property: the measured value, the criterion and ``passed``."""
    t = _runs(table)
    from goldilocks_zone.theory.zone import find_zone

    rows = []
    for model, rows_m in t.groupby("model", sort=False):
        seed = rows_m["seed"].min()
        rows_m = rows_m[rows_m["seed"] == seed]
        init = rows_m.sort_values("step").groupby("scale").first().sort_index()
        scales = init.index.to_numpy(dtype=float)
        zone = find_zone(scales, init["positive_curvature"].to_numpy(dtype=float))
        in_zone = zone.peak_x if zone.peak_index is not None else float(scales[0])
        best = rows_m[rows_m["scale"] == in_zone].sort_values("step")
        post = _after_first_epoch(best)
        k_classes = float(best["num_classes"].max())  # constant over a run; NaN if unknown
        outliers = float(post["num_outliers"].median())  # NaN when nothing is after epoch 1
        confinement = float(post["gradient_top_k_fraction"].median())
        rise_fall = []
        for scale, run_rows in rows_m.groupby("scale"):
            run_rows = run_rows.sort_values("step")
            last = run_rows.iloc[-1]
            if last["status"] != "measured" or not float(last["grad_norm"]) > 0 or not float(
                    last["eigenvalue_1"]) > 0:
                continue  # a diverged, dead (zero-logit) or unfinished run falls for no reason
            lam = run_rows["eigenvalue_1"].to_numpy(dtype=float)
            lam = lam[np.isfinite(lam)]
            if len(lam) >= 3:
                peak = int(np.argmax(lam))
                if 0 < peak < len(lam) - 1 and lam[-1] <= FALL_FRACTION * lam[peak]:
                    rise_fall.append(float(scale))
        after = (rows_m[rows_m["epoch"].astype(float) >= 1.0] if rows_m["epoch"].notna().any()
                 else rows_m)
        first_after = after.sort_values("step").groupby("scale").first()
        best_scale = (float(first_after["accuracy"].astype(float).idxmax())
                      if len(first_after) and first_after["accuracy"].notna().any()
                      else math.nan)
        rows += [
            {"model": model, "property": "outliers", "value": outliers,
             "criterion": f"median num_outliers after epoch 1 in [K/2, K], K = {k_classes:g}",
             "passed": bool(k_classes / 2 <= outliers <= k_classes), "scale": in_zone},
            {"model": model, "property": "gradient confinement", "value": confinement,
             "criterion": f"median top-k gradient fraction after epoch 1 >= "
                          f"{CONFINEMENT_THRESHOLD}",
             "passed": bool(confinement >= CONFINEMENT_THRESHOLD), "scale": in_zone},
            {"model": model, "property": "rise then fall", "value": float(len(rise_fall)),
             "criterion": f"runs whose lambda_1 peaks inside and ends <= {FALL_FRACTION} x peak"
                          f" (scales {rise_fall})",
             "passed": bool(rise_fall), "scale": rise_fall[0] if rise_fall else math.nan},
            {"model": model, "property": "zone", "value": best_scale,
             "criterion": f"best accuracy after epoch 1 at a scale in the kappa zone "
                          f"{zone.bounds}",
             "passed": bool(zone.contains(best_scale)), "scale": in_zone},
        ]
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    c = checks(table)
    out: dict[str, Any] = {}
    for _, r in c.iterrows():
        out[f"{r['model']}: {r['property']}"] = (
            f"{'PASS' if r['passed'] else 'FAIL'} value={r['value']:.3g} ({r['criterion']})")
    measured = table[table["status"] == "measured"]
    if len(measured):
        out["median measurement seconds"] = round(float(measured["seconds"].median()), 3)
    out["skipped or partial measurements"] = int((table["status"] != "measured").sum())
    return out


# --------------------------------------------------------------------------- figure


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib as mpl

    t = _runs(table)
    t = t[t["status"] != "skipped"]
    c = checks(table).set_index(["model", "property"])
    model_names = list(dict.fromkeys(t["model"]))
    scales = sorted(t["scale"].unique())
    colour, _ = log_colours(scales, fallback="tab:blue")
    x_col = "epoch" if t["epoch"].notna().all() else "step"
    fig, axes = new_figure(4, len(model_names), width=3.0, height=2.4, layout="constrained")

    def mark(model: str, prop: str) -> str:
        r = c.loc[(model, prop)]
        return f" [{'✓' if r['passed'] else '✗'} {r['value']:.2g}]"

    for row_axes, model in zip(axes, model_names):
        rows_m = t[t["model"] == model]
        in_zone = c.loc[(model, "outliers"), "scale"]  # checks() rates every model
        zrun = rows_m[rows_m["scale"] == in_zone].sort_values("step")
        eig_cols = [col for col in t.columns if col.startswith("eigenvalue_")
                    and zrun[col].notna().any()]
        ax = row_axes[0]
        for i, col in enumerate(eig_cols):
            ax.plot(zrun[x_col], zrun[col], lw=1, color=mpl.colormaps["plasma"](
                i / max(len(eig_cols) - 1, 1)))
        style_axis(ax, yscale="log", ylabel=f"{model}\ntop-k Hessian eigenvalues",
                   title=f"(1) outliers, α={in_zone:g}{mark(model, 'outliers')}", title_size=8)
        panels = [("gradient_top_k_fraction", "gradient share in top-k",
                   f"(2) confinement{mark(model, 'gradient confinement')}", "linear"),
                  ("eigenvalue_1", r"$\lambda_1$", f"(3) rise then fall"
                   f"{mark(model, 'rise then fall')}", "log"),
                  ("positive_curvature", r"$\kappa$ of $H_R$", f"(4) zone{mark(model, 'zone')}",
                   "linear")]
        for ax, (col, label, title, yscale) in zip(row_axes[1:], panels):
            for scale, run_rows in rows_m.groupby("scale"):
                run_rows = run_rows.sort_values("step")
                ax.plot(run_rows[x_col], run_rows[col].astype(float), lw=1.2, marker="o",
                        ms=2, color=colour(scale), label=f"α={scale:g}")
            style_axis(ax, ylabel=label, title=title, title_size=8,
                       yscale="log" if yscale == "log" else None)
        row_axes[1].axhline(CONFINEMENT_THRESHOLD, color="0.5", ls="--", lw=0.8)
        row_axes[1].set_ylim(-0.02, 1.02)
        row_axes[3].axhline(0.0, color="0.5", lw=0.8)
        row_axes[3].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(x_col)
    fig.suptitle(f"P2's four properties over minibatch SGD on {config.dataset} "
                 f"(lr = η₀/α^(L−2), η₀ = {config.base_lr:g}); ✓/✗ = numeric check",
                 fontsize=9)
    return save_figure(fig, fig_dir, "training_geometry", tight_layout=False)


register_module(
    __name__, id="training-geometry",
    paper="P2 (four properties)",
    summary="curvature monitor over SGD: outliers, gradient confinement, λ₁ rise/fall, zone",
    key_columns=("model", "scale", "seed", "step"),
)
