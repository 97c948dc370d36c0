r"""``vanishing-gradient`` (P1 Fig. 5): the cross-entropy gradient at initialisation is led by
the mismatch between the mean softmax output :math:`\bar p` and the label prior :math:`q`.

P1 Eq. 10. Writing the logit Jacobians as :math:`J_s = C + E_s` (a mean :math:`C` shared by
all samples plus per-sample deviations),

.. math::
   \nabla L = \frac1S\sum_s J_s^\top(p_s - y_s) = C^\top(\bar p - q)
              + \frac1S\sum_s E_s^\top(p_s - y_s),

so the gradient has a data-independent part along :math:`C^\top(\bar p - q)` and a
data-specific part (class-conditional structure of the logit gradients plus sampling noise of
order :math:`\sigma_E\sqrt{d/S}`). It nearly vanishes when :math:`\bar p = q` however poor the
individual predictions are, and in a random ``d``-dim subspace its norm grows linearly with
:math:`\|q-\bar p\|_2`, slope :math:`\sqrt d\,\sigma_c` for a random :math:`C` with i.i.d.
entries of variance :math:`\sigma_c^2` (:func:`goldilocks_zone.theory.predicted_gradient_slope`).

Part (a), ``part="cosine"``: cosines of full-batch gradients (all ``D`` parameters) at one
initialisation on several data sets of one input shape: two disjoint class-balanced samples of
``dataset``, a balanced sample of ``other_dataset``, balanced Gaussian inputs, and versions of
the three with one class-imbalanced prior :math:`q_{imb}` (Cui et al.'s exponential profile,
``imbalance_ratio``); at the reference scale (:math:`\alpha = 1`, :math:`\bar p` far from
uniform) and at a downscaled init where :math:`\bar p` is uniform to ``uniform_tolerance``.
Expected at uniform :math:`\bar p`: two samples of one distribution give nearly parallel
gradients, different distributions with balanced priors nearly orthogonal ones (the shared
part is zero), and the imbalanced sets align through :math:`C^\top(\bar p - q_{imb})`, random
data included; at the reference scale gradients of different data sets align.

Part (b), ``part="prior"``: at a fixed init (``prior_scale``), ``num_priors`` priors drawn
uniformly from the simplex and a subset of ``prior_samples`` points following each (from
``dataset``, and from Gaussian inputs when ``prior_on_gaussian``); the projected gradient norm
:math:`\|R^\top\nabla L\|` (``d = dim``) and the full :math:`\|\nabla L\|` against
:math:`\|q - \bar p\|_2`, with a least-squares line (slope, intercept, :math:`R^2`) beside
Eq. 10's slopes: ``predicted_slope`` :math:`= \sqrt{d\,\sigma_c^2}` (:math:`\sigma_c^2` of
:math:`C = \frac1S\sum_s J_sR` on a balanced sample), ``predicted_slope_centered``
:math:`= \|P_\perp C\|_F/\sqrt{K-1}` with :math:`P_\perp = I - \mathbf 1\mathbf 1^\top/K`
(the gain on directions summing to zero; recommended for real networks), the same two in full
space (``predicted_slope_full``, ``predicted_slope_full_centered``, from
:math:`\frac1S\sum_s J_s \in \mathbb{R}^{K\times D}`) and the authors' line
``predicted_slope_authors`` :math:`= d\,\sigma_c` against the full gradient norm
(:func:`goldilocks_zone.theory.authors_gradient_slope`). Expected: a linear trend through
(nearly) the origin. ``ddof`` sets the divisor ``n - ddof`` of :math:`\sigma_c^2, \sigma_E^2`
(1 is the authors' ``torch.std``). docs/experiments.md derives the constants.
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

from goldilocks_zone.curvature.random import numpy_generator
from goldilocks_zone.experiments._shared.base import RunContext, register_module
from goldilocks_zone.experiments._shared.common import torch_device, torch_dtype
from goldilocks_zone.experiments._shared.config import (
    DdofConfig,
    NetworkConfig,
    SubspaceConfig,
    common,
    knob,
)
from goldilocks_zone.experiments._shared.plotting import new_figure, save_figure, style_axis

GAUSSIAN = "gaussian"


@dataclass
class Config(DdofConfig, NetworkConfig, SubspaceConfig):
    num_samples: int = common(
        "num_samples", 5000, "points per data set in part (a) (capped by the data)")

    other_dataset: str = knob("mnist-5k",
                              "second real data set of the same input shape ('' to skip)")
    imbalance_ratio: float = knob(100.0, "largest/smallest class of the imbalanced sets")
    reference_scale: float = knob(1.0, "alpha of the reference init in (a); 0 to skip")
    uniform_scale: float | None = knob(None, "alpha with uniform p-bar in (a); none: automatic")
    uniform_tolerance: float = knob(1e-3, "automatic uniform_scale: ||p-bar - 1/K|| <= this")
    num_priors: int = knob(2000, "priors q drawn in part (b)")
    prior_samples: int = knob(5000, "points per prior subset")
    prior_scale: float = knob(1.0, "alpha of the init in (b)")
    prior_on_gaussian: bool = knob(True, "also run (b) on random Gaussian inputs")
    full_gradient: bool = knob(True, "(b): also the full-space gradient norm")
    data_seed: int = knob(0, "seed of subsamples and priors")

    def validate(self) -> None:
        super().validate()
        if self.num_samples < 2 or self.prior_samples < 2:
            raise ValueError("num_samples and prior_samples must be >= 2")
        if self.num_priors < 3:
            raise ValueError("num_priors must be >= 3 to fit a line")
        if self.imbalance_ratio < 1:
            raise ValueError("imbalance_ratio must be >= 1")
        if self.reference_scale < 0 or not math.isfinite(self.reference_scale):
            raise ValueError("reference_scale must be >= 0 (0 skips it)")
        if self.uniform_scale is not None and not self.uniform_scale > 0:
            raise ValueError("uniform_scale must be positive (or none for automatic)")
        if not self.prior_scale > 0:
            raise ValueError("prior_scale must be positive")


QUICK = {"num_samples": 1500, "num_priors": 120, "prior_samples": 1000}


# ------------------------------------------------------------------------------ data sets


def _load_full(name: str, like: Any, *, seed: int, size: int) -> Any:
    """The training split of ``name``; for ``gaussian``, ``size`` fresh N(0, 1) inputs shaped
    like ``like``'s with its number of classes and a uniform prior."""
    from goldilocks_zone import data as data_lib

    if name == GAUSSIAN:
        return data_lib.load(GAUSSIAN, num_samples=size, seed=seed,
                             input_shape=tuple(like.input_shape), num_classes=like.num_classes)
    return data_lib.load(name, split="train")


