r"""``logit-clustering`` (P2 Fig. 1–2): logit gradients cluster by logit and by class.

Protocol. For each dataset, architecture (an MLP and a CNN) and activation (ReLU, tanh), build
the network with ``seed`` and measure, on a class-balanced subset of ``num_samples`` training
images, the per-sample logit gradients :math:`\nabla_\theta z_k(x_\mu)` — the rows of the
per-sample Jacobians, computed with ``vmap(jacrev(...))`` in chunks of ``chunk_size`` samples —
at initialisation and after a short minibatch-SGD training (``train_steps`` steps on
``train_samples`` images). Report P2's clustering metrics, mean cosines over pairs of distinct
samples (:class:`goldilocks_zone.theory.random_model.CosineAccumulator`, exact and streamed):

* :math:`q_{SLSC}`: same logit, same class;
* :math:`q_{SL}`: same logit, different classes;
* :math:`q_{DL}`: different logits.

Expected: :math:`q_{SLSC} > q_{SL} > q_{DL} \approx 0` for every dataset, architecture,
activation and stage (the clustering that P2's random model assumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import torch_dtype
from goldilocks_zone.experiments._shared.config import (
    PrecisionConfig,
    SamplesConfig,
    SeedsConfig,
    SGDConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.functional_training import (
    Params,
    accuracy_and_loss,
    load_split,
    model_params,
    per_sample_jacobians,
)
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure
from goldilocks_zone.training.minibatch import sgd_trajectory

STAGES = ("init", "trained")


def clustering(model: nn.Module, params: Params, inputs: Tensor, targets: Tensor,
               num_classes: int, *, chunk_size: int = 16):
    """:class:`~goldilocks_zone.theory.random_model.LogitGradientCosines` of the network at
    ``params`` on ``(inputs, targets)``, streamed over Jacobian chunks."""
    from goldilocks_zone.theory.random_model import CosineAccumulator

    acc = CosineAccumulator(num_classes)
    for i, jac in enumerate(per_sample_jacobians(model, params, inputs, chunk_size=chunk_size)):
        sl = slice(i * chunk_size, i * chunk_size + jac.shape[0])
        acc.update(jac, targets[sl])
    return acc.result()


# --------------------------------------------------------------------------- experiment


@dataclass
class Config(SGDConfig, SeedsConfig, SamplesConfig, PrecisionConfig):
    num_samples: int = common("num_samples", 300, "class-balanced samples whose Jacobians are used")
    dtype: str = common("dtype", "float32")
    train_steps: int = knob(500, "minibatch SGD steps")

    datasets: tuple[str, ...] = knob(("fashion-mnist", "mnist-5k"), "dataset registry names")
    models: tuple[str, ...] = knob(("mlp", "small-cnn"), "an MLP and a CNN (registry names)")
    activations: tuple[str, ...] = knob(("relu", "tanh"), "hidden activations")
    init: str = knob("kaiming", "kaiming or xavier")
    chunk_size: int = knob(16, "samples per Jacobian chunk")

    def validate(self) -> None:
        super().validate()
        for name in ("datasets", "models", "activations"):
            if not getattr(self, name):
                raise ValueError(f"{name} must list at least one entry")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


QUICK = {"datasets": ("digits", "mnist-5k"), "num_samples": 100, "train_samples": 1000,
         "train_steps": 150}


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import models as model_lib

    dtype = torch_dtype(config.dtype)
    rows: list[dict[str, Any]] = []
    settings = [(ds, m, a, s) for ds in config.datasets for m in config.models
                for a in config.activations for s in config.seeds]
    cache: dict[str, Any] = {}
    for ds_name, model_name, act, seed in ctx.progress(settings, total=len(settings),
                                                         desc="logit-clustering"):
        if ds_name not in cache:
            train, probe = cache[ds_name] = load_split(
                ds_name, train_samples=config.train_samples, probe_samples=config.num_samples,
                data_seed=config.data_seed, dtype=dtype)
            ctx.record(f"dataset:{ds_name}", {"train_samples": len(train),
                                              "probe_samples": len(probe),
                                              "fingerprint": train.fingerprint})
        train, probe = cache[ds_name]
        net = model_lib.create(model_name, tuple(train.input_shape), train.num_classes,
                               activation=act, bias=config.bias, init=config.init,
                               seed=seed).to(dtype)
        theta0 = model_params(net)
        traj = sgd_trajectory(net, theta0, train.inputs, train.targets,
                              steps=config.train_steps, lr=config.lr,
                              batch_size=config.batch_size, seed=seed, yield_at=(0,))
        for step, theta in traj:
            stage = "init" if step == 0 else "trained"
            q = clustering(net, theta, probe.inputs, probe.targets, train.num_classes,
                           chunk_size=config.chunk_size)
            acc, loss = accuracy_and_loss(net, theta, train.inputs, train.targets)
            rows.append({"dataset": ds_name, "model": model_name, "activation": act,
                         "seed": seed, "stage": stage, "step": step, **q.as_dict(),
                         "pairs_slsc": q.pairs_slsc, "pairs_sl": q.pairs_sl,
                         "pairs_dl": q.pairs_dl, "train_accuracy": acc, "train_loss": loss,
                         "num_params": sum(t.numel() for t in theta.values()),
                         "num_samples": len(probe)})
            if config.train_steps == 0:
                break
    table = pd.DataFrame(rows)
    ctx.record("summary", summarise(table))
    return table


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Ordering check per setting and the q values (mean over seeds)."""
    keys = ["dataset", "model", "activation", "stage"]
    g = table.groupby(keys)[["q_slsc", "q_sl", "q_dl", "train_accuracy"]].mean()
    ordered = (g["q_slsc"] > g["q_sl"]) & (g["q_sl"] > g["q_dl"])
    return {
        "settings": int(len(g)),
        "ordering_holds": int(ordered.sum()),
        "max_abs_q_dl": float(g["q_dl"].abs().max()),
        "q": {"/".join(map(str, k)): [round(float(v), 4) for v in row[["q_slsc", "q_sl",
                                                                       "q_dl"]]]
              for k, row in g.iterrows()},
        "trained_accuracy": {"/".join(map(str, k[:3])): round(float(v), 4)
                             for k, v in g["train_accuracy"].items() if k[3] == "trained"},
    }


