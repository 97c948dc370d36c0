r"""The measurement: κ, π, ‖G_R‖₂ and ‖H_R‖₂ along one axis, for several bases (and inits).

For every model instance (the user's model, or ``num_inits`` draws of a factory), every grid
value ``x`` of the axis and every basis ``R_b`` (``num_bases`` independent orthonormal bases
of dimension ``d``, rows zero outside the measured parameters) the engine computes the
subspace Hessian :math:`R_b^\top \nabla^2 L\, R_b`. All bases of one model share one engine
pass: they are concatenated into a ``(D, num_bases·d)`` matrix and the diagonal
``d × d`` blocks of the result are the per-basis Hessians (the off-diagonal blocks are not
used). The result is a tidy table, one row per ``(init, basis, x)``.

Axes: ``"scale"`` multiplies the chosen parameters by α (see
:func:`goldilocks_zone.diagnosis.inputs.scaled_parameter_names`); ``"temperature"`` divides
the logits by T.

The budget: :func:`choose_budget` picks ``N`` and ``d`` from a timing probe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from goldilocks_zone.curvature import random_basis, spectrum_stats, subspace_curvature
from goldilocks_zone.curvature.batches import chunks, map_inputs
from goldilocks_zone.curvature.functional import FunctionalModel

__all__ = ["Budget", "DEFAULT_GRIDS", "QUICK_GRIDS", "choose_budget", "embedded_bases",
           "measure_axis", "running_interval", "top_class_probability"]

#: Default grids: scale 10^-2 .. 10^2 (two points per decade), temperature 10^-4 .. 10^4 (one
#: per decade). For a homogeneous model of degree L = 2..3, α ∈ [10^-2, 10^2] spans
#: T = α^-L ∈ [10^-6, 10^6], far beyond where κ falls to 0 on both sides.
DEFAULT_GRIDS = {"scale": tuple(float(v) for v in np.logspace(-2, 2, 9)),
                 "temperature": tuple(float(v) for v in np.logspace(-4, 4, 9))}
#: ``--quick`` grids: one point per decade (scale) / every second decade (temperature).
QUICK_GRIDS = {"scale": tuple(float(v) for v in np.logspace(-2, 2, 5)),
               "temperature": tuple(float(v) for v in np.logspace(-4, 4, 5))}
#: Bounds of the adaptive choice: fewer samples than this make κ noisy, more than MAX_SAMPLES
#: rarely change it; below MIN_DIM the spread between bases dominates.
MIN_SAMPLES, MAX_SAMPLES = 128, 2000
MIN_DIM, DEFAULT_DIM, MAX_DIM = 4, 16, 48
#: Samples of the timing probe's two passes (the second within PROBE_SHARE of the budget).
PROBE_SMALL, PROBE_SAMPLES, PROBE_SHARE = 64, 256, 0.25
#: A model is *heavy* when one direction and sample cost more than this (seconds) in a tiny
#: pass (LeNet-300-100: ~1 ms; a ResNet-18 on 32×32 images: 50–80 ms on a 2-core CPU); they
#: are probed on HEAVY_PROBE samples and N may go down to HEAVY_MIN_SAMPLES, so that a default
#: diagnosis still finishes in minutes (the intervals show what that costs in certainty).
HEAVY_SECONDS_PER_DIRECTION_SAMPLE = 0.02
HEAVY_PROBE = (4, 16)
HEAVY_MIN_SAMPLES = 32


@dataclass(frozen=True)
class Budget:
    """What the timing probe chose: ``num_samples`` N and ``dim`` d, with the measured cost
    per (basis column × sample) and the predicted time of the whole grid."""

    num_samples: int
    dim: int
    seconds_per_column_sample: float
    predicted_seconds: float
    note: str


def embedded_bases(num_params: int, rows: Tensor, dim: int, num_bases: int, seed: int, *,
                   dtype: torch.dtype, device: torch.device) -> Tensor:
    """``num_bases`` independent orthonormal ``(len(rows), dim)`` bases (seeds ``seed·1000 +
    b``), embedded into ``(num_params, num_bases·dim)`` with zeros outside ``rows`` (the
    flat indices of the measured parameters)."""
    out = torch.zeros(num_params, num_bases * dim, dtype=dtype, device=device)
    everything = rows.numel() == num_params  # rows are sorted and unique: all of them
    for b in range(num_bases):
        r = random_basis(rows.numel(), dim, seed=seed * 1000 + b, dtype=dtype, device=device)
        if everything:
            out[:, b * dim:(b + 1) * dim] = r
        else:
            out[rows.to(device), b * dim:(b + 1) * dim] = r
    return out


def _one_pass(model: nn.Module, pair: tuple[Tensor, Tensor], basis: Tensor, axis: str,
              x: float, scaled_names: Sequence[str], *, train_mode: bool,
              batch_size: int | None):
    """The engine at α = x on the chosen parameters, or at temperature T = x."""
    params, temperature = None, 1.0
    if axis == "scale":
        chosen = set(scaled_names)
        params = {n: p.detach() * x if n in chosen else p.detach()
                  for n, p in model.named_parameters()}
    else:
        temperature = x
    return subspace_curvature(model, pair, basis, temperature=temperature, params=params,
                              batch_size=batch_size, train_mode=train_mode,
                              trainable_only=False)


def measure_axis(models: Sequence[nn.Module], pair: tuple[Tensor, Tensor],
                 bases: Sequence[Tensor], axis: str, grid: Sequence[float],
                 scaled_names: Sequence[Sequence[str]], *, dim: int, train_mode: bool = False,
                 batch_size: int | None = None,
                 on_step: Callable[[list[dict]], None] | None = None) -> pd.DataFrame:
    """The tidy table: columns ``init``, ``basis``, ``<axis>``, ``positive_curvature``,
    ``fraction_positive``, ``g_spectral_norm``, ``h_spectral_norm``, ``loss``,
    ``accuracy``, ``prior_mismatch``; one engine pass per (model, grid value).

    The current point (1 on the axis) is measured first for every model, so that its
    interval is known early and only narrows; ``on_step`` receives the rows measured so far
    after every pass. The table is returned in grid order."""
    rows: list[dict] = []
    order = sorted(range(len(grid)), key=lambda j: grid[j] != 1.0)  # stable: 1 first
    jobs = [(j, i) for j in order[:1] for i in range(len(models))]
    jobs += [(j, i) for i in range(len(models)) for j in order[1:]]
    for j, i in jobs:
        model, basis, names = models[i], bases[i], scaled_names[i]
        num_bases = basis.shape[1] // dim
        sc = _one_pass(model, pair, basis, axis, float(grid[j]), names, train_mode=train_mode,
                       batch_size=batch_size)
        mismatch = float((sc.class_prior - sc.mean_probs).norm())
        for b in range(num_bases):
            block = slice(b * dim, (b + 1) * dim)
            h = spectrum_stats(sc.hessian[block, block])
            g = spectrum_stats(sc.g_term[block, block])
            hh = spectrum_stats(sc.h_term[block, block])
            rows.append({"init": i, "basis": b, axis: float(grid[j]),
                         "positive_curvature": h.positive_curvature,
                         "fraction_positive": h.fraction_positive,
                         "g_spectral_norm": g.spectral_norm,
                         "h_spectral_norm": hh.spectral_norm,
                         "loss": sc.loss, "accuracy": sc.accuracy,
                         "prior_mismatch": mismatch, "_grid": j})
        if on_step is not None:
            on_step(rows)
    table = pd.DataFrame(rows).sort_values(["init", "_grid", "basis"], kind="stable")
    return table.drop(columns="_grid").reset_index(drop=True)


def running_interval(rows: Sequence[dict], axis: str) -> str:
    """``κ now = m ± s.e. (n)`` over the current point's rows measured so far (for the
    progress bar; the standard error shrinks as bases and inits come in)."""
    values = [r["positive_curvature"] for r in rows if r[axis] == 1.0]
    if not values:
        return ""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"κ now = {mean:.3g} (n = 1)"
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return f"κ now = {mean:.3g} ± {math.sqrt(var / len(values)):.2g} s.e. (n = {len(values)})"


def top_class_probability(model: nn.Module, pair: tuple[Tensor, Tensor], *,
                          train_mode: bool = False, batch_size: int | None = None) -> float:
    """Mean over samples of the largest softmax probability at the current parameters (1/K:
    uniform outputs; near 1: saturated softmax). The model is evaluated functionally."""
    fm = FunctionalModel(model, train_mode=train_mode, trainable_only=False)
    total, count = 0.0, 0
    with fm.mode(), torch.no_grad():
        for x, y in chunks(pair, fm, batch_size, forward_mode=False):
            probs = torch.softmax(fm.logits(fm.params, x), dim=-1)
            total += float(probs.max(dim=-1).values.sum())
            count += y.shape[0]
    return total / max(count, 1)


def choose_budget(model: nn.Module, pair: tuple[Tensor, Tensor], basis_for: Callable[[int],
                  Tensor], *, seconds: float, grid_size: int, num_models: int, num_bases: int,
                  available: int, train_mode: bool = False, batch_size: int | None = None,
                  dim: int | None = None, num_samples: int | None = None) -> Budget:
    r"""Time the engine on a small probe and choose N and d so that the probe and the
    ``grid_size · num_models`` passes take about ``seconds`` together.

    Cost model of one pass with ``c = num_bases · d`` basis columns and ``N`` samples:
    :math:`t = c\,(u + vN)` — a per-column part ``u`` (projecting D-dimensional gradients on
    the basis) and a per-column-and-sample part ``v``. A warm-up and a tiny timed pass tell
    whether the model is heavy (more than ``HEAVY_SECONDS_PER_DIRECTION_SAMPLE``); two timed
    passes on ``n_1 = PROBE_SMALL`` and ``n_2 ≤ PROBE_SAMPLES`` samples with ``DEFAULT_DIM``
    columns per basis (heavy models: ``HEAVY_PROBE`` samples, ``MIN_DIM`` columns) fit ``u``
    and ``v``. N is then taken where
    samples cost twice the fixed part (:math:`vN = 2u`, more samples for little time),
    clamped to ``[MIN_SAMPLES, MAX_SAMPLES]`` (heavy models: from ``HEAVY_MIN_SAMPLES``), and
    d fills the budget within
    ``[MIN_DIM, MAX_DIM]``. A ``dim`` or ``num_samples`` given by the user is kept. Every
    timed shape is warmed up first: the first pass at a new block of columns pays one-off
    allocation costs (several times a pass on LeNet-300-100), after which the cost is close
    to linear in the columns.
    """
    passes = grid_size * num_models
    if num_samples is not None and dim is not None:
        return Budget(num_samples=num_samples, dim=dim, seconds_per_column_sample=float("nan"),
                      predicted_seconds=float("nan"),
                      note=f"as given: N = {num_samples} samples, d = {dim}, {num_bases} bases "
                      f"({passes} passes)")
    methods = []  # the engine's pass for this model (SubspaceCurvature.method)

    def timed(n: int, basis: Tensor) -> float:
        start = time.perf_counter()
        res = subspace_curvature(model, (map_inputs(lambda t: t[:n], pair[0]), pair[1][:n]),
                                 basis, batch_size=batch_size, train_mode=train_mode,
                                 trainable_only=False)
        methods.append(res.method)
        return time.perf_counter() - start

    probe_start = time.perf_counter()
    tiny = basis_for(dim if dim is not None else MIN_DIM)
    timed(min(2, available), tiny)  # warm-up: one-off costs of the first call
    # a second tiny pass: is the model heavy?
    heavy = (timed(min(2, available), tiny) / (tiny.shape[1] * min(2, available))
             > HEAVY_SECONDS_PER_DIRECTION_SAMPLE)
    probe_d = dim if dim is not None else (MIN_DIM if heavy else DEFAULT_DIM)
    basis = tiny if probe_d == tiny.shape[1] // num_bases else basis_for(probe_d)
    cols = num_bases * probe_d
    if basis is not tiny:
        timed(min(2, available), basis)  # warm-up at the probe's block of columns
    n1 = min(HEAVY_PROBE[0] if heavy else PROBE_SMALL, available)
    t1 = timed(n1, basis)
    # the second probe grows with what the budget allows (t1 / n1 overestimates the cost of
    # a sample, so this stays within PROBE_SHARE of the budget)
    n2 = int(min(HEAVY_PROBE[1] if heavy else PROBE_SAMPLES, available,
                 max(2 * n1, PROBE_SHARE * seconds * n1 / t1)))
    t2 = timed(n2, basis) if n2 > n1 else t1
    # (half the mean per-sample cost bounds v from below: timing noise on the small probes
    # hides it, and a sample costs more at larger N, once the tangents outgrow the caches)
    v = max((t2 - t1) / max(n2 - n1, 1), 0.5 * t2 / n2) / cols
    u = max(t1 / cols - v * n1, 0.0)
    cap_n = min(MAX_SAMPLES, available)
    floor_n = min(HEAVY_MIN_SAMPLES if heavy else MIN_SAMPLES, cap_n)

    def plan(u: float, v: float) -> tuple[int, int, str]:
        def dim_for(n: float) -> int:
            return int(seconds / (passes * num_bases * (u + v * n)))

        if num_samples is not None:
            return num_samples, min(MAX_DIM, max(MIN_DIM, dim_for(num_samples))), \
                "d chosen for the time budget"
        if dim is not None:
            afford = (seconds / (passes * num_bases * dim) - u) / v
            return int(min(cap_n, max(floor_n, afford))), dim, "N chosen for the time budget"
        n = int(min(cap_n, max(floor_n, 2 * u / v)))
        d = dim_for(n)
        while d < MIN_DIM and n > floor_n:  # too slow: fewer samples before fewer directions
            n = max(floor_n, n // 2)
            d = dim_for(n)
        return n, min(MAX_DIM, max(MIN_DIM, d)), "N and d chosen for the time budget"

    budget = seconds
    # ``seconds`` covers the probe too: the passes get what the probe left (at least a third)
    seconds = max(budget - (time.perf_counter() - probe_start), budget / 3)
    n, d, why = plan(u, v)
    predicted = passes * num_bases * d * (u + v * n)
    note = (f"{why}: N = {n} samples, d = {d}, {num_bases} bases (timing probe: "
            f"{u * 1e3:.3g} ms per direction + {v * 1e6:.3g} µs per direction and sample; "
            f"predicted {predicted:.1f} s for {passes} passes; engine pass: {methods[-1]})")
    return Budget(num_samples=n, dim=d, seconds_per_column_sample=v,
                  predicted_seconds=predicted, note=note)