def _disjoint_balanced(ds: Any, n: int, parts: int, seed: int) -> list[Any]:
    """``parts`` disjoint class-balanced subsets of ``ds`` of (at most) ``n`` points each."""
    rng = numpy_generator(seed)
    targets = ds.targets.cpu().numpy()
    k = ds.num_classes
    per_class = min(n // k, min(int((targets == c).sum()) for c in range(k)) // parts)
    if per_class < 1:
        raise ValueError(f"{ds.name}: too few samples per class for {parts} balanced subsets")
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_class * parts]
             for c in range(k)]
    return [ds.subset(rng.permutation(np.concatenate([p[i * per_class:(i + 1) * per_class]
                                                      for p in picks])))
            for i in range(parts)]


def imbalanced_prior(num_classes: int, ratio: float) -> np.ndarray:
    """Cui et al.'s exponential profile normalised to a prior: q_k ∝ ratio^{-k/(K-1)}."""
    k = np.arange(num_classes)
    w = float(ratio) ** (-k / max(num_classes - 1, 1))
    return w / w.sum()


def _imbalanced(ds: Any, prior: np.ndarray, n: int, seed: int) -> Any:
    """``n`` points (capped so that no class needs more than it has) following ``prior``."""
    from goldilocks_zone import data as data_lib

    counts = ds.class_counts.numpy()
    cap = int(np.floor(np.min(counts / np.maximum(prior, 1e-300))))
    return data_lib.subset_with_prior(ds, prior, min(n, cap), seed=seed, counts="rounded",
                                      replace=False)