# --------------------------------------------------------------------------- figure


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    datasets = list(dict.fromkeys(table["dataset"]))
    combos = list(dict.fromkeys(zip(table["model"], table["activation"])))
    stages = [s for s in STAGES if s in set(table["stage"])]
    fig, axes = new_figure(len(combos), len(datasets), width=2.5, height=2.3, sharey=True)
    metrics = [("q_slsc", r"$q_{SLSC}$"), ("q_sl", r"$q_{SL}$"), ("q_dl", r"$q_{DL}$")]
    colors = {"init": "C0", "trained": "C1"}
    width = 0.8 / max(len(stages), 1)
    x = np.arange(len(metrics))
    for r, ds in enumerate(datasets):
        for c, (model, act) in enumerate(combos):
            ax = axes[r][c]
            sub = table[(table["dataset"] == ds) & (table["model"] == model)
                        & (table["activation"] == act)]
            accs = []
            for i, stage in enumerate(stages):
                st = sub[sub["stage"] == stage]
                if st.empty:
                    continue
                means = [float(st[m].mean()) for m, _ in metrics]
                errs = ([float(st[m].std()) for m, _ in metrics]
                        if st["seed"].nunique() > 1 else None)
                accs.append(f"{100 * float(st['train_accuracy'].mean()):.0f}%")
                ax.bar(x + (i - (len(stages) - 1) / 2) * width, means, width, yerr=errs,
                       color=colors.get(stage, f"C{i}"), capsize=2,
                       label=stage if (r, c) == (0, 0) else None)
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.set_xticks(x, [lab for _, lab in metrics])
            ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.0)
            ax.set_title(f"{ds}: {model}, {act}\ntrain acc " + " → ".join(accs), fontsize=8.5)
            ax.grid(axis="x", visible=False)
            if c == 0:
                ax.set_ylabel("mean cosine")
    fig.legend(loc="upper right", ncol=len(stages), fontsize=8, frameon=False,
               title="stage", title_fontsize=8)
    fig.suptitle("Clustering of logit gradients: same logit & class > same logit > "
                 "different logits ≈ 0", fontsize=10, x=0.4)
    return save_figure(fig, fig_dir, "logit_clustering")


register_module(
    __name__, id="logit-clustering",
    paper="P2",
    summary="q_SLSC > q_SL > q_DL ~ 0: cosines of per-sample logit gradients of MLPs and CNNs "
            "(ReLU, tanh) at init and after training, on real data",
    key_columns=("dataset", "model", "activation", "stage"),
)
