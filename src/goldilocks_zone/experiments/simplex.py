r"""``simplex`` (P2 Fig. 3–4): the softmax freezes onto the corners of the simplex as the logit
scale grows, over training and in the random model.

Protocol.

* **Training.** Train a network (``model``, ``activation``, on ``dataset``) with minibatch SGD
  (:func:`~goldilocks_zone.training.minibatch.sgd_trajectory`) and log, at
  ``num_checkpoints`` log-spaced steps: the logit variance :math:`\mathrm{Var}(z)` over probe
  samples and classes, the mean logit-gradient length
  :math:`\langle\|\nabla_\theta z_k^\mu\|\rangle` (per-sample Jacobians of ``jacobian_samples``
  probes), the weight norm :math:`\|\theta\|`, the mean softmax entropy, loss and accuracy.
* **Simplex.** For the samples of a 3-class subset (``classes``), the softmax over those three
  logits, a point of the 2-simplex, early, in the middle of and late in training
  (``simplex_fractions`` of the run), with the mean entropy; and the same for the random
  model's logits (:func:`~goldilocks_zone.theory.random_model.simulate_logits`) at growing
  :math:`\sigma_z` (``random_sigma_zs``).
* **Radial scale.** At initialisation, the logit variance of :math:`\alpha\theta_0` for
  :math:`\alpha` on a log grid (for a bias-free homogeneous network of L layers it grows as
  :math:`\alpha^{2L}`).

Expected: logit variance, gradient length and weight norm grow over training; the points move
from the centre of the simplex to its corners (entropy → 0), in the network and in the random
model as :math:`\sigma_z` grows: the probabilities freeze.

The table's ``section`` column: ``training``, ``simplex`` (one row per sample and stage;
``source`` = network or random-model), ``radial``.
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
from goldilocks_zone.experiments._shared.common import log_grid, torch_dtype
from goldilocks_zone.experiments._shared.config import (
    ModelDataConfig,
    PrecisionConfig,
    SGDConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure, style_axis


@dataclass
class Config(SGDConfig, ModelDataConfig, PrecisionConfig):
    model: str = common("model", "mlp")
    dtype: str = common("dtype", "float32")

    train_steps: int = knob(2000, "minibatch SGD steps")

    activation: str = knob("relu", "hidden activation")
    init: str = knob("kaiming", "kaiming or xavier")
    classes: tuple[int, ...] = knob((0, 1, 2), "the 3 classes shown in the simplex")
    probe_samples: int = knob(300, "class-balanced probe samples (statistics)")
    jacobian_samples: int = knob(50, "probes whose logit gradients are measured")
    num_checkpoints: int = knob(16, "log-spaced logging steps")
    simplex_fractions: tuple[float, ...] = knob(
        (0.005, 0.05, 1.0), "early/middle/late points of the run shown in the simplex")
    random_sigma_zs: tuple[float, ...] = knob((0.3, 1.0, 3.0, 10.0),
                                              "random-model logit scales shown")
    random_label_margin: float = knob(3.0, "random model's true-logit shift (units of sigma_z)")
    random_samples: int = knob(300, "random-model samples (all classes)")
    log10_scale: tuple[float, ...] = knob((-1.0, 1.0), "log10 range of the radial scale alpha")
    per_decade: int = knob(4, "alpha grid points per decade")
    seed: int = knob(0, "model/training seed")

    def validate(self) -> None:
        super().validate()
        if len(self.classes) != 3 or len(set(self.classes)) != 3:
            raise ValueError(f"classes must be 3 distinct class indices, got {self.classes}")
        if any(not 0 < f <= 1 for f in self.simplex_fractions) or not self.simplex_fractions:
            raise ValueError(f"simplex_fractions must lie in (0, 1], got "
                             f"{self.simplex_fractions}")
        if self.train_steps < 1 or self.num_checkpoints < 2:
            raise ValueError("train_steps >= 1 and num_checkpoints >= 2 needed")
        if not self.random_sigma_zs or any(s <= 0 for s in self.random_sigma_zs):
            raise ValueError(f"random_sigma_zs must be positive, got {self.random_sigma_zs}")
        if len(self.log10_scale) != 2 or not self.log10_scale[0] < self.log10_scale[1]:
            raise ValueError(f"log10_scale must be two increasing exponents, got "
                             f"{self.log10_scale}")
        if self.jacobian_samples < 1 or self.probe_samples < 3:
            raise ValueError("jacobian_samples >= 1 and probe_samples >= 3 needed")


QUICK = {"dataset": "digits", "train_samples": 1000, "probe_samples": 150,
         "jacobian_samples": 30, "train_steps": 300, "num_checkpoints": 10, "per_decade": 2}


def checkpoint_steps(train_steps: int, num: int, fractions: tuple[float, ...]) -> list[int]:
    """Step 0, ``num`` log-spaced steps up to ``train_steps`` and the simplex stages."""
    log_steps = np.unique(np.round(np.logspace(0, math.log10(train_steps), num)).astype(int))
    stages = [simplex_step(train_steps, f) for f in fractions]
    return sorted({0, *map(int, log_steps), *stages, train_steps})


def simplex_step(train_steps: int, fraction: float) -> int:
    return max(1, int(round(fraction * train_steps)))


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.to(torch.float64), -1)
    return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)


def _simplex_rows(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor,
                  **keys: Any) -> list[dict[str, Any]]:
    """One row per sample: the softmax over the logits of ``classes`` (a point of the
    2-simplex), its entropy and the label's position in ``classes``."""
    logits3 = logits[:, classes]
    p = torch.softmax(logits3.to(torch.float64), -1).numpy()
    ent = _entropy(logits3).numpy()
    y = (labels[:, None] == classes[None, :]).to(torch.int64).argmax(1).numpy()
    return [{"section": "simplex", **keys, "sample": i, "label": int(y[i]), "p0": float(p[i, 0]),
             "p1": float(p[i, 1]), "p2": float(p[i, 2]), "entropy": float(ent[i])}
            for i in range(p.shape[0])]


