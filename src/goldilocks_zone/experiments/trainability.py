r"""Training outside the Goldilocks zone (P1 §5; SCIENCE.md §8).

Protocol. For each initialisation scale :math:`\alpha` and seed, the initial parameters are
:math:`\alpha\theta_0` and full-batch gradient descent runs with the scale-compensated learning
rate :math:`\eta = \eta_0/\alpha^{L-2}` (``L`` = homogeneity degree, the number of weight
layers; for a homogeneous net this keeps the *relative* step size of the first update
independent of :math:`\alpha` because :math:`\nabla L(\alpha\theta)` scales like
:math:`\alpha^{L-1}` at the logits' level and the Hessian like :math:`\alpha^{L-2}`). Every
``log_every`` steps the run logs train/test loss and accuracy, :math:`\|\nabla L\|`,
:math:`\|\theta\|`, :math:`\cos(\theta,\nabla L)`, :math:`\cos(\theta,\theta_0)`, the fraction
of logits that are exactly zero and — every ``sharpness_every``-th log — the sharpness (top
Hessian eigenvalue, Lanczos on ``sharpness_samples`` training points).

Labels (one per run, from its logged history; applied in this order, first match wins):

1. ``diverged``: the run stopped on a non-finite loss, gradient or parameter, or its final
   train loss exceeds ``explode_factor`` times ``max(initial loss, log K)``.
2. ``zero-logits``: at the end at least ``zero_logit_threshold`` of all training logits are
   exactly 0 (the last hidden layer of a bias-free ReLU net died; the output is uniform and
   the gradient vanishes).
3. ``lazy``: the weights barely moved, :math:`\cos(\theta_T, \theta_0) \ge` ``lazy_cosine``
   (the network may still fit the data, lazily: check its accuracy column).
4. ``trained``: final train accuracy :math:`\ge c + \tau(1 - c)` with :math:`c` the
   majority-class rate of the training data and :math:`\tau` = ``trained_fraction``.
5. ``stalled``: none of the above (finite, moving, but not learning enough).

A run that diverges is data: its last logged row carries the non-finite values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import (
    config_problem,
    log_grid,
    torch_device,
    torch_dtype,
)
from goldilocks_zone.experiments._shared.config import NetworkConfig, ProblemConfig, common, knob
from goldilocks_zone.experiments._shared.plotting import (
    log_colours,
    new_figure,
    save_figure,
    style_axis,
)

LABELS = ("trained", "lazy", "zero-logits", "stalled", "diverged")


@dataclass
class Config(NetworkConfig, ProblemConfig):
    num_samples: int | None = common("num_samples", 10000)
    dtype: str = common("dtype", "float32")

    test_samples: int | None = knob(10000, "test points from the test split (None = all)")
    scales: tuple[float, ...] = knob(log_grid(-2, 2, 2), "initialisation scales alpha")
    base_lr: float = knob(0.1, "eta_0; lr = eta_0 / alpha^(L-2)")
    depth: int | None = knob(None, "L for the lr rule (None: homogeneity degree)")
    steps: int = knob(2000, "gradient-descent steps")
    log_every: int = knob(20, "log every k steps")
    sharpness_every: int = knob(5, "measure sharpness every n-th log (0: never)")
    sharpness_samples: int | None = knob(1000, "training points used for the sharpness")
    sharpness_iterations: int = knob(20, "Lanczos steps")
    trained_fraction: float = knob(0.5, "'trained' if acc >= c + f (1 - c), c = majority rate")
    lazy_cosine: float = knob(0.999, "'lazy' if cos(theta, theta_0) >= this at the end")
    zero_logit_threshold: float = knob(0.99, "'zero-logits' if this fraction of logits is 0")
    explode_factor: float = knob(10.0, "'diverged' if final loss > factor * initial")
    data_seed: int = knob(0, "seed of the subsample")

    def validate(self) -> None:
        super().validate()
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ValueError("scales must be a non-empty list of positive numbers")
        if self.steps < 1 or self.log_every < 1:
            raise ValueError("steps and log_every must be >= 1")
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError("base_lr must be a positive number")
        if not 0 < self.trained_fraction <= 1:
            raise ValueError("trained_fraction must lie in (0, 1]")
        if self.depth is not None and self.depth < 1:
            raise ValueError("depth must be >= 1")


QUICK = {
    "num_samples": 1000,
    "test_samples": 1000,
    "scales": (0.01, 0.1, 1.0, 10.0, 100.0),
    "steps": 150,
    "log_every": 10,
    "sharpness_every": 5,
    "sharpness_samples": 300,
    "sharpness_iterations": 10,
}


def learning_rate(base_lr: float, scale: float, depth: int) -> float:
    r""":math:`\eta_0 / \alpha^{L-2}`."""
    return base_lr / scale ** (depth - 2)


def label_run(history: pd.DataFrame, *, majority_rate: float, num_classes: int,
              trained_fraction: float, lazy_cosine: float, zero_logit_threshold: float,
              explode_factor: float, diverged: bool) -> str:
    """The behaviour label of one run from its logged rows (rules in the module docstring)."""
    first, last = history.iloc[0], history.iloc[-1]
    initial = float(first["train_loss"])
    final = float(last["train_loss"])
    ceiling = explode_factor * max(initial if math.isfinite(initial) else 0.0,
                                   math.log(num_classes))
    if diverged or not bool(last["finite"]) or not math.isfinite(final) or final > ceiling:
        return "diverged"
    if float(last["zero_logit_fraction"]) >= zero_logit_threshold:
        return "zero-logits"
    if float(last["cos_param_init"]) >= lazy_cosine:
        return "lazy"
    if float(last["train_accuracy"]) >= majority_rate + trained_fraction * (1 - majority_rate):
        return "trained"
    return "stalled"


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import data as data_lib
    from goldilocks_zone import models as model_lib
    from goldilocks_zone.training.gradient_descent import gradient_descent

    dt, dev = torch_dtype(config.dtype), torch_device(config.device)
    test_ds = data_lib.load(config.dataset, split="test", num_samples=config.test_samples,
                            seed=config.data_seed)
    test = (test_ds.inputs.to(dtype=dt, device=dev), test_ds.targets.to(device=dev))
    rows: list[dict[str, Any]] = []
    runs = [(seed, scale) for seed in config.seeds for scale in config.scales]
    summary_rows = []
    fingerprint = None
    problems: dict[int, Any] = {}  # GD never modifies the model: one build per seed
    for seed, scale in ctx.progress(runs, total=len(runs), desc="trainability"):
        if seed not in problems:
            problems[seed] = config_problem(config, seed)
        problem = problems[seed]
        fingerprint = getattr(problem.dataset, "fingerprint", None)
        depth = config.depth
        if depth is None:
            hom = model_lib.homogeneity(problem.model)
            if not hom.is_homogeneous:
                raise ValueError(f"model {config.model!r} is not positively homogeneous "
                                 f"({hom.reason}); pass depth=L for the lr rule eta_0/alpha^(L-2)")
            depth = int(hom.degree)
        lr = learning_rate(config.base_lr, scale, depth)
        result = gradient_descent(
            problem.model, problem.data, lr=lr, steps=config.steps, log_every=config.log_every,
            test=test, scale=scale, batch_size=config.batch_size,
            sharpness_every=config.sharpness_every, sharpness_samples=config.sharpness_samples,
            sharpness_iterations=config.sharpness_iterations, seed=seed)
        history = pd.DataFrame(result.history)
        counts = np.bincount(problem.targets.cpu().numpy(), minlength=problem.num_classes)
        label = label_run(history, majority_rate=float(counts.max() / counts.sum()),
                          num_classes=problem.num_classes,
                          trained_fraction=config.trained_fraction,
                          lazy_cosine=config.lazy_cosine,
                          zero_logit_threshold=config.zero_logit_threshold,
                          explode_factor=config.explode_factor, diverged=result.diverged)
        for i, (column, value) in enumerate(
                {"scale": scale, "seed": seed, "lr": lr, "depth": depth}.items()):
            history.insert(i, column, value)
        history["label"] = label
        history["is_final"] = np.arange(len(history)) == len(history) - 1
        rows.extend(history.to_dict("records"))
        last = history.iloc[-1]
        summary_rows.append((scale, seed, label, float(last["train_accuracy"]),
                             float(last["test_accuracy"])))
        ctx.log(f"alpha={scale:g} seed={seed} lr={lr:.3g}: {label}, "
                f"train acc {last['train_accuracy']:.3f}, test acc {last['test_accuracy']:.3f}")
    table = pd.DataFrame(rows)
    table["model"] = config.model
    table["dataset"] = config.dataset
    table["dtype"] = config.dtype
    ctx.record("dataset_fingerprint", fingerprint)
    ctx.record("test_fingerprint", getattr(test_ds, "fingerprint", None))
    ctx.record("summary", {
        f"alpha={s:g} seed={seed}": f"{lab} (train acc {tr:.3f}, test acc {te:.3f})"
        for s, seed, lab, tr, te in summary_rows
    } | {"labels": {lab: sum(r[2] == lab for r in summary_rows) for lab in LABELS
                    if any(r[2] == lab for r in summary_rows)}})
    return table


def final_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: final accuracies and the label, sorted by scale."""
    final = table[table["is_final"].astype(bool)]
    cols = ["scale", "seed", "lr", "label", "train_accuracy", "test_accuracy", "train_loss",
            "cos_param_init", "zero_logit_fraction", "step"]
    return final[cols].sort_values(["scale", "seed"]).reset_index(drop=True)


