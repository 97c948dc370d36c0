r"""``top-eigenvector`` (P1 §5): the top Hessian eigenvector of LeNet-300-100 at large
initialisation scales, drawn as an image.

Protocol. For each :math:`\alpha` (default :math:`\{5, 10, 30, 60, 100, 200\}`: large enough
for confident outputs, before the softmax collapses completely), compute the top eigenpair
:math:`(\lambda_{\max}, v)` of the full-space Hessian :math:`\nabla^2 L(\alpha\theta)` by
Lanczos (:func:`goldilocks_zone.hessian_top_eigenpairs`, ``max_iterations`` steps, Ritz
residual :math:`\|Hv - \lambda v\|` reported). Take the block of :math:`v` that belongs to the
first layer's weight :math:`W_1 \in \mathbb{R}^{U\times P}` (``U`` hidden units, ``P`` input
pixels; 300 × 784 for LeNet-300-100), reshape each unit's row to the input image shape and
average over units (and channels) — ``statistic="mean"``, P1's picture — and, as a sign-free
companion, the root mean square over units (``statistic="rms"``).

Sign convention: an eigenvector is defined up to sign; we flip :math:`v` so that its mean
first-layer image has a non-negative inner product with the mean training image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import config_problem
from goldilocks_zone.experiments._shared.config import NetworkConfig, ProblemConfig, knob
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure

STATISTICS = ("mean", "rms")


@dataclass
class Config(NetworkConfig, ProblemConfig):
    scales: tuple[float, ...] = knob((5.0, 10.0, 30.0, 60.0, 100.0, 200.0),
                                     "initialisation scales alpha")
    max_iterations: int = knob(100, "Lanczos steps")
    tol: float = knob(1e-6, "Lanczos relative tolerance")
    term: str = knob("hessian", "hessian, g_term or h_term")

    def validate(self) -> None:
        super().validate()
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ValueError("scales must be a non-empty list of positive numbers")
        if self.max_iterations < 2:
            raise ValueError("max_iterations must be >= 2")
        if self.term not in ("hessian", "g_term", "h_term"):
            raise ValueError("term must be hessian, g_term or h_term")


QUICK = {"num_samples": 300, "max_iterations": 30, "tol": 1e-4}


def first_layer_block(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, int, int]:
    """``(name, offset, units)`` of the first parameter that maps the whole flattened input:
    a weight of shape ``(U, prod(input_shape))``; its entries sit at
    ``offset : offset + U * P`` of the flat parameter vector."""
    pixels = int(np.prod(input_shape))
    name, p = next(iter(model.named_parameters()))
    if p.ndim == 2 and p.shape[1] == pixels:
        return name, 0, int(p.shape[0])
    raise ValueError(
        f"top-eigenvector draws the first layer's weights as images, so the model's first "
        f"parameter must be a (units, {pixels}) weight that sees every input pixel; "
        f"{type(model).__name__}'s first parameter {name!r} has shape {tuple(p.shape)}. Use "
        "a fully-connected model such as lenet-300-100 or mlp")


def eigenvector_images(vector: Tensor, offset: int, units: int,
                       input_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mean and root-mean-square over units (and channels) of the first-layer block of
    ``vector``, each an ``(H, W)`` array (inputs of shape ``(P,)`` give ``(1, P)``)."""
    pixels = int(np.prod(input_shape))
    block = vector[offset:offset + units * pixels].reshape(units, *input_shape)
    block = block.to(torch.float64).cpu()
    if block.ndim == 2:  # flat inputs
        block = block[:, None, None, :]
    elif block.ndim == 3:  # (U, H, W)
        block = block[:, None]
    mean = block.mean(dim=(0, 1)).numpy()
    rms = block.pow(2).mean(dim=(0, 1)).sqrt().numpy()
    return {"mean": mean, "rms": rms}


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone.curvature import hessian_top_eigenpairs
    from goldilocks_zone.training.gradient_descent import evaluate, initial_params

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    jobs = [(seed, scale) for seed in config.seeds for scale in config.scales]
    problems: dict[int, Any] = {}
    for seed, scale in ctx.progress(jobs, total=len(jobs), desc="top eigenvectors"):
        if seed not in problems:
            problems[seed] = config_problem(config, seed)
        problem = problems[seed]
        input_shape = tuple(problem.inputs.shape[1:])
        name, offset, units = first_layer_block(problem.model, input_shape)
        pairs = hessian_top_eigenpairs(problem.model, problem.data, k=1, term=config.term,
                                       max_iterations=config.max_iterations, tol=config.tol,
                                       seed=seed, scale=scale, batch_size=config.batch_size)
        v = pairs.eigenvectors[:, 0]
        images = eigenvector_images(v, offset, units, input_shape)
        mean_input = problem.inputs.to(torch.float64).mean(0).reshape(images["mean"].shape)
        if float((torch.from_numpy(images["mean"]) * mean_input.cpu()).sum()) < 0:
            v = -v
            images["mean"] = -images["mean"]
        ev = evaluate(problem.model, initial_params(problem.model, scale=scale), problem.data,
                      batch_size=config.batch_size)
        info = {
            "scale": scale, "seed": seed, "term": config.term,
            "eigenvalue": float(pairs.eigenvalues[0]),
            "residual": float(pairs.residuals[0]),
            "converged": bool(pairs.converged), "iterations": int(pairs.iterations),
            "first_layer": name,
            "first_layer_share": float(v[offset:offset + units * int(np.prod(input_shape))]
                                       .pow(2).sum()),
            "loss": ev.loss, "accuracy": ev.accuracy,
            "mean_entropy": ev.mean_entropy,
        }
        for stat in STATISTICS:
            for (r, c), value in np.ndenumerate(images[stat]):
                rows.append({**info, "statistic": stat, "row": r, "col": c,
                             "value": float(value)})
        summary[f"alpha={scale:g} seed={seed}"] = (
            f"lambda_max = {info['eigenvalue']:.4g} (residual {info['residual']:.2g}, "
            f"{'converged' if info['converged'] else 'NOT converged'} in "
            f"{info['iterations']} steps), first-layer share {info['first_layer_share']:.2f}, "
            f"accuracy {info['accuracy']:.2f}")
    table = pd.DataFrame(rows)
    table["model"] = config.model
    table["dataset"] = config.dataset
    ctx.record("dataset_fingerprint",
               next(iter(problems.values())).dataset.fingerprint if problems else None)
    ctx.record("summary", summary)
    return table