def _norm(theta: dict[str, torch.Tensor]) -> float:
    """‖θ‖₂ over all parameters, in float64."""
    return float(torch.cat([t.reshape(-1) for t in theta.values()]).to(torch.float64).norm())


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import models as model_lib
    from goldilocks_zone.experiments._shared.functional_training import (
        accuracy_and_loss,
        load_split,
        logits_at,
        model_params,
        per_sample_jacobians,
    )
    from goldilocks_zone.theory import random_model as rm
    from goldilocks_zone.training.minibatch import sgd_trajectory

    dtype = torch_dtype(config.dtype)
    train, probe = load_split(config.dataset, train_samples=config.train_samples,
                              probe_samples=config.probe_samples, data_seed=config.data_seed,
                              dtype=dtype)
    k = train.num_classes
    if max(config.classes) >= k:
        raise ValueError(f"classes {config.classes} outside the {k} classes of {config.dataset}")
    ctx.record("dataset", {"name": config.dataset, "train_samples": len(train),
                           "probe_samples": len(probe), "fingerprint": train.fingerprint})
    net = model_lib.create(config.model, tuple(train.input_shape), k,
                           activation=config.activation, bias=config.bias, init=config.init,
                           seed=config.seed).to(dtype)
    theta0 = model_params(net)
    cls = torch.tensor(config.classes)
    in3 = torch.isin(probe.targets, cls)
    x3, y3 = probe.inputs[in3], probe.targets[in3]
    jac_x = probe.inputs[:config.jacobian_samples]
    steps = checkpoint_steps(config.train_steps, config.num_checkpoints,
                             config.simplex_fractions)
    stage_steps = {simplex_step(config.train_steps, f): f for f in config.simplex_fractions}
    rows: list[dict[str, Any]] = []
    traj = sgd_trajectory(net, theta0, train.inputs, train.targets, steps=config.train_steps,
                          lr=config.lr, batch_size=config.batch_size, seed=config.seed,
                          yield_at=steps)
    for step, theta in ctx.progress(traj, total=len(steps), desc="simplex: training"):
        z = logits_at(net, theta, probe.inputs).to(torch.float64)
        lengths = torch.cat([j.to(torch.float64).norm(dim=-1).reshape(-1)
                             for j in per_sample_jacobians(net, theta, jac_x)])
        acc, loss = accuracy_and_loss(net, theta, train.inputs, train.targets)
        rows.append({"section": "training", "source": "network", "step": step,
                     "logit_variance": float(z.var(unbiased=False)),
                     "logit_std": float(z.std(unbiased=False)),
                     "gradient_length": float(lengths.mean()),
                     "weight_norm": _norm(theta),
                     "mean_entropy": float(_entropy(z).mean()), "train_loss": loss,
                     "train_accuracy": acc})
        if step in stage_steps:
            rows.extend(_simplex_rows(logits_at(net, theta, x3), y3, cls, source="network",
                                      stage=f"step {step}", step=step,
                                      fraction=stage_steps[step]))
    # the random model's logits as sigma_z grows (logits only: cheap)
    for sz in config.random_sigma_zs:
        params = rm.RandomModelParams(dim=1, num_classes=k, num_samples=config.random_samples,
                                      sigma_z=float(sz), label_margin=config.random_label_margin)
        z, y = rm.simulate_logits(params, seed=config.seed)
        sel = torch.isin(y, cls)
        rows.extend(_simplex_rows(z[sel], y[sel], cls, source="random-model",
                                  stage=f"sigma_z {sz:g}", sigma_z=float(sz)))
    # logit variance against the radial scale of the initialisation
    for alpha in log_grid(float(config.log10_scale[0]), float(config.log10_scale[1]),
                          int(config.per_decade)):
        scaled = {n: alpha * t for n, t in theta0.items()}
        z = logits_at(net, scaled, probe.inputs).to(torch.float64)
        rows.append({"section": "radial", "source": "network", "scale": alpha,
                     "weight_norm": alpha * _norm(theta0),
                     "logit_variance": float(z.var(unbiased=False)),
                     "mean_entropy": float(_entropy(z).mean())})
    table = pd.DataFrame(rows)
    ctx.record("summary", summarise(table))
    return table


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Growth over training, the entropy of each simplex stage, and the log-log slopes
    d log(gradient length)/d log(logit std) over training and d log Var(z)/d log alpha.
    A slope is fitted through the points where both logs are finite; with fewer than two
    such points it is NaN (divergent or collapsed runs are data, never an error)."""

    def loglog_slope(x: pd.Series, y: pd.Series) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            lx, ly = np.log(x.to_numpy(float)), np.log(y.to_numpy(float))
        ok = np.isfinite(lx) & np.isfinite(ly)
        if ok.sum() < 2 or np.ptp(lx[ok]) == 0:
            return math.nan
        return float(np.polyfit(lx[ok], ly[ok], 1)[0])

    out: dict[str, Any] = {}
    tr = table[table["section"] == "training"].sort_values("step")
    if not tr.empty:
        first, last = tr.iloc[0], tr.iloc[-1]
        for col in ("logit_variance", "gradient_length", "weight_norm", "mean_entropy",
                    "train_accuracy"):
            out[f"{col}_start_end"] = [float(first[col]), float(last[col])]
        late = tr[tr["step"] > 0]
        if len(late) >= 2:
            out["gradient_growth_exponent"] = loglog_slope(late["logit_std"],
                                                           late["gradient_length"])
    sx = table[table["section"] == "simplex"]
    if not sx.empty:
        out["simplex_mean_entropy"] = {f"{s}: {st}": round(float(g["entropy"].mean()), 4)
                                       for (s, st), g in sx.groupby(["source", "stage"],
                                                                    sort=False)}
    rad = table[table["section"] == "radial"]
    if len(rad) >= 2:
        out["radial_log_slope"] = loglog_slope(rad["scale"], rad["logit_variance"])
    return out


# --------------------------------------------------------------------------- figures

_SQ3 = math.sqrt(3) / 2


def _xy(p0: float, p1: float, p2: float) -> tuple[float, float]:
    """Barycentric (p0, p1, p2) -> plane, corners p0 at (0, 0), p1 at (1, 0), p2 at the top."""
    return p1 + 0.5 * p2, _SQ3 * p2


def _ternary(ax, points: pd.DataFrame, names: list[str], title: str) -> None:
    """Points (p0, p1, p2) in an equilateral triangle with corners labelled ``names``."""
    ax.plot([0, 1, 0.5, 0], [0, 0, _SQ3, 0], color="0.2", linewidth=0.8)
    for t in (0.25, 0.5, 0.75):  # light grid: lines of constant p_i
        for a, b in (((1 - t, 0, t), (0, 1 - t, t)), ((1 - t, t, 0), (0, t, 1 - t)),
                     ((t, 1 - t, 0), (t, 0, 1 - t))):
            (xa, ya), (xb, yb) = _xy(*a), _xy(*b)
            ax.plot([xa, xb], [ya, yb], color="0.88", linewidth=0.5, zorder=0)
    x, y = _xy(points["p0"], points["p1"], points["p2"])
    for lab in sorted(points["label"].unique()):
        m = points["label"] == lab
        ax.scatter(x[m], y[m], s=6, alpha=0.6, color=f"C{int(lab)}", linewidths=0,
                   label=names[int(lab)])
    ax.scatter([1 / 3 + 1 / 6], [_SQ3 / 3], marker="+", color="k", s=30, linewidths=0.8)
    ax.text(-0.03, -0.04, names[0], ha="right", va="top", fontsize=7.5)
    ax.text(1.03, -0.04, names[1], ha="left", va="top", fontsize=7.5)
    ax.text(0.5, _SQ3 + 0.04, names[2], ha="center", va="bottom", fontsize=7.5)
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.12, _SQ3 + 0.15)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=8.5)


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    paths: list[Path] = []
    classes = list(config.classes)
    names = [f"class {c}" for c in classes]
    sx = table[table["section"] == "simplex"]
    if not sx.empty:
        net = sx[sx["source"] == "network"]
        rnd = sx[sx["source"] == "random-model"]
        net_stages = list(dict.fromkeys(net["stage"]))
        rnd_stages = list(dict.fromkeys(rnd["stage"]))
        ncols = max(len(net_stages), len(rnd_stages), 1)
        fig, axes = new_figure(ncols, 2, width=2.3, height=2.3)
        for row, (src, stages, label) in enumerate(
                ((net, net_stages, "network"), (rnd, rnd_stages, "random model"))):
            for col in range(ncols):
                ax = axes[row][col]
                if col >= len(stages):
                    ax.axis("off")
                    continue
                pts = src[src["stage"] == stages[col]]
                stage = stages[col]
                if label == "random model":
                    stage = stage.replace("sigma_z", r"$\sigma_z$ =")
                _ternary(ax, pts, names, f"{label}, {stage}\n"
                         f"mean entropy {pts['entropy'].mean():.2f} nats")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", fontsize=7, markerscale=2.5,
                   title="true class", title_fontsize=7)
        fig.suptitle("Softmax over a 3-class subset: freezing onto the corners", fontsize=10,
                     x=0.4)
        paths += save_figure(fig, fig_dir, "simplex")
    tr = table[table["section"] == "training"].sort_values("step")
    rad = table[table["section"] == "radial"].sort_values("scale")
    if not tr.empty or not rad.empty:
        fig, axes = new_figure(4, 1, width=2.7, height=2.5)
        specs = [("logit_variance", r"logit variance $\mathrm{Var}(z)$", "(a) logit variance"),
                 ("gradient_length", r"mean $\|\nabla_\theta z_k\|$",
                  "(b) logit-gradient length"),
                 ("weight_norm", r"$\|\theta\|$", "(c) weight norm")]
        for ax, (col, label, title) in zip(axes[0][:3], specs):
            if tr.empty:
                ax.axis("off")
                continue
            ax.plot(tr["step"], tr[col], "o-", markersize=3, color="C0")
            ax.set_xscale("symlog", linthresh=1.0)
            style_axis(ax, yscale="log" if col == "logit_variance" else None, xlabel="SGD step",
                       ylabel=label, title=f"{title} over training")
        ax = axes[0][3]
        if not rad.empty:
            ax.loglog(rad["scale"], rad["logit_variance"], "o-", markersize=3, color="C3",
                      label="network at init")
            slope = np.polyfit(np.log(rad["scale"]), np.log(rad["logit_variance"]), 1)[0]
            style_axis(ax, xlabel=r"radial scale $\alpha$ ($\theta = \alpha\theta_0$)",
                       ylabel=r"logit variance $\mathrm{Var}(z)$",
                       title=f"(d) at init, log-log slope {slope:.2f}")
        paths += save_figure(fig, fig_dir, "simplex_dynamics")
    return paths


register_module(
    __name__, id="simplex",
    paper="P2",
    summary="softmax freezing in the simplex over training and in the random model; logit "
            "variance, logit-gradient length and weight norm over training; variance vs scale",
    key_columns=("section", "source", "stage", "step"),
)
