r"""``diagnose(model, data)``: is a model's initialisation in the Goldilocks zone, how sure is
that, and what to change if not.

Steps (each model is evaluated functionally and never modified):

1. validate every option, then take ``N`` samples of ``data`` (:func:`.inputs.first_samples`);
2. time one engine pass and choose ``N`` and ``d`` to fit ``budget_seconds``
   (:func:`.measure.choose_budget`), unless both are given;
3. measure κ, π, ‖G_R‖₂, ‖H_R‖₂ along the axis for ``num_bases`` random bases of the trainable
   parameters and, for a factory, ``num_inits`` seeded initialisations
   (:func:`.measure.measure_axis`);
4. decide with confidence intervals and turn the zone into advice (:func:`.verdict.decide`).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from goldilocks_zone.curvature.batches import check_positive_int, map_inputs, num_samples_of
from goldilocks_zone.diagnosis.inputs import (
    first_samples,
    scaled_parameter_names,
    trainable_parameter_names,
)
from goldilocks_zone.diagnosis.measure import (
    DEFAULT_GRIDS,
    MAX_SAMPLES,
    QUICK_GRIDS,
    choose_budget,
    embedded_bases,
    measure_axis,
    running_interval,
    top_class_probability,
)
from goldilocks_zone.diagnosis.report import Diagnosis
from goldilocks_zone.diagnosis.verdict import decide

__all__ = ["AXES", "DEFAULT_BUDGET_SECONDS", "QUICK_BUDGET_SECONDS", "diagnose"]

AXES = ("scale", "temperature")
#: Time budget of the measurement (the timing probe picks N and d to fit it).
DEFAULT_BUDGET_SECONDS = 9.0
QUICK_BUDGET_SECONDS = 4.0


def _check_options(axis, grid, dim, num_samples, num_bases, num_inits, zone_fraction,
                   budget_seconds) -> None:
    if axis is not None and axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if grid is not None:
        if len(grid) < 3 or any(not (isinstance(v, (int, float)) and math.isfinite(v)
                                     and v > 0) for v in grid):
            raise ValueError("the grid must hold at least 3 positive finite numbers, got "
                             f"{list(grid)!r}")
    for name, value in (("dim", dim), ("num_samples", num_samples)):
        check_positive_int(name, value, none="(or None: chosen for the time budget)")
    for name, value in (("num_bases", num_bases), ("num_inits", num_inits)):
        check_positive_int(name, value, none="or None")
    if not 0 < zone_fraction < 1:
        raise ValueError(f"zone_fraction must lie in (0, 1), got {zone_fraction!r}")
    if not budget_seconds > 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds!r}")


def _build(model: nn.Module | Callable[[], nn.Module], num_inits: int, seed: int
           ) -> list[nn.Module]:
    if isinstance(model, nn.Module):
        return [model]
    if not callable(model):
        raise TypeError("model must be a torch.nn.Module or a factory (a callable with no "
                        f"arguments returning one), got {type(model).__name__}")
    built = []
    for i in range(num_inits):
        with torch.random.fork_rng(devices=[]):  # the caller's global state is untouched
            torch.manual_seed(seed + i)
            m = model()
        if not isinstance(m, nn.Module):
            raise TypeError(f"the factory returned {type(m).__name__}, not a torch.nn.Module")
        built.append(m)
    return built


def _flat_rows(model: nn.Module, names: Sequence[str]) -> torch.Tensor:
    chosen = set(names)
    rows, offset = [], 0
    for name, p in model.named_parameters():
        if name in chosen:
            rows.append(torch.arange(offset, offset + p.numel()))
        offset += p.numel()
    return torch.cat(rows)


def diagnose(model: nn.Module | Callable[[], nn.Module], data: Any, *,
             axis: str | None = None, grid: Sequence[float] | None = None,
             dim: int | None = None, num_samples: int | None = None, num_bases: int = 3,
             num_inits: int | None = None, seed: int = 0,
             budget_seconds: float | None = None, quick: bool = False,
             trainable_only: bool = True, train_mode: bool = False,
             zone_fraction: float = 0.5, batch_size: int | None = None,
             progress: bool = False, model_name: str = "") -> Diagnosis:
    r"""Diagnose a model's initialisation relative to the Goldilocks zone.

    Args:
        model: an ``nn.Module`` mapping inputs to logits ``(batch, K)`` (left untouched:
            parameters, buffers, ``requires_grad`` and train/eval flags), or a factory — a
            callable with no arguments returning one — called ``num_inits`` times under
            ``torch.manual_seed(seed + i)`` (the caller's random state is restored), so that
            the verdict also covers the spread between initialisations.
        data: ``(inputs, targets)`` tensors, a :class:`goldilocks_zone.data.Dataset`, a torch
            ``Dataset``/``TensorDataset`` or a ``DataLoader`` of pairs (see
            :func:`goldilocks_zone.diagnosis.inputs.first_samples`). Floating inputs are cast
            to the model's dtype and device.
        axis: ``"scale"`` (multiply the weights by α; the default when the model has weight
            layers) or ``"temperature"`` (divide the logits by T). For a positively
            homogeneous model every parameter is scaled, and κ(α) = κ(T = α^-L); otherwise
            only the weights of Linear/Conv layers are (biases and normalisation parameters
            keep their values).
        grid: axis values (default :data:`.measure.DEFAULT_GRIDS`, or ``QUICK_GRIDS`` with
            ``quick``); 1, the current point, is always added.
        dim, num_samples: subspace dimension d and number of samples N; ``None`` lets a
            timing probe choose them to fit ``budget_seconds``.
        num_bases: independent random bases per model (replicates for the intervals).
        num_inits: initialisations drawn from a factory (default 2; must be 1 for a module).
        seed: seeds the data subsample, the bases (``seed·1000 + b``) and the factory.
        budget_seconds: time budget of the measurement (default
            :data:`DEFAULT_BUDGET_SECONDS`, :data:`QUICK_BUDGET_SECONDS` with ``quick``).
        trainable_only: the bases span only parameters with ``requires_grad`` (default), i.e.
            the curvature of what training moves; ``False``: all parameters.
        train_mode: evaluate in train mode (BatchNorm uses batch statistics of each chunk of
            ``batch_size`` samples; refused with dropout). Default: eval mode.
        zone_fraction: the zone is where the mean κ is ≥ this fraction of its peak.
        progress: show progress bars (tqdm, on stderr) with the time left.

    Returns a :class:`Diagnosis`; its ``report()`` explains the verdict in plain words.
    """
    started = time.perf_counter()
    _check_options(axis, grid, dim, num_samples, num_bases, num_inits, zone_fraction,
                   1.0 if budget_seconds is None else budget_seconds)
    is_module = isinstance(model, nn.Module)
    if is_module and num_inits not in (None, 1):
        raise ValueError("num_inits > 1 needs a factory (a callable returning a fresh model); "
                         "a ready-made module has one initialisation")
    inits = 1 if is_module else (num_inits or 2)
    if num_bases * inits < 2:
        raise ValueError("the intervals need at least 2 replicates: use num_bases >= 2")
    models = _build(model, inits, seed)
    first = next(iter(models[0].parameters()), None)
    if first is None:
        raise ValueError("the model has no parameters")
    dtype, device = first.dtype, first.device
    inputs, targets = first_samples(data, num_samples or MAX_SAMPLES, seed=seed)
    inputs = map_inputs(lambda t: t.to(dtype=dtype, device=device) if t.is_floating_point()
                        else t.to(device=device), inputs)
    targets = targets.to(device=device)
    available = num_samples_of(inputs)
    from goldilocks_zone.models import homogeneity

    hom = homogeneity(models[0])
    scaled = [scaled_parameter_names(m, hom.is_homogeneous) for m in models]
    if axis is None:
        axis = "scale" if scaled[0] else "temperature"
    if axis == "scale" and not scaled[0]:
        raise ValueError("the model has no Linear/Conv weights to scale; use "
                         "axis='temperature'")
    grid = tuple(sorted({float(v) for v in (grid or (QUICK_GRIDS if quick
                                                        else DEFAULT_GRIDS)[axis])} | {1.0}))
    measured = [trainable_parameter_names(m, trainable_only) for m in models]
    if not measured[0]:
        raise ValueError("the model has no trainable parameters (all have requires_grad="
                         "False); pass trainable_only=False to measure them all")
    rows = [_flat_rows(m, names) for m, names in zip(models, measured, strict=True)]
    num_params = sum(p.numel() for p in models[0].parameters())
    if dim is not None and dim > rows[0].numel():
        raise ValueError(f"dim = {dim} exceeds the {rows[0].numel()} measured parameters")

    @functools.lru_cache(maxsize=2)  # the probe's blocks may be the measurement's
    def bases_for(d: int, i: int = 0) -> torch.Tensor:
        return embedded_bases(num_params, rows[i], d, num_bases, seed, dtype=dtype,
                              device=device)

    budget = budget_seconds or (QUICK_BUDGET_SECONDS if quick else DEFAULT_BUDGET_SECONDS)
    if progress:
        print("timing probe ...", file=sys.stderr, flush=True)
    plan = choose_budget(models[0], (inputs, targets), bases_for, seconds=budget,
                         grid_size=len(grid), num_models=len(models), num_bases=num_bases,
                         available=available, train_mode=train_mode,
                         batch_size=batch_size, dim=dim, num_samples=num_samples)
    d = min(plan.dim, rows[0].numel())
    n = min(plan.num_samples, available)
    pair = (map_inputs(lambda t: t[:n], inputs), targets[:n])
    if progress:
        print(plan.note, file=sys.stderr, flush=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(grid) * len(models), desc=f"κ along {axis}", unit="pass",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    def step(rows: list[dict]) -> None:
        bar.set_postfix_str(running_interval(rows, axis), refresh=False)
        bar.update(1)

    try:
        table = measure_axis(models, pair, [bases_for(d, i) for i in range(len(models))],
                             axis, grid, scaled, dim=d, train_mode=train_mode,
                             batch_size=batch_size, on_step=step)
    finally:
        bar.close()
    now = {c: float(table.loc[table[axis] == 1.0, c].mean())  # means at the current point
           for c in ("loss", "accuracy", "prior_mismatch", "g_spectral_norm", "h_spectral_norm")}
    top = sum(top_class_probability(m, pair, train_mode=train_mode, batch_size=batch_size)
              for m in models) / len(models)
    num_classes = int(max(int(pair[1].max()) + 1, 2))
    hint = _rerun_hint(d, n, available, num_bases, rows[0].numel())
    what = _scaled_what(models[0], scaled[0], hom.is_homogeneous, axis)
    verdict = decide(table, axis, zone_fraction=zone_fraction, top_probability=top,
                     loss=now["loss"], num_classes=num_classes, g_norm=now["g_spectral_norm"],
                     h_norm=now["h_spectral_norm"], homogeneous=hom.is_homogeneous,
                     degree=hom.degree, scaled_what=what[0], rerun_hint=hint)
    return Diagnosis(
        model_name=model_name, axis=axis, verdict=verdict, num_params=num_params,
        num_measured=int(rows[0].numel()),
        num_scaled=sum(p.numel() for name, p in models[0].named_parameters()
                       if name in set(scaled[0])),
        scaled_what=what[0], axis_meaning=what[1], homogeneous=hom.is_homogeneous,
        degree=hom.degree, homogeneity_reason=hom.reason, num_samples=n,
        num_classes=num_classes, dim=d, num_bases=num_bases, num_inits=len(models),
        seed=seed, zone_fraction=zone_fraction, train_mode=train_mode, budget_note=plan.note,
        seconds=time.perf_counter() - started, top_probability=top, table=table, **now)


def _rerun_hint(d: int, n: int, available: int, num_bases: int, max_dim: int) -> str:
    parts = []
    if 2 * d <= max_dim:
        parts.append(f"--dim {2 * d}")
    if n < available:
        parts.append(f"--num-samples {min(2 * n, available)}")
    parts.append(f"--bases {2 * num_bases}")
    return "run with " + " ".join(parts) + " (or a larger --budget)"


def _scaled_what(model: nn.Module, names: Sequence[str], homogeneous: bool, axis: str
                 ) -> tuple[str, str]:
    """(what the advice scales, what one step along the axis means)."""
    if axis == "temperature":
        return ("the logits", "softmax temperature T: logits divided by T; the weights are "
                "unchanged")
    if homogeneous:
        return ("all initial weights", "weight scale α: every parameter multiplied by α; the "
                "model is positively homogeneous, so this is the same as dividing the logits "
                "by α^-L")
    chosen = set(names)
    others = [n for n, _ in model.named_parameters() if n not in chosen]
    layers = sorted({n.rsplit(".", 1)[0] for n in names})
    shown = ", ".join(layers[:6]) + (", …" if len(layers) > 6 else "")
    return (f"the initial weights of the {len(layers)} Linear/Conv layers ({shown}; not "
            "biases or normalisation parameters)",
            f"weight scale α: the weight matrices/kernels of {len(layers)} Linear/Conv layers "
            f"multiplied by α, the {len(others)} other parameter tensors (biases, "
            "normalisation and embedding parameters) unchanged. The model is not homogeneous, "
            "so this moves the pre-activations' size, not only the logits'; behind a "
            "normalisation layer a layer's scale has no effect")