def cosine_datasets(config: Config) -> dict[str, Any]:
    """The data sets of part (a), by display name, in plotting order."""
    from goldilocks_zone import data as data_lib

    main = data_lib.load(config.dataset, split="train")
    n = config.num_samples
    first, second = _disjoint_balanced(main, n, 2, config.data_seed)
    sets: dict[str, Any] = {f"{config.dataset} #1": first, f"{config.dataset} #2": second}
    sources = [(config.dataset, main)]
    if config.other_dataset:
        other = _load_full(config.other_dataset, main, seed=config.data_seed, size=4 * n)
        if tuple(other.input_shape) != tuple(main.input_shape) or \
                other.num_classes != main.num_classes:
            raise ValueError(
                f"other_dataset {config.other_dataset!r} has input shape "
                f"{tuple(other.input_shape)} and {other.num_classes} classes; "
                f"{config.dataset!r} has {tuple(main.input_shape)} and {main.num_classes}. "
                "Pick a data set of the same shape (e.g. mnist-5k for fashion-mnist) or ''")
        sets[config.other_dataset] = _disjoint_balanced(other, n, 1, config.data_seed)[0]
        sources.append((config.other_dataset, other))
    gauss = _load_full(GAUSSIAN, main, seed=config.data_seed, size=4 * n)
    sets[GAUSSIAN] = _disjoint_balanced(gauss, n, 1, config.data_seed)[0]
    sources.append((GAUSSIAN, gauss))
    prior = imbalanced_prior(main.num_classes, config.imbalance_ratio)
    for name, full in sources:
        sets[f"{name} imb×{config.imbalance_ratio:g}"] = _imbalanced(full, prior, n,
                                                                     config.data_seed + 7)
    return sets


# ---------------------------------------------------------------------------- measurements


def _evaluate(model: nn.Module, ds: Any, scale: float, config: Config, *, gradient: bool):
    from goldilocks_zone.training.gradient_descent import evaluate, initial_params

    dt, dev = torch_dtype(config.dtype), torch_device(config.device)
    params = initial_params(model, scale=scale)
    return evaluate(model, params, (ds.inputs.to(dtype=dt, device=dev), ds.targets.to(dev)),
                    batch_size=config.batch_size, with_gradient=gradient)


def find_uniform_scale(model: nn.Module, ds: Any, config: Config) -> tuple[float, float]:
    """Largest :math:`\\alpha = 10^{-k/4}` (k = 0, 1, ...) with
    :math:`\\|\\bar p(\\alpha) - \\mathbf 1/K\\|_2 \\le` ``uniform_tolerance``; returns
    ``(alpha, distance)``."""
    dist = math.nan
    for k in range(0, 41):
        alpha = 10.0 ** (-k / 4)
        ev = _evaluate(model, ds, alpha, config, gradient=False)
        uniform = torch.full_like(ev.mean_probs, 1.0 / ev.mean_probs.numel())
        dist = float((ev.mean_probs - uniform).norm())
        if dist <= config.uniform_tolerance:
            return alpha, dist
    raise ValueError(f"no scale down to 1e-10 makes the mean softmax output uniform to "
                     f"{config.uniform_tolerance} (last distance {dist:.3g}); pass "
                     "uniform_scale explicitly")


def cosine_rows(model: nn.Module, sets: dict[str, Any], scale: float, scale_kind: str,
                seed: int, config: Config) -> list[dict[str, Any]]:
    """Part (a): one row per unordered pair of data sets (and the diagonal)."""
    from goldilocks_zone.training.gradient_descent import cosine

    evs = {name: _evaluate(model, ds, scale, config, gradient=True) for name, ds in sets.items()}
    per_set = {name: {"grad_norm": float(ev.gradient.double().norm()),
                      "mismatch": float((ev.class_prior - ev.mean_probs).norm()),
                      "num_samples": ev.num_samples} for name, ev in evs.items()}
    names = list(sets)
    rows = []
    for i, a in enumerate(names):
        for j, b in enumerate(names[i:], start=i):
            rows.append({
                "part": "cosine", "scale": scale, "scale_kind": scale_kind, "seed": seed,
                "dataset_a": a, "dataset_b": b, "order_a": i, "order_b": j,
                "cosine": cosine(evs[a].gradient, evs[b].gradient),
                **{f"{column}_{side}": per_set[name][column] for column in per_set[a]
                   for side, name in (("a", a), ("b", b))},
            })
    return rows


