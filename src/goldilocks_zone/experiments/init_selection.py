"""P3: select initialisations by their local curvature and test whether they train faster.

Protocol (Fort & Scherlis 2019, SCIENCE.md §7): draw ``num_inits`` initialisations, each a
Xavier draw of its own seed rescaled by s drawn log-uniformly from 10^[-spread, +spread]
(``log_scale_spread``; 0 tests plain Xavier draws), so that radii inside and around the
Goldilocks zone are sampled. Score each *before training* by the positive curvature
κ = Tr H_R / ‖H_R‖_F and the fraction π of positive eigenvalues of the Hessian on one random
d-dim subspace, and by the initial loss (lower is better). Train every one the same way
(optimiser, learning rate, steps, minibatch order, data) and measure its speed: the training
accuracy after ``speed_step`` steps and the steps to ``target_accuracy`` (``steps + 1`` when
never reached). For each score, the top ``top_fraction`` is compared with the rest by one-sided
Mann-Whitney U tests in the predicted direction, with Spearman's ρ between score and speed.
The rescaling enters the curvature engine as ``scale=`` and the training as the starting point
s θ_X; the model is never modified.

Measured with the defaults (mnist-5k, ``mlp:100``, 100 inits, SGD + momentum): the 20 inits
with the highest κ reach a median training accuracy of 0.920 after 50 steps against 0.899 for
the rest (p = 2e-7, ρ = 0.60); selecting by π gives p = 0.004; the *lowest initial loss* picks
the small-radius inits and they train slower (p = 1.0, ρ = -0.21). On the quick setting SGD +
momentum again favours high κ (p ≈ 0.03), whereas with Adam, whose steps do not grow with the
gradient, the small-radius, low-loss inits train fastest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.curvature.random import numpy_generator
from goldilocks_zone.experiments._shared.architecture import (
    TrainTestConfig,
    parameter_radius,
    parse_architecture,
)
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import with_cpu_threads
from goldilocks_zone.experiments._shared.config import DimConfig, common, knob
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure, style_axis

# score column -> True when a *higher* score is predicted to train faster
SCORES = {"positive_curvature": True, "fraction_positive": True, "initial_loss": False}


@dataclass
class Config(TrainTestConfig, DimConfig):
    dim: int = common("dim", 20, "subspace dimension for the scores")

    num_inits: int = knob(100, "random initialisations")
    log_scale_spread: float = knob(1.0, "init scales drawn log-uniformly in 10^[-spread, spread]")
    score_samples: int = knob(1000, "samples for the scores")
    basis: str = "orthonormal"
    top_fraction: float = knob(0.2, "share called 'top-scored'")
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    steps: int = 300
    batch_size: int | None = 128
    eval_every: int = 10
    speed_step: int = knob(50, "training speed = accuracy after this many steps")
    target_accuracy: float = knob(0.8, "training speed = steps to this accuracy")
    seed: int = knob(0, "master seed (init seeds, scales, basis)")

    def validate(self) -> None:
        super().validate()
        if self.num_inits < 4:
            raise ValueError(f"num_inits must be at least 4 to compare groups, got "
                             f"{self.num_inits}")
        if not 0 < self.top_fraction < 1:
            raise ValueError(f"top_fraction must be in (0, 1), got {self.top_fraction}")
        if self.log_scale_spread < 0:
            raise ValueError("log_scale_spread must be >= 0")
        if not 1 <= self.speed_step <= self.steps:
            raise ValueError(f"speed_step must be in [1, steps={self.steps}], got "
                             f"{self.speed_step}")
        if self.eval_every < 1 or self.speed_step % self.eval_every:
            raise ValueError(f"speed_step={self.speed_step} must be a multiple of eval_every="
                             f"{self.eval_every} so that it is logged")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError("target_accuracy must be in (0, 1]")
        if self.score_samples < 1:
            raise ValueError(f"score_samples must be >= 1, got {self.score_samples}")


QUICK = {"model": "mlp:32", "dataset": "digits", "num_samples": 1000, "num_inits": 30, "dim": 10,
         "score_samples": 400, "top_fraction": 0.25, "steps": 100, "batch_size": None,
         "eval_every": 5, "speed_step": 20, "target_accuracy": 0.8}


@with_cpu_threads
def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import random_basis, subspace_curvature
    from goldilocks_zone.training.subspace import (
        Surface,
        flatten_parameters,
        train_on_surface,
    )

    arch = parse_architecture(config.model)
    rng = numpy_generator(config.seed)
    init_seeds = rng.choice(2**31 - 1, size=config.num_inits, replace=False)
    log_scales = rng.uniform(-config.log_scale_spread, config.log_scale_spread,
                             size=config.num_inits)
    rows: list[dict[str, Any]] = []
    basis = None
    for i in ctx.progress(range(config.num_inits), total=config.num_inits, desc="inits"):
        seed, scale = int(init_seeds[i]), float(10.0 ** log_scales[i])
        problem = config.problem(arch, seed)
        train = problem.data
        if basis is None:  # one subspace for all inits: the scores differ only by the init
            basis = random_basis(problem.num_params, config.dim, kind=config.basis,
                                 seed=config.seed, dtype=problem.inputs.dtype,
                                 device=problem.inputs.device)
            ctx.record("dataset", getattr(problem.dataset, "fingerprint", None))
            test = config.held_out(problem.inputs)
        n_score = min(config.score_samples, train[0].shape[0])
        curv = subspace_curvature(problem.model, (train[0][:n_score], train[1][:n_score]), basis,
                                  scale=scale)
        stats = curv.stats("hessian")
        anchor = scale * flatten_parameters(problem.model)
        result = train_on_surface(problem.model, train, Surface(anchor), steps=config.steps,
                                  lr=config.lr, optimizer=config.optimizer,
                                  momentum=config.momentum, batch_size=config.batch_size,
                                  seed=config.seed, eval_data=test,
                                  eval_every=config.eval_every)
        h = result.history
        reached = h.steps_to_reach(config.target_accuracy)
        init_row = {
            "init": i, "init_seed": seed, "scale": scale,
            "radius": scale * parameter_radius(problem.model),
            "positive_curvature": stats.positive_curvature,
            "fraction_positive": stats.fraction_positive,
            "initial_loss": curv.loss, "initial_accuracy": curv.accuracy,
            "steps_to_target": float(reached) if reached is not None else math.nan,
            "finite": result.finite,
        }
        rows += [init_row | {"step": int(step), "train_loss": float(loss),
                             "train_accuracy": float(acc), "test_accuracy": float(test_acc)}
                 for step, loss, acc, test_acc in zip(h.step, h.train_loss, h.train_accuracy,
                                                      h.eval_accuracy, strict=True)]
    table = pd.DataFrame(rows)
    comparison = compare(table, speed_step=config.speed_step, top_fraction=config.top_fraction,
                         steps=config.steps)
    ctx.record("comparison", comparison.to_dict(orient="records"))
    ctx.record("summary", summarise(comparison))
    return table


def per_init(table: pd.DataFrame, *, speed_step: int, steps: int) -> pd.DataFrame:
    """One row per initialisation with its scores, accuracy after ``speed_step`` steps (last
    logged step at or before it) and steps to target (``steps + 1`` when never reached)."""
    cols = ["init", "scale", "radius", *SCORES, "steps_to_target"]
    inits = table.groupby("init")[cols[1:]].first()
    logged = table[table["step"] <= speed_step]
    last = logged.sort_values("step").groupby("init").last()
    inits["speed_accuracy"] = last["train_accuracy"]
    inits["speed_test_accuracy"] = last["test_accuracy"]
    inits["steps_to_target_censored"] = inits["steps_to_target"].fillna(steps + 1)
    return inits.reset_index()


def compare(table: pd.DataFrame, *, speed_step: int, top_fraction: float,
            steps: int) -> pd.DataFrame:
    """Top-scored vs the rest, for each score: medians, Mann-Whitney U p-values (one-sided in
    the predicted direction) for accuracy after ``speed_step`` steps and for steps to target,
    a one-sided Welch t-test p-value for the accuracy, and Spearman's ρ between the raw score
    and the accuracy (the prediction is ρ > 0 for κ and π, ρ < 0 for the initial loss)."""
    from scipy import stats

    inits = per_init(table, speed_step=speed_step, steps=steps)
    n = len(inits)
    n_top = max(1, int(round(top_fraction * n)))
    out = []
    for score, higher_is_better in SCORES.items():
        values = inits[score].to_numpy(dtype=float)
        signed = np.where(np.isfinite(values), values if higher_is_better else -values, -np.inf)
        order = np.argsort(-signed, kind="stable")
        is_top = np.zeros(n, dtype=bool)
        is_top[order[:n_top]] = True
        acc = inits["speed_accuracy"].to_numpy(dtype=float)
        to_target = inits["steps_to_target_censored"].to_numpy(dtype=float)
        u_acc = stats.mannwhitneyu(acc[is_top], acc[~is_top], alternative="greater")
        u_steps = stats.mannwhitneyu(to_target[is_top], to_target[~is_top], alternative="less")
        welch = stats.ttest_ind(acc[is_top], acc[~is_top], equal_var=False,
                                alternative="greater")
        finite = np.isfinite(values)
        rho = stats.spearmanr(values[finite], acc[finite]).statistic if finite.sum() > 2 \
            else math.nan
        out.append({
            "score": score, "higher_is_better": higher_is_better, "n_top": int(is_top.sum()),
            "n_rest": int((~is_top).sum()),
            "top_median_accuracy": float(np.median(acc[is_top])),
            "rest_median_accuracy": float(np.median(acc[~is_top])),
            "mannwhitney_u": float(u_acc.statistic), "p_value": float(u_acc.pvalue),
            "welch_p_value": float(welch.pvalue),
            "top_median_steps_to_target": float(np.median(to_target[is_top])),
            "rest_median_steps_to_target": float(np.median(to_target[~is_top])),
            "steps_p_value": float(u_steps.pvalue),
            "spearman_rho": float(rho),
        })
    return pd.DataFrame(out)


def summarise(comparison: pd.DataFrame) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for r in comparison.itertuples():
        summary[f"{r.score}_p_value"] = r.p_value
        summary[f"{r.score}_steps_p_value"] = r.steps_p_value
        summary[f"{r.score}_top_vs_rest_median_accuracy"] = [
            round(r.top_median_accuracy, 4), round(r.rest_median_accuracy, 4)]
        summary[f"{r.score}_spearman_rho"] = r.spearman_rho
    summary["n_top"] = int(comparison["n_top"].iloc[0])
    summary["n_rest"] = int(comparison["n_rest"].iloc[0])
    return summary


# --------------------------------------------------------------------------- plot


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    import matplotlib as mpl

    speed_step = config.speed_step
    inits = per_init(table, speed_step=speed_step, steps=config.steps)
    comparison = compare(table, speed_step=speed_step, top_fraction=config.top_fraction,
                         steps=config.steps)
    labels = {"positive_curvature": r"$\kappa$ (positive curvature)",
              "fraction_positive": r"$\pi$ (fraction positive)",
              "initial_loss": "initial loss"}

    fig, axes = new_figure(3, 2, width=3.1, height=2.6)
    norm = mpl.colors.Normalize(vmin=np.log10(inits["scale"]).min(),
                                vmax=np.log10(inits["scale"]).max() + 1e-12)
    for j, (score, higher) in enumerate(SCORES.items()):
        row = comparison[comparison["score"] == score].iloc[0]
        # top row: score vs speed, coloured by the log init scale
        ax = axes[0, j]
        sc = ax.scatter(inits[score], inits["speed_accuracy"], c=np.log10(inits["scale"]),
                        cmap="viridis", norm=norm, s=12, edgecolors="none")
        style_axis(ax, xscale="log" if score == "initial_loss" else None, xlabel=labels[score],
                   ylabel=f"train accuracy after {speed_step} steps" if j == 0 else None,
                   title=rf"Spearman $\rho$(score, speed) = {row.spearman_rho:.2f}",
                   title_size=8)
        # bottom row: mean training curves of the top-scored vs the rest
        ax = axes[1, j]
        values = inits.set_index("init")[score]
        signed = values if higher else -values
        top_ids = set(signed.fillna(-np.inf).sort_values(ascending=False).index[:int(row.n_top)])
        best = "top" if higher else "lowest"
        for group, name, color in ((True, f"{best} {int(row.n_top)}", "C1"),
                                   (False, f"rest ({int(row.n_rest)})", "C0")):
            sub = table[table["init"].isin(top_ids) == group]
            curve = sub.groupby("step")["train_accuracy"].agg(["mean", "sem"])
            ax.plot(curve.index, curve["mean"], color=color, label=name)
            ax.fill_between(curve.index, curve["mean"] - curve["sem"],
                            curve["mean"] + curve["sem"], color=color, alpha=0.2, lw=0)
        ax.axvline(speed_step, color="0.4", ls=":", lw=0.9)
        style_axis(ax, xlabel="training step", ylabel="train accuracy" if j == 0 else None,
                   title=f"selected by {labels[score]}\none-sided Mann-Whitney p = "
                         f"{row.p_value:.2g}", title_size=8,
                   legend={"fontsize": 7, "loc": "lower right"})
    cbar = fig.colorbar(sc, ax=axes[0, -1], pad=0.02)
    cbar.set_label(r"$\log_{10}$ init scale $s$")
    return save_figure(fig, fig_dir, "init_selection")


register_module(
    __name__, id="init-selection",
    paper="P3",
    summary="score many random inits by κ, π and initial loss on a subspace, train all the "
            "same way, and test whether the top-scored train faster (Mann-Whitney U)",
    key_columns=("init", "step"),
    renamed={"architecture": "model", "num_train": "num_samples", "basis_kind": "basis"},
)
