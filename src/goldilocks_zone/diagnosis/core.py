r"""Is my model's initialisation in the Goldilocks zone? A diagnostic for any classifier.

:func:`diagnose` measures, at the model's *current* parameters (never modified: everything is
evaluated functionally),

* the positive curvature :math:`\kappa = \operatorname{Tr}H_R/\|H_R\|_F` and the fraction of
  positive eigenvalues :math:`\pi` of the Hessian restricted to a random ``dim``-dimensional
  subspace, with the spectral norms of its Gauss–Newton G-term and H-term (P1's fundamental
  condition for positive curvature is :math:`\|G_R\|_2 \gtrsim \|H_R\|_2`);
* :math:`\kappa` along the softmax temperature axis (logits divided by ``T``; works for any
  model) and, for positively homogeneous models (:func:`goldilocks_zone.models.homogeneity`),
  along the weight-scale axis :math:`\theta \to \alpha\theta` — for those the two are exactly
  equivalent, :math:`\kappa(\alpha) = \kappa(T = \alpha^{-L})`;
* the temperature (and scale) that maximises :math:`\kappa`, and the *zone*: the contiguous
  range around the maximum where :math:`\kappa \ge` ``zone_fraction`` :math:`\cdot
  \kappa_{\max}`;
* the prior mismatch :math:`\|q - \bar p\|_2` (mean softmax output vs label frequencies) and the
  gradient norm, which P1 Eq. 10 ties together.

Verdict rules (``Diagnosis.verdict``): if :math:`\kappa_{\max} <` ``min_peak`` along the
temperature axis there is no zone to speak of (``"no zone"``); otherwise ``T = 1`` inside the
zone gives ``"inside"``; a maximising temperature below 1 means the outputs are too soft — the
logits are too small, e.g. weights too small (``"below"``: sharpen the outputs, scale up by
:math:`\alpha^\star = (T^\star)^{-1/L}` for homogeneous models); above 1 means the softmax is
saturated (``"above"``: soften, scale down).

The command line ``goldilocks diagnose`` wraps it (see :func:`cli_main`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

__all__ = ["Diagnosis", "cli_main", "diagnose", "load_model"]

#: Temperatures scanned by default: 10^-6 .. 10^6, two points per decade (T = 1 included).
#: Wide on purpose: near T = 1e-4 a few samples close to the decision boundary still keep the
#: G-term alive, so the low-temperature end of the zone can lie several decades below 1.
DEFAULT_TEMPERATURES = tuple(float(v) for v in np.logspace(-6, 6, 25))
#: Scales scanned by default for homogeneous models: 10^-2 .. 10^2, two points per decade.
DEFAULT_SCALES = tuple(float(v) for v in np.logspace(-2, 2, 9))
#: Samples used when the data are larger (a random subsample, seeded).
DEFAULT_NUM_SAMPLES = 1000


@dataclass(frozen=True)
class Diagnosis:
    """Where a model's current parameters sit relative to the Goldilocks zone.

    Scalars describe the current point (``T = 1``, ``alpha = 1``); ``temperature_sweep`` and
    ``scale_sweep`` are tables with columns ``temperature``/``scale``,
    ``positive_curvature``, ``fraction_positive``, ``g_spectral_norm``, ``h_spectral_norm``,
    ``loss``, ``accuracy``, ``prior_mismatch``.
    """

    num_params: int
    num_samples: int
    num_classes: int
    dim: int
    homogeneous: bool
    degree: int | None
    homogeneity_reason: str
    positive_curvature: float
    fraction_positive: float
    g_spectral_norm: float
    h_spectral_norm: float
    loss: float
    accuracy: float
    mean_probs: tuple[float, ...]
    class_prior: tuple[float, ...]
    prior_mismatch: float
    gradient_norm: float
    projected_gradient_norm: float
    temperature_sweep: pd.DataFrame = field(repr=False)
    scale_sweep: pd.DataFrame | None = field(repr=False)
    best_temperature: float
    best_temperature_kappa: float
    zone_temperatures: tuple[float, float] | None
    best_scale: float | None
    best_scale_kappa: float | None
    zone_scales: tuple[float, float] | None
    verdict: str
    advice: str
    zone_fraction: float
    model_name: str = ""

    @property
    def fundamental_condition(self) -> bool:
        r""":math:`\|G_R\|_2 \ge \|H_R\|_2` at the current point."""
        return self.g_spectral_norm >= self.h_spectral_norm

    def report(self) -> str:
        """A short human-readable report."""
        lines = [
            f"Goldilocks-zone diagnosis{f' of {self.model_name}' if self.model_name else ''}",
            f"  parameters D = {self.num_params:,}; {self.num_samples} samples, K = "
            f"{self.num_classes} classes; random subspace d = {self.dim}",
            f"  homogeneous: {f'yes, degree L = {self.degree}' if self.homogeneous else 'no'}"
            f" ({self.homogeneity_reason})",
            "",
            "At the current parameters (T = 1, alpha = 1):",
            f"  positive curvature kappa = {self.positive_curvature:.3f}  (range "
            f"[-{math.sqrt(self.dim):.2f}, {math.sqrt(self.dim):.2f}]; ~0 outside the zone)",
            f"  fraction of positive eigenvalues pi = {self.fraction_positive:.3f}",
            f"  ||G_R||_2 = {self.g_spectral_norm:.3g}  vs  ||H_R||_2 = "
            f"{self.h_spectral_norm:.3g}  -> fundamental condition "
            f"{'holds' if self.fundamental_condition else 'fails'}",
            f"  loss = {self.loss:.4g} (log K = {math.log(self.num_classes):.4g}), accuracy = "
            f"{self.accuracy:.3f}",
            f"  prior mismatch ||q - p_bar||_2 = {self.prior_mismatch:.3g}; gradient norm "
            f"||grad L|| = {self.gradient_norm:.3g} (projected {self.projected_gradient_norm:.3g})",
            "",
            f"Along the temperature axis ({len(self.temperature_sweep)} values, "
            f"{self.temperature_sweep['temperature'].min():.0e} .. "
            f"{self.temperature_sweep['temperature'].max():.0e}):",
            f"  max kappa = {self.best_temperature_kappa:.3f} at T* = "
            f"{self.best_temperature:.3g}",
        ]
        if self.zone_temperatures is not None:
            lo, hi = self.zone_temperatures
            lines.append(f"  zone (kappa >= {self.zone_fraction:g} max): T in "
                         f"[{lo:.3g}, {hi:.3g}]")
        if self.scale_sweep is not None and self.best_scale is not None:
            lines += ["", f"Along the weight-scale axis ({len(self.scale_sweep)} values):",
                      f"  max kappa = {self.best_scale_kappa:.3f} at alpha* = "
                      f"{self.best_scale:.3g}"]
            if self.zone_scales is not None:
                lines.append(f"  zone: alpha in [{self.zone_scales[0]:.3g}, "
                             f"{self.zone_scales[1]:.3g}]")
        lines += ["", f"Verdict: {self.verdict}. {self.advice}"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (sweeps as lists of records)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, pd.DataFrame):
                value = value.to_dict("records")
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        out["fundamental_condition"] = self.fundamental_condition
        return out

    def plot(self, path: str | Path) -> list[Path]:
        """Draw κ (and π) vs temperature, ‖G_R‖₂ and ‖H_R‖₂ vs temperature, and κ vs scale
        (homogeneous models); saved to ``path`` (its suffix picks the format; a ``.png`` path
        also gets a ``.pdf`` twin). Returns the written paths."""
        import matplotlib.pyplot as plt

        from goldilocks_zone.experiments._shared.plotting import new_figure

        path = Path(path)
        if path.suffix == "":
            path = path.with_suffix(".png")
        ncols = 3 if self.scale_sweep is not None else 2
        fig, axes = new_figure(ncols, 1, width=3.3, height=2.6)
        ts = self.temperature_sweep
        ax = axes[0, 0]
        ax.plot(ts["temperature"], ts["positive_curvature"], "o-", ms=3, color="tab:blue",
                label=r"$\kappa$")
        twin = ax.twinx()
        twin.plot(ts["temperature"], ts["fraction_positive"], "s--", ms=2.5, lw=0.8,
                  color="tab:gray")
        twin.set_ylim(0, 1)
        twin.set_ylabel(r"fraction positive $\pi$ (dashed)", color="tab:gray", fontsize=8)
        twin.grid(False)
        self._mark(ax, 1.0, self.positive_curvature, self.best_temperature,
                   self.best_temperature_kappa, self.zone_temperatures, "T")
        ax.set_xscale("log")
        ax.set_xlabel("softmax temperature T")
        ax.set_ylabel("positive curvature")
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        for col, colour, label in (("g_spectral_norm", "tab:green", r"$\|G_R\|_2$"),
                                   ("h_spectral_norm", "tab:red", r"$\|H_R\|_2$")):
            y = ts[col].to_numpy(float)
            mask = np.isfinite(y) & (y > 0)
            ax.plot(ts["temperature"].to_numpy()[mask], y[mask], "o-", ms=3, color=colour,
                    label=label)
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("softmax temperature T")
        ax.set_ylabel("spectral norm")
        ax.legend(fontsize=7)
        ax.set_title("fundamental condition: $\\|G_R\\|_2 \\gtrsim \\|H_R\\|_2$", fontsize=8)
        if self.scale_sweep is not None:
            ss = self.scale_sweep
            ax = axes[0, 2]
            ax.plot(ss["scale"], ss["positive_curvature"], "o-", ms=3, color="tab:purple",
                    label=r"$\kappa$")
            self._mark(ax, 1.0, self.positive_curvature, self.best_scale,
                       self.best_scale_kappa, self.zone_scales, r"\alpha")
            ax.set_xscale("log")
            ax.set_xlabel(r"weight scale $\alpha$")
            ax.set_ylabel("positive curvature")
            ax.legend(fontsize=7)
        fig.suptitle(f"{self.model_name or 'model'}: {self.verdict}", fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        paths = [path]
        if path.suffix == ".png":
            paths.append(path.with_suffix(".pdf"))
        for p in paths:
            fig.savefig(p, bbox_inches="tight")
        plt.close(fig)
        return paths

    @staticmethod
    def _mark(ax, now_x: float, now_y: float, best_x: float | None, best_y: float | None,
              zone: tuple[float, float] | None, symbol: str) -> None:
        if zone is not None:
            ax.axvspan(zone[0], zone[1], color="gold", alpha=0.25, lw=0, label="zone")
        ax.axvline(now_x, color="k", lw=0.8, ls=":")
        ax.plot([now_x], [now_y], "o", ms=7, mfc="none", mec="k", label="now")
        if best_x is not None and best_y is not None:
            ax.plot([best_x], [best_y], "*", ms=10, color="tab:orange",
                    label=f"${symbol}^\\star$ = {best_x:.2g}")


# ------------------------------------------------------------------------------- computation


def _as_pair(data: Any, num_samples: int | None) -> tuple[Tensor, Tensor]:
    """Tensor pairs and ``.inputs``/``.targets`` objects as they are (subsampled at random
    later); any other accepted data (a loader, a Dataset): its first ``num_samples``."""
    from goldilocks_zone.curvature.batches import take_samples

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        return data[0], data[1]
    if hasattr(data, "inputs") and hasattr(data, "targets"):
        return data.inputs, data.targets
    inputs, targets = take_samples(data, num_samples or 2**62)
    if not isinstance(inputs, Tensor):
        raise TypeError("diagnose needs tensor inputs; for dict or tuple batches call "
                        "subspace_curvature directly")
    return inputs, targets


def _curvature_sweep(name: str, values: Iterable[float], at_one: Any,
                     measure: Callable[[float], Any]) -> pd.DataFrame:
    """One row per ``name`` value (``values`` and 1.0, sorted, deduplicated) with the
    :func:`_sweep_row` statistics of ``measure(value)``; ``at_one`` is the measurement at 1.0."""
    grid = sorted(set(float(v) for v in values) | {1.0})
    if any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"{name}s must be positive numbers")
    return pd.DataFrame([{name: v, **_sweep_row(at_one if v == 1.0 else measure(v))}
                         for v in grid])


def _zone(xs: np.ndarray, kappa: np.ndarray, fraction: float
          ) -> tuple[int, tuple[float, float] | None]:
    """Index of the maximum and the contiguous range around it with κ ≥ fraction · max."""
    finite = np.where(np.isfinite(kappa), kappa, -np.inf)
    best = int(np.argmax(finite))
    peak = finite[best]
    if not np.isfinite(peak) or peak <= 0:
        return best, None
    lo = hi = best
    while lo > 0 and finite[lo - 1] >= fraction * peak:
        lo -= 1
    while hi < len(xs) - 1 and finite[hi + 1] >= fraction * peak:
        hi += 1
    return best, (float(xs[lo]), float(xs[hi]))


def _sweep_row(sc) -> dict[str, float]:
    h, g, hh = sc.stats("hessian"), sc.stats("g_term"), sc.stats("h_term")
    return {
        "positive_curvature": h.positive_curvature,
        "fraction_positive": h.fraction_positive,
        "g_spectral_norm": g.spectral_norm,
        "h_spectral_norm": hh.spectral_norm,
        "loss": sc.loss,
        "accuracy": sc.accuracy,
        "prior_mismatch": float((sc.class_prior - sc.mean_probs).norm()),
    }


def diagnose(model: nn.Module, data: Any, *, dim: int = 50, seed: int = 0,
             num_samples: int | None = DEFAULT_NUM_SAMPLES,
             temperatures: Sequence[float] | None = None,
             scales: Sequence[float] | None = None, scan_scales: bool | None = None,
             basis: str = "orthonormal", batch_size: int | None = None,
             zone_fraction: float = 0.5, min_peak: float = 0.5,
             model_name: str = "") -> Diagnosis:
    r"""Diagnose ``model``'s current initialisation relative to the Goldilocks zone.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits ``(batch, K)``; left
            untouched (parameters, ``requires_grad`` flags and train/eval modes).
        data: ``(inputs, targets)`` or an object with ``.inputs``/``.targets`` (a
            :class:`goldilocks_zone.data.Dataset`). Floating inputs are cast to the model's
            dtype and device.
        dim: subspace dimension ``d`` of the random basis (seeded by ``seed``).
        num_samples: use a random subsample of this many points (``None``: all).
        temperatures: temperature grid (default :data:`DEFAULT_TEMPERATURES`; ``T = 1`` is
            always measured).
        scales: weight-scale grid (default :data:`DEFAULT_SCALES`).
        scan_scales: scan the scales too; ``None`` (default) means "if the model is positively
            homogeneous" (for other models scale and temperature are not equivalent, but the
            scan is still defined when asked for).
        basis: ``"orthonormal"`` or ``"sparse"`` random basis.
        zone_fraction: the zone is where :math:`\kappa \ge` ``zone_fraction`` times its maximum.
        min_peak: a maximum of κ below this means no zone was found.
    """
    from goldilocks_zone.curvature import loss_gradient, random_basis, subspace_curvature
    from goldilocks_zone.models import homogeneity

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not 0 < zone_fraction < 1:
        raise ValueError(f"zone_fraction must lie in (0, 1), got {zone_fraction}")
    inputs, targets = _as_pair(data, num_samples)
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ValueError("the model has no parameters")
    if inputs.is_floating_point():
        inputs = inputs.to(dtype=first.dtype, device=first.device)
    targets = targets.to(device=first.device)
    if num_samples is not None and inputs.shape[0] > num_samples:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(inputs.shape[0], generator=gen)[:num_samples].to(first.device)
        inputs, targets = inputs[idx], targets[idx]
    pair = (inputs, targets)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # the basis rows
    if dim > num_params:
        raise ValueError(f"dim = {dim} exceeds the number of parameters ({num_params})")
    R = random_basis(num_params, dim, kind=basis, seed=seed, dtype=first.dtype,
                     device=first.device)
    hom = homogeneity(model)

    now = subspace_curvature(model, pair, R, batch_size=batch_size)
    grad = loss_gradient(model, pair, batch_size=batch_size)
    now_row = _sweep_row(now)

    t_table = _curvature_sweep(
        "temperature", temperatures or DEFAULT_TEMPERATURES, now,
        lambda t: subspace_curvature(model, pair, R, temperature=t, batch_size=batch_size))
    t_best, t_zone = _zone(t_table["temperature"].to_numpy(),
                           t_table["positive_curvature"].to_numpy(float), zone_fraction)

    do_scales = hom.is_homogeneous if scan_scales is None else bool(scan_scales)
    s_table = None
    s_best_x = s_best_k = None
    s_zone = None
    if do_scales:
        s_table = _curvature_sweep(
            "scale", scales or DEFAULT_SCALES, now,
            lambda s: subspace_curvature(model, pair, R, scale=s, batch_size=batch_size))
        idx, s_zone = _zone(s_table["scale"].to_numpy(),
                            s_table["positive_curvature"].to_numpy(float), zone_fraction)
        s_best_x = float(s_table["scale"].iloc[idx])
        s_best_k = float(s_table["positive_curvature"].iloc[idx])

    best_t = float(t_table["temperature"].iloc[t_best])
    best_k = float(t_table["positive_curvature"].iloc[t_best])
    verdict, advice = _verdict(now_row["positive_curvature"], best_t, best_k, t_zone,
                               hom.degree if hom.is_homogeneous else None, min_peak)
    return Diagnosis(
        num_params=num_params, num_samples=now.num_samples, num_classes=now.mean_probs.numel(),
        dim=dim, homogeneous=hom.is_homogeneous, degree=hom.degree,
        homogeneity_reason=hom.reason,
        positive_curvature=now_row["positive_curvature"],
        fraction_positive=now_row["fraction_positive"],
        g_spectral_norm=now_row["g_spectral_norm"], h_spectral_norm=now_row["h_spectral_norm"],
        loss=now.loss, accuracy=now.accuracy,
        mean_probs=tuple(float(v) for v in now.mean_probs),
        class_prior=tuple(float(v) for v in now.class_prior),
        prior_mismatch=now_row["prior_mismatch"], gradient_norm=float(grad.norm()),
        projected_gradient_norm=float(now.projected_gradient.norm()),
        temperature_sweep=t_table, scale_sweep=s_table,
        best_temperature=best_t, best_temperature_kappa=best_k, zone_temperatures=t_zone,
        best_scale=s_best_x, best_scale_kappa=s_best_k, zone_scales=s_zone,
        verdict=verdict, advice=advice, zone_fraction=zone_fraction, model_name=model_name,
    )


def _verdict(kappa_now: float, best_t: float, best_k: float,
             zone: tuple[float, float] | None, degree: int | None, min_peak: float
             ) -> tuple[str, str]:
    if not math.isfinite(best_k) or best_k < min_peak or zone is None:
        return ("no zone", f"kappa never exceeds {min_peak:g} along the temperature axis, so "
                "no Goldilocks zone was found for this model and data (try more samples or a "
                "wider temperature grid).")
    if zone[0] <= 1.0 <= zone[1]:
        return ("inside", "The current initialisation sits inside the Goldilocks zone.")
    alpha = f" (for this homogeneous model, equivalently scale the weights by alpha* = " \
            f"{best_t ** (-1.0 / degree):.3g})" if degree else ""
    if best_t < 1.0:
        return ("below", f"The outputs are too soft (logits too small, e.g. weights too "
                f"small): kappa peaks at a lower temperature T* = {best_t:.3g}, i.e. "
                f"sharper outputs{alpha}.")
    return ("above", f"The softmax is saturated (outputs over-confident, e.g. weights too "
            f"large): kappa peaks at a higher temperature T* = {best_t:.3g}{alpha}.")


# ------------------------------------------------------------------------------ command line


def load_model(spec: str, in_shape: tuple[int, ...], num_classes: int, *,
               activation: str = "relu", init: str = "kaiming", seed: int = 0) -> nn.Module:
    """Build a model from a registry name (``lenet-300-100``) or ``package.module:factory``.

    A factory is called with ``in_shape=...`` and/or ``num_classes=...`` for each of those
    parameter names it accepts (``input_shape`` is accepted as a synonym of ``in_shape``), and
    with no arguments otherwise; it must return an ``nn.Module``. The current directory is on
    the import path, so ``my_models:build`` finds ``./my_models.py``.
    """
    from goldilocks_zone import models

    if ":" not in spec:
        if spec not in models.names():
            raise ValueError(f"unknown model {spec!r}: give a registry name "
                             f"({', '.join(models.names())}) or package.module:factory")
        return models.create(spec, in_shape, num_classes, activation=activation, init=init,
                             seed=seed)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model {spec!r}: expected package.module:factory")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--model {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"--model {spec!r}: {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {attr!r} is not callable")
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "in_shape" in params:
        kwargs["in_shape"] = tuple(in_shape)
    elif "input_shape" in params:
        kwargs["input_shape"] = tuple(in_shape)
    if "num_classes" in params:
        kwargs["num_classes"] = int(num_classes)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r}: the factory returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None


def cli_main(argv: list[str]) -> int:
    """``goldilocks diagnose``: print the report; with ``--out DIR`` also write
    ``report.txt``, ``diagnosis.json``, ``temperature_sweep.csv`` (and ``scale_sweep.csv``)
    and ``diagnosis.png``/``.pdf``."""
    from goldilocks_zone import data as data_lib
    from goldilocks_zone.experiments._shared.common import torch_device, torch_dtype

    parser = argparse.ArgumentParser(
        prog="goldilocks diagnose",
        description="Where does a model's initialisation sit relative to the Goldilocks zone? "
        "Measures kappa and pi of the subspace Hessian now, along the softmax temperature "
        "(and, for homogeneous models, weight-scale) axis, ||G||_2 vs ||H||_2, the prior "
        "mismatch and the gradient norm.")
    parser.add_argument("--model", required=True,
                        help="registry name (e.g. lenet-300-100) or package.module:factory; a "
                        "factory is called with in_shape=/num_classes= when it accepts them, "
                        "else with no arguments")
    parser.add_argument("--dataset", required=True, help="registry data set name")
    parser.add_argument("--split", default="train", help="data split (default: train)")
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                        help=f"samples (default: {DEFAULT_NUM_SAMPLES})")
    parser.add_argument("--dim", type=int, default=50, help="subspace dimension d (default 50)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the basis, the subsample and registry models' init")
    parser.add_argument("--temperatures", type=_floats, default=None,
                        help="comma-separated temperatures (default 1e-6 .. 1e6)")
    parser.add_argument("--scales", type=_floats, default=None,
                        help="comma-separated weight scales (default 1e-2 .. 1e2)")
    parser.add_argument("--no-scales", action="store_true", help="skip the scale scan")
    parser.add_argument("--activation", default="relu", help="registry models only")
    parser.add_argument("--init", default="kaiming", help="registry models only")
    parser.add_argument("--dtype", default="float64", help="float64 (default) or float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for report, JSON, CSV, figure")
    args = parser.parse_args(argv)
    try:
        dtype, device = torch_dtype(args.dtype), torch_device(args.device)
        ds = data_lib.load(args.dataset, split=args.split)
        model = load_model(args.model, tuple(ds.input_shape), ds.num_classes,
                           activation=args.activation, init=args.init, seed=args.seed)
        model = model.to(dtype=dtype, device=device)  # our own instance, built here
        result = diagnose(model, ds, dim=args.dim, seed=args.seed,
                          num_samples=args.num_samples, temperatures=args.temperatures,
                          scales=args.scales, scan_scales=False if args.no_scales else None,
                          batch_size=args.batch_size,
                          model_name=f"{args.model} on {args.dataset}")
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    print(result.report())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.txt").write_text(result.report() + "\n")
        (out / "diagnosis.json").write_text(json.dumps(result.to_dict(), indent=2,
                                                       default=str))
        result.temperature_sweep.to_csv(out / "temperature_sweep.csv", index=False)
        if result.scale_sweep is not None:
            result.scale_sweep.to_csv(out / "scale_sweep.csv", index=False)
        paths = result.plot(out / "diagnosis.png")
        print(f"\nreport:  {out / 'report.txt'}")
        print(f"figure:  {paths[0]}")
    return 0