def mean_logit_jacobian(model: nn.Module, inputs: Tensor, *, scale: float,
                        batch_size: int | None) -> Tensor:
    r""":math:`\frac1S\sum_s J_s` (K, D) float64, by one vmapped vjp per chunk with the K
    unit cotangents (no loop over samples or classes), eval mode (BatchNorm running
    statistics; the model is not touched)."""
    from torch.func import vjp, vmap

    from goldilocks_zone.curvature.batches import chunks
    from goldilocks_zone.curvature.functional import FunctionalModel, flatten_rows

    fm = FunctionalModel(model, scale=scale)
    total = None
    n = 0
    dummy = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
    with fm.mode(), torch.no_grad():
        for x, y in chunks((inputs, dummy), fm, batch_size, forward_mode=False):
            with torch.enable_grad():
                z, pullback = vjp(lambda p, x=x: fm.logits(p, x), fm.params)
            k = z.shape[1]
            cot = torch.eye(k, dtype=z.dtype, device=z.device)[:, None, :].expand(
                k, z.shape[0], k)
            grads = vmap(pullback)(cot)[0]
            flat = flatten_rows(grads).to(torch.float64).cpu()
            total = flat if total is None else total + flat
            n += y.shape[0]
    return total / n


def _centred_gain(mean_jacobian: Tensor) -> float:
    r""":math:`\|P_\perp C\|_F/\sqrt{K-1}` of a mean logit Jacobian :math:`C` (K rows)."""
    centred = mean_jacobian - mean_jacobian.mean(0, keepdim=True)
    return float(centred.norm()) / math.sqrt(max(mean_jacobian.shape[0] - 1, 1))


def slope_predictions(model: nn.Module, ds: Any, basis: Tensor, scale: float,
                      config: Config) -> dict[str, float]:
    """Eq. 10's predicted slopes and noise scale from a class-balanced sample ``ds``."""
    from goldilocks_zone.curvature import projected_logit_jacobians
    from goldilocks_zone.theory import (
        authors_gradient_slope,
        fit_random_model,
        gradient_noise_scale,
        predicted_gradient_slope,
    )

    dt, dev = torch_dtype(config.dtype), torch_device(config.device)
    x, y = ds.inputs.to(dtype=dt, device=dev), ds.targets.to(dev)
    jac = projected_logit_jacobians(model, (x, y), basis, scale=scale,
                                    batch_size=config.batch_size)
    fit = fit_random_model(jac.jacobians, ddof=config.ddof)
    k, d = fit.logit_mean.shape
    out = {
        "predicted_slope": predicted_gradient_slope(fit.sigma_c2, d),
        "predicted_slope_centered": _centred_gain(fit.logit_mean),
        "predicted_slope_authors": authors_gradient_slope(fit.sigma_c2, d),
        "sigma_c2": fit.sigma_c2,
        "sigma_e2": fit.sigma_e2,
        "noise_scale": gradient_noise_scale(fit.sigma_e2, d, config.prior_samples),
    }
    if config.full_gradient:
        full = mean_logit_jacobian(model, x, scale=scale, batch_size=config.batch_size)
        out["predicted_slope_full"] = math.sqrt(full.numel() / k
                                                * float(full.var(correction=config.ddof)))
        out["predicted_slope_full_centered"] = _centred_gain(full)
    else:
        out["predicted_slope_full"] = out["predicted_slope_full_centered"] = math.nan
    return out


