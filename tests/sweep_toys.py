"""Toy experiments for the sweep tests, plugged in as ``"sweep_toys:TOY"`` (not registered).

``TOY`` propagates a seeded random batch through ``depth`` random linear layers scaled by
``scale`` and measures, per layer, the activation norm and the top eigenvalue of the
activations' Gram matrix (``repeats`` re-measures it, to set the cost of a point). Large
``scale`` overflows float64 to ``inf`` and then ``nan``: a genuinely diverging point.
``fail = true`` raises, like an experiment hitting a bug; ``FLAKY`` fails for the seeds listed
in ``$SWEEP_TOY_FLAKY_SEEDS`` (a transient failure, fixed by retrying).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from goldilocks_zone.experiments._shared.base import Experiment, RunContext


@dataclass
class ToyConfig:
    seed: int = field(default=0, metadata={"help": "seed of the layers and the batch"})
    scale: float = field(default=1.0, metadata={"help": "multiplier of every layer"})
    width: int = 128
    depth: int = 3
    repeats: int = 100
    fail: bool = False
    tags: tuple[int, ...] = (1, 2)
    label: str = "toy"

    def validate(self) -> None:
        if self.width < 1 or self.depth < 1 or self.repeats < 1:
            raise ValueError("width, depth and repeats must be >= 1")


def _log(x: float) -> float:
    return math.log(x) if x > 0 else (float("-inf") if x == 0 else float("nan"))


def run(config: ToyConfig, ctx: RunContext) -> pd.DataFrame:
    if config.fail:
        raise ValueError(f"toy failure requested (fail=true, seed={config.seed})")
    gen = torch.Generator().manual_seed(config.seed)
    n = config.width
    layers = torch.randn(config.depth, n, n, generator=gen, dtype=torch.float64) / n**0.5
    h = torch.randn(2 * n, n, generator=gen, dtype=torch.float64)
    rows = []
    for layer in range(config.depth):
        h = config.scale * (h @ layers[layer])
        gram = h.T @ h / h.shape[0]
        top = float("nan")
        for _ in range(config.repeats):
            top = torch.linalg.eigvalsh(gram)[-1].item() if torch.isfinite(gram).all() \
                else float("nan")
        norm = h.norm().item()
        rows.append({"layer": layer + 1, "norm": norm, "log_norm": _log(norm),
                     "top_eigenvalue": top, "seed": config.seed, "label": config.label})
    ctx.record("summary", {"final_norm": rows[-1]["norm"]})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, config: dict, fig_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    for _, rows in table.groupby("point_key" if "point_key" in table else "seed"):
        ax.plot(rows["layer"], rows["log_norm"], marker="o")
    ax.set_xlabel("layer")
    ax.set_ylabel("log norm")
    path = Path(fig_dir) / "toy_norms.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return [path]


def broken_plot(table: pd.DataFrame, config: dict, fig_dir: Path) -> list[Path]:
    raise RuntimeError("this plot always fails")


TOY = Experiment(id="toy", paper="tests", summary="toy sweep experiment",
                 config_cls=ToyConfig, run=run, plot=plot, quick={"repeats": 5})

TOY_BROKEN_PLOT = Experiment(id="toy-broken-plot", paper="tests", summary="plot raises",
                             config_cls=ToyConfig, run=run, plot=broken_plot,
                             quick={"repeats": 5})

def flaky_run(config: ToyConfig, ctx: RunContext) -> pd.DataFrame:
    """``run``, but seeds listed in $SWEEP_TOY_FLAKY_SEEDS hit a transient failure (like a
    node going away) that is not part of the config."""
    flaky = {int(s) for s in os.environ.get("SWEEP_TOY_FLAKY_SEEDS", "").split(",") if s}
    if config.seed in flaky:
        raise RuntimeError(f"transient failure for seed {config.seed}")
    return run(config, ctx)


FLAKY = Experiment(id="toy-flaky", paper="tests", summary="transient failures",
                   config_cls=ToyConfig, run=flaky_run, plot=plot, quick={"repeats": 5})

NOT_AN_EXPERIMENT = 42