def images_from_table(table: pd.DataFrame, scale: float, seed: int, statistic: str
                      ) -> np.ndarray:
    """Rebuild one (H, W) image from the long-format table."""
    sel = table[(table["scale"] == scale) & (table["seed"] == seed)
                & (table["statistic"] == statistic)]
    h, w = int(sel["row"].max()) + 1, int(sel["col"].max()) + 1
    img = np.full((h, w), np.nan)
    img[sel["row"].to_numpy(int), sel["col"].to_numpy(int)] = sel["value"].to_numpy(float)
    return img


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    paths: list[Path] = []
    for seed in sorted(table["seed"].unique()):
        runs = table[table["seed"] == seed]
        scales = sorted(runs["scale"].unique())
        fig, axes = new_figure(len(scales), 2, width=1.55, height=1.75)
        for c, scale in enumerate(scales):
            info = runs[runs["scale"] == scale].iloc[0]
            for r, (stat, cmap) in enumerate((("mean", "RdBu_r"), ("rms", "magma"))):
                ax = axes[r, c]
                img = images_from_table(runs, scale, seed, stat)
                if stat == "mean":
                    lim = float(np.nanmax(np.abs(img))) or 1.0
                    ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
                else:
                    ax.imshow(img, cmap=cmap, vmin=0)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(f"$\\alpha$ = {scale:g}\n$\\lambda_{{\\max}}$ = "
                                 f"{info['eigenvalue']:.3g}", fontsize=8)
                if c == 0:
                    ax.set_ylabel("mean over units" if stat == "mean" else "RMS over units",
                                  fontsize=8)
        fig.suptitle(f"Top Hessian eigenvector, first-layer block: {config.model} on "
                     f"{config.dataset} (seed {seed})", fontsize=9)
        name = "top_eigenvector" if len(table["seed"].unique()) == 1 else \
            f"top_eigenvector_seed{seed}"
        paths += save_figure(fig, fig_dir, name)
    return paths


register_module(
    __name__, id="top-eigenvector",
    paper="P1 §5",
    summary="top Hessian eigenvector's first-layer block as an image, for several alpha",
    key_columns=("term", "scale"),
)