def prior_rows(model: nn.Module, source: str, basis: Tensor, seed: int, config: Config,
               ctx: RunContext) -> list[dict[str, Any]]:
    """Part (b) on ``source`` (a registry name or ``gaussian``)."""
    from goldilocks_zone import data as data_lib

    main = data_lib.load(config.dataset, split="train")
    k = main.num_classes
    if source == GAUSSIAN:
        pool = None
        reference = _load_full(GAUSSIAN, main, seed=config.data_seed + 1,
                               size=config.prior_samples)
    else:
        pool = main if source == config.dataset else data_lib.load(source, split="train")
        reference = _disjoint_balanced(pool, config.prior_samples, 1, config.data_seed)[0]
    predictions = slope_predictions(model, reference, basis, config.prior_scale, config)
    priors = data_lib.sample_simplex_priors(config.num_priors, k, seed=config.data_seed)
    rows = []

    def subset_for(q: Tensor, i: int) -> Any:
        if pool is None:
            return data_lib.load(GAUSSIAN, num_samples=config.prior_samples,
                                 seed=config.data_seed + 1000 + i,
                                 input_shape=tuple(main.input_shape), num_classes=k,
                                 prior=q.tolist())
        return data_lib.subset_with_prior(pool, q, config.prior_samples,
                                          seed=config.data_seed + 1000 + i)

    # The vanishing point: a subset whose prior matches the model's mean output, q = p-bar
    # (a fixed point, since p-bar depends on the subset's class mix: three updates suffice).
    matched = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(3):
        ev = _evaluate(model, subset_for(matched, -1), config.prior_scale, config,
                       gradient=False)
        matched = ev.mean_probs.clamp_min(0.0) / ev.mean_probs.sum()
    jobs = [(-1, matched)] + [(i, priors[i]) for i in range(config.num_priors)]
    for i, q in ctx.progress(jobs, total=len(jobs), desc=f"priors on {source}"):
        ev = _evaluate(model, subset_for(q, i), config.prior_scale, config, gradient=True)
        grad = ev.gradient.to(torch.float64)
        projected = basis.to(device=grad.device, dtype=torch.float64).T @ grad
        rows.append({
            "part": "prior", "dataset_a": source, "scale": config.prior_scale, "seed": seed,
            "prior_index": i, "prior_kind": "matched" if i < 0 else "simplex",
            "num_samples": ev.num_samples, "dim": basis.shape[1],
            "mismatch": float((ev.class_prior - ev.mean_probs).norm()),
            "projected_grad_norm": float(projected.norm()),
            "grad_norm": float(grad.norm()) if config.full_gradient else math.nan,
            "prior_max": float(ev.class_prior.max()),
            "loss": ev.loss, "accuracy": ev.accuracy,
            **predictions,
        })
    return rows


def line_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line ``y = slope x + intercept`` with :math:`R^2`, the standard error
    of the slope, and ``intercept_ratio`` = intercept / (slope · median x) (how far from the
    origin the line passes, relative to a typical point)."""
    from scipy import stats

    mask = np.isfinite(x) & np.isfinite(y)
    x, y = x[mask], y[mask]
    if x.size < 3 or np.ptp(x) == 0:
        return dict.fromkeys(("slope", "intercept", "r2", "slope_stderr", "intercept_ratio"),
                             math.nan)
    fit = stats.linregress(x, y)
    typical = fit.slope * float(np.median(x))
    return {"slope": float(fit.slope), "intercept": float(fit.intercept),
            "r2": float(fit.rvalue ** 2), "slope_stderr": float(fit.stderr),
            "intercept_ratio": float(fit.intercept / typical) if typical != 0 else math.nan}


def prior_fits(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Line fits of part (b), keyed ``'<dataset> projected'`` / ``'<dataset> full'``."""
    out: dict[str, dict[str, float]] = {}
    prior = table[(table["part"] == "prior") & (table["prior_kind"] == "simplex")]
    for source, rows in prior.groupby("dataset_a", sort=False):
        x = rows["mismatch"].to_numpy(float)
        for column, kind, pred in (("projected_grad_norm", "projected", "predicted_slope"),
                                   ("grad_norm", "full", "predicted_slope_full")):
            y = rows[column].to_numpy(float)
            if not np.isfinite(y).any():
                continue
            fit = line_fit(x, y)
            fit["predicted_slope"] = float(rows[pred].iloc[0])
            fit["predicted_slope_centered"] = float(rows[pred + "_centered"].iloc[0])
            if kind == "full" and "predicted_slope_authors" in rows:
                fit["predicted_slope_authors"] = float(rows["predicted_slope_authors"].iloc[0])
            out[f"{source} {kind}"] = fit
    return out