_LABEL_STYLE = {
    "trained": ("tab:green", "o"),
    "lazy": ("tab:blue", "s"),
    "zero-logits": ("tab:purple", "v"),
    "stalled": ("tab:orange", "D"),
    "diverged": ("tab:red", "X"),
}


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib as mpl

    paths: list[Path] = []
    colour, norm = log_colours(sorted(table["scale"].unique()), fallback=0.5)
    panels = [
        ("train_loss", "train loss", "log"),
        ("test_accuracy", "test accuracy", "linear"),
        ("grad_norm", r"$\|\nabla L\|$", "log"),
        ("cos_param_init", r"$\cos(\theta, \theta_0)$", "linear"),
        ("zero_logit_fraction", "fraction of zero logits", "linear"),
        ("sharpness", r"sharpness $\lambda_{\max}$", "symlog"),
    ]
    fig, axes = new_figure(3, 2, width=3.1, height=2.3, layout="constrained")
    for ax, (col, label, yscale) in zip(axes.flat, panels):
        for (scale, seed), run_rows in table.groupby(["scale", "seed"]):
            run_rows = run_rows.sort_values("step")
            y = run_rows[col].astype(float)
            mask = np.isfinite(y.to_numpy())
            if not mask.any():
                continue
            ax.plot(run_rows["step"].to_numpy()[mask], y.to_numpy()[mask], lw=1.2,
                    color=colour(scale), alpha=0.9,
                    marker="o" if col == "sharpness" else None, ms=2.5,
                    label=f"{scale:g}" if seed == table["seed"].min() else None)
            if not bool(run_rows.iloc[-1]["finite"]):  # diverged: mark the last finite value
                last = np.flatnonzero(mask)[-1]
                ax.plot(run_rows["step"].to_numpy()[last], y.to_numpy()[last], "x",
                        color="tab:red", ms=6, mew=1.5)
        style_axis(ax, xlabel="step", ylabel=label, yscale="log" if yscale == "log" else None)
        if yscale == "symlog":
            finite = table[col].astype(float).abs()
            finite = finite[np.isfinite(finite) & (finite > 0)]
            ax.set_yscale("symlog", linthresh=float(finite.min()) if len(finite) else 1.0)
    if norm is not None:
        sm = mpl.cm.ScalarMappable(norm=norm, cmap="viridis")
        fig.colorbar(sm, ax=axes.ravel().tolist(), label=r"scale $\alpha$", shrink=0.6)
    fig.suptitle(f"Full-batch GD from scaled inits: {config.model} on "
                 f"{config.dataset}, lr = $\\eta_0/\\alpha^{{L-2}}$, "
                 f"$\\eta_0$ = {config.base_lr} (× = diverged)", fontsize=9)
    paths += save_figure(fig, fig_dir, "trainability_curves", tight_layout=False)

    final = final_table(table)
    fig, axes = new_figure(1, 1, width=4.2, height=2.8)
    ax = axes[0, 0]
    for metric, ls, name in (("train_accuracy", "-", "train"), ("test_accuracy", "--", "test")):
        agg = final.groupby("scale")[metric].mean()
        ax.plot(agg.index, agg.to_numpy(), ls, color="0.4", lw=1, label=f"{name} accuracy")
    for label_name, (c, m) in _LABEL_STYLE.items():
        sel = final[final["label"] == label_name]
        if len(sel):
            y = sel["test_accuracy"].astype(float).fillna(0.0)
            ax.scatter(sel["scale"], y, color=c, marker=m, s=36, zorder=3, label=label_name)
    style_axis(ax, xscale="log", ylim=(-0.03, 1.03), xlabel=r"initialisation scale $\alpha$",
               ylabel="final accuracy", title_size=8,
               title=f"after {int(final['step'].max())} steps (markers: test accuracy, label)",
               legend={"fontsize": 7, "loc": "best"})
    paths += save_figure(fig, fig_dir, "trainability_accuracy")
    return paths


register_module(
    __name__, id="trainability",
    paper="P1 §5",
    summary="full-batch GD from scaled inits: labelled behaviours, accuracy vs alpha",
    key_columns=("scale",),
)