def cosine_groups(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Pairs of part (a) grouped by what Eq. 10 predicts for them: two samples of one
    distribution; different distributions with balanced priors; different distributions
    sharing the same imbalanced prior."""
    same = [(names[0], names[1])]
    others = [n for n in names[2:] if "imb×" not in n]  # other distributions, balanced
    imbalanced = [n for n in names if "imb×" in n]
    cross = [(names[0], b) for b in others]
    cross += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
    shared = [(a, b) for i, a in enumerate(imbalanced) for b in imbalanced[i + 1:]]
    return {"same distribution": same, "different data, balanced": cross,
            "different data, same imbalanced prior": shared}


def cosine_summary(table: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """Mean cosine of each group of :func:`cosine_groups`, per scale kind."""
    cos = table[table["part"] == "cosine"]
    lookup = {(r.scale_kind, r.dataset_a, r.dataset_b): r.cosine for r in cos.itertuples()}
    out = {}
    for kind in ("reference", "uniform"):
        sel = cos[cos["scale_kind"] == kind]
        if not len(sel):
            continue
        parts = []
        for group, pairs in cosine_groups(names).items():
            values = [lookup.get((kind, a, b), lookup.get((kind, b, a), math.nan))
                      for a, b in pairs]
            values = [v for v in values if math.isfinite(v)]
            if values:
                parts.append(f"{group} {np.mean(values):+.2f}")
        out[f"{kind} init (alpha={float(sel['scale'].iloc[0]):.3g})"] = "; ".join(parts)
    return out


def run(config: Config, ctx: RunContext) -> pd.DataFrame:
    from goldilocks_zone import models as model_lib
    from goldilocks_zone.curvature import random_basis

    dt, dev = torch_dtype(config.dtype), torch_device(config.device)
    sets = cosine_datasets(config)
    first = next(iter(sets.values()))
    ctx.record("datasets", {name: {"fingerprint": ds.fingerprint, "num_samples": len(ds),
                                   "prior": [round(float(v), 4) for v in ds.prior]}
                            for name, ds in sets.items()})
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for seed in config.seeds:
        model = model_lib.create(config.model, tuple(first.input_shape), first.num_classes,
                                 activation=config.activation, init=config.init,
                                 seed=seed).to(dtype=dt, device=dev)
        alpha_u = config.uniform_scale
        if alpha_u is None:
            alpha_u, dist = find_uniform_scale(model, first, config)
            ctx.log(f"seed {seed}: uniform mean output at alpha = {alpha_u:.3g} "
                    f"(||p-bar - 1/K|| = {dist:.2g})")
        scales = [(alpha_u, "uniform")]
        if config.reference_scale > 0:
            scales.insert(0, (config.reference_scale, "reference"))
        for scale, kind in ctx.progress(scales, total=len(scales), desc="gradient cosines"):
            rows += cosine_rows(model, sets, scale, kind, seed, config)
        num_params = sum(p.numel() for p in model.parameters())
        basis = random_basis(num_params, config.dim, seed=seed, dtype=dt, device=dev)
        sources = [config.dataset] + ([GAUSSIAN] if config.prior_on_gaussian else [])
        for source in sources:
            rows += prior_rows(model, source, basis, seed, config, ctx)
    table = pd.DataFrame(rows)
    table["model"] = config.model
    fits = prior_fits(table)
    if "predicted_slope" in table:
        for kind in ("projected", "full"):
            table[f"fitted_slope_{kind}"] = table["dataset_a"].map(
                {key.rsplit(" ", 1)[0]: fit["slope"] for key, fit in fits.items()
                 if key.endswith(" " + kind)}).astype(float)
            table.loc[table["part"] != "prior", f"fitted_slope_{kind}"] = math.nan
    for key, fit in fits.items():
        authors = (f", authors' d*sigma_c {fit['predicted_slope_authors']:.4g}"
                   if "predicted_slope_authors" in fit else "")
        summary[f"Eq.10 fit ({key})"] = (
            f"slope {fit['slope']:.4g} (predicted {fit['predicted_slope']:.4g}, centred "
            f"{fit['predicted_slope_centered']:.4g}{authors}), intercept "
            f"{fit['intercept']:.3g} ({100 * fit['intercept_ratio']:.1f}% of a typical value), "
            f"R² {fit['r2']:.3f}")
    for kind, text in cosine_summary(table, list(sets)).items():
        summary[f"gradient cosines, {kind}"] = text
    ctx.record("fits", fits)
    ctx.record("summary", summary)
    return table


# ----------------------------------------------------------------------------------- figures


def plot(table: pd.DataFrame, config: Config, fig_dir: Path) -> list[Path]:
    paths: list[Path] = []
    cos = table[table["part"] == "cosine"]
    if len(cos):
        kinds = [k for k in ("reference", "uniform") if k in set(cos["scale_kind"])]
        names = (cos.drop_duplicates("dataset_a").sort_values("order_a")["dataset_a"].tolist())
        n = len(names)
        fig, axes = new_figure(len(kinds), 1, width=0.42 * n + 1.6, height=0.42 * n + 1.2)
        image = None
        for ax, kind in zip(axes[0], kinds):
            sel = cos[cos["scale_kind"] == kind]
            mean = sel.groupby(["order_a", "order_b"])["cosine"].mean()
            matrix = np.full((n, n), np.nan)
            for (i, j), v in mean.items():
                matrix[int(i), int(j)] = matrix[int(j), int(i)] = v
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
            for (i, j), v in np.ndenumerate(matrix):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                            color="white" if abs(v) > 0.6 else "black")
            ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(n), names if ax is axes[0, 0] else [""] * n, fontsize=7)
            ax.grid(False)
            alpha = float(sel["scale"].iloc[0])
            mis = sel.groupby("dataset_a")["mismatch_a"].first()
            ax.set_title(f"{'reference init' if kind == 'reference' else 'uniform mean output'}"
                         f", $\\alpha$ = {alpha:.3g}\n"
                         f"$\\|q-\\bar p\\|$ on balanced sets ≈ "
                         f"{float(mis.get(names[0], np.nan)):.2g}", fontsize=8)
        if image is not None:
            fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                         label=r"cosine of full-batch gradients")
        paths += save_figure(fig, fig_dir, "gradient_cosines", tight_layout=False)

    prior = table[table["part"] == "prior"]
    if len(prior):
        sources = list(dict.fromkeys(prior["dataset_a"]))
        kinds = [("projected_grad_norm", "predicted_slope",
                  r"$\|R^\top\nabla L\|$" + f" (d = {int(prior['dim'].iloc[0])})",
                  r"$\sqrt{d}\,\sigma_c$ (package)")]
        if np.isfinite(prior["grad_norm"].to_numpy(float)).any():
            kinds.append(("grad_norm", "predicted_slope_full", r"$\|\nabla L\|$ (full space)",
                          r"$\sqrt{D}\,\sigma_c^{full}$"))
        fig, axes = new_figure(len(kinds), len(sources), width=3.3, height=2.7)
        for r, source in enumerate(sources):
            rows_all = prior[prior["dataset_a"] == source]
            rows = rows_all[rows_all["prior_kind"] == "simplex"]
            matched = rows_all[rows_all["prior_kind"] == "matched"]
            x = rows["mismatch"].to_numpy(float)
            for c, (col, pred, ylabel, symbol) in enumerate(kinds):
                ax = axes[r, c]
                y = rows[col].to_numpy(float)
                ax.scatter(x, y, s=5, alpha=0.45, color="tab:blue", lw=0,
                           label=f"{len(rows)} priors from the simplex")
                if len(matched):
                    ax.scatter(matched["mismatch"], matched[col], marker="*", s=60,
                               color="tab:green", zorder=4, label=r"$q = \bar p$")
                fit = line_fit(x, y)
                grid = np.linspace(0, max(float(np.nanmax(x)), 1e-12) * 1.05, 50)
                ax.plot(grid, fit["slope"] * grid + fit["intercept"], color="k", lw=1.2,
                        label=f"fit: slope {fit['slope']:.3g}, $R^2$ {fit['r2']:.2f}\n"
                              f"intercept {fit['intercept']:.2g}")
                lines = [(pred, "--", "tab:red", 1.1, f"Eq. 10: {symbol} ="),
                         (pred + "_centered", ":", "tab:orange", 1.3, "Eq. 10, centred C:")]
                if col == "grad_norm" and "predicted_slope_authors" in rows:
                    lines.append(("predicted_slope_authors", "-.", "tab:purple", 1.3,
                                  r"authors: $d\,\sigma_c$ ="))
                for column, style, color, lw, name in lines:
                    slope = float(rows[column].iloc[0])
                    ax.plot(grid, slope * grid, style, color=color, lw=lw,
                            label=f"{name} {slope:.3g}")
                style_axis(ax, xlim=(0, grid[-1]), ylim=(0, None),
                           xlabel=r"prior mismatch $\|q - \bar p\|_2$", ylabel=ylabel,
                           title=f"{source}, $\\alpha$ = {float(rows['scale'].iloc[0]):.3g}, "
                                 f"{int(rows['num_samples'].median())} points per prior",
                           title_size=8, legend={"fontsize": 6, "loc": "upper left"})
        paths += save_figure(fig, fig_dir, "gradient_vs_prior_mismatch")
    return paths


register_module(
    __name__, id="vanishing-gradient",
    paper="P1 Fig. 5",
    summary="gradient cosines across data sets; gradient norm vs prior mismatch (Eq. 10)",
    key_columns=("part", "scale", "dim"),
)
