r"""From the measured table to a verdict with uncertainty, and to advice that acts.

Every replicate ``r`` (one basis of one init) gives a κ curve :math:`\kappa_r(x)` along the
axis. The zone is found on the mean curve :math:`\bar\kappa(x)` with
:func:`goldilocks_zone.theory.zone.find_zone` (where :math:`\bar\kappa \ge f\cdot\max\bar\kappa`,
``f = zone_fraction``). Whether the current point ``x = 1`` is in it is a paired comparison per
replicate,

.. math:: m_r = \kappa_r(1) - f\,\kappa_r(x^\star),

(:math:`x^\star` the peak of the mean curve): the *margin*. Its mean and confidence interval
:math:`\bar m \pm t_{0.975,\,n-1}\, s/\sqrt n` decide:

* ``in the zone``: 1 lies in the zone and the whole interval of ``m`` is above 0;
* ``below`` / ``above``: the whole interval is below 0 and the zone lies on the side of larger
  / smaller logits (larger / smaller weight scale, smaller / larger temperature);
* ``borderline``: the interval contains 0, the curve has no clearly positive peak, or there are
  too few replicates to tell — the advice then says which budget to raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from goldilocks_zone.theory.zone import find_zone

__all__ = ["Interval", "Verdict", "confidence_interval", "decide"]

#: Confidence level of every interval.
CONFIDENCE = 0.95
#: A top-class probability above this (on average) means a saturated softmax.
SATURATED = 0.9


@dataclass(frozen=True)
class Interval:
    """``mean ± half_width`` (a :data:`CONFIDENCE` interval over ``n`` replicates; the half
    width is NaN for ``n < 2``)."""

    mean: float
    half_width: float
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        if not math.isfinite(self.half_width):
            return f"{self.mean:.3g}"
        return f"{self.mean:.3g} ± {self.half_width:.2g}"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "half_width": self.half_width, "n": self.n}


def confidence_interval(values) -> Interval:
    r""":math:`\bar v \pm t_{(1+c)/2,\,n-1}\, s/\sqrt n` of the finite ``values``."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), 0)
    if n == 1:
        return Interval(float(v[0]), float("nan"), 1)
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    return Interval(float(v.mean()), t * float(v.std(ddof=1)) / math.sqrt(n), n)


@dataclass(frozen=True)
class Verdict:
    """The decision and what to do about it (see the module docstring)."""

    label: str  # "in the zone" | "below" | "above" | "borderline"
    zone: tuple[float, float] | None
    peak: float | None
    peak_kappa: Interval
    kappa_now: Interval
    pi_now: Interval
    margin: Interval
    multiplier: float | None  # the zone value nearest to the current point (x = 1)
    reason: str
    advice: str


def _per_replicate(table: pd.DataFrame, axis: str, column: str) -> pd.DataFrame:
    return table.pivot_table(index=["init", "basis"], columns=axis, values=column,
                             dropna=False)


def decide(table: pd.DataFrame, axis: str, *, zone_fraction: float, top_probability: float,
           loss: float, num_classes: int, g_norm: float, h_norm: float, homogeneous: bool,
           degree: int | None, scaled_what: str, rerun_hint: str) -> Verdict:
    """Verdict, reason and advice from the tidy table of :func:`measure_axis`."""
    kappa = _per_replicate(table, axis, "positive_curvature")
    pi = _per_replicate(table, axis, "fraction_positive")
    xs = kappa.columns.to_numpy(float)
    mean_curve = kappa.mean(axis=0, skipna=True).to_numpy(float)
    zone = find_zone(xs, mean_curve, fraction=zone_fraction)
    at_one = int(np.argmin(np.abs(np.log(xs))))
    kappa_now = confidence_interval(kappa.iloc[:, at_one])
    pi_now = confidence_interval(pi.iloc[:, at_one])
    nan = Interval(float("nan"), float("nan"), 0)
    if zone.peak_index is None:
        return Verdict("borderline", None, None, nan, kappa_now, pi_now, nan, None,
                       "κ is not finite anywhere on this axis (the loss overflows).",
                       f"Can't tell: check the data and model, or {rerun_hint}.")
    peak_kappa = confidence_interval(kappa.iloc[:, zone.peak_index])
    margin = confidence_interval(kappa.iloc[:, at_one]
                                 - zone_fraction * kappa.iloc[:, zone.peak_index])
    bounds = zone.bounds

    def verdict(label: str, multiplier: float | None, reason: str, advice: str) -> Verdict:
        return Verdict(label, bounds, zone.peak_x, peak_kappa, kappa_now, pi_now, margin,
                       multiplier, reason, advice)

    borderline = f"Borderline — can't tell at this budget: {rerun_hint}."
    if bounds is None or not peak_kappa.lo > 0:
        return verdict("borderline", None, "κ has no clearly positive peak along this axis.",
                       borderline)
    lo, hi = bounds
    inside = lo <= 1.0 <= hi
    if inside and margin.lo > 0:
        name = "weight scale α =" if axis == "scale" else "temperature T ="
        return verdict("in the zone", 1.0,
                       f"The Gauss–Newton G-term (‖G‖ = {g_norm:.3g}) is comparable to or "
                       f"larger than the H-term (‖H‖ = {h_norm:.3g}), so the loss curves "
                       "upwards in most directions.",
                       f"Keep this initialisation: the zone spans {name} {_span(lo, hi)} on "
                       "this grid and the current point (1) is inside it.")
    if inside or not margin.hi < 0:
        return verdict("borderline", None, "κ at the current point is within noise of the "
                       f"zone's edge ({zone_fraction:g} × the peak).", borderline)
    multiplier = lo if 1.0 < lo else hi
    # the logits grow along x on the scale axis: must they grow to reach the zone?
    grow = (multiplier > 1.0) == (axis == "scale")
    return verdict("below" if grow else "above", multiplier,
                   _why_outside(grow, top_probability, loss, num_classes, g_norm, h_norm),
                   _advice(axis, multiplier, bounds, zone.peak_x, homogeneous, degree,
                           scaled_what))


def _span(lo: float, hi: float) -> str:
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g} … {hi:.3g}"


def _why_outside(grow: bool, top_probability: float, loss: float, num_classes: int,
                 g_norm: float, h_norm: float) -> str:
    ratio = h_norm / g_norm if g_norm > 0 else float("inf")
    if not grow and top_probability >= SATURATED:
        return (f"The softmax is saturated (the top class gets {top_probability:.0%} of the "
                f"probability on average), so the G-term that makes curvature positive "
                f"vanishes and the H-term dominates (‖H‖/‖G‖ = {ratio:.3g}).")
    if grow and top_probability < 1.5 / num_classes + 0.05:
        return (f"The logits are too small: the softmax is nearly uniform (loss {loss:.3g} vs "
                f"log K = {math.log(num_classes):.3g}), so the G-term is weak and the H-term "
                f"dominates (‖H‖/‖G‖ = {ratio:.3g}).")
    side = "small" if grow else "large"
    return (f"The logits are too {side} for the softmax to curve the loss upwards: the H-term "
            f"dominates the G-term (‖H‖/‖G‖ = {ratio:.3g}).")


def _advice(axis: str, m: float, bounds: tuple[float, float], peak: float, homogeneous: bool,
            degree: int | None, scaled_what: str) -> str:
    zone = _span(*bounds)
    if axis == "temperature":
        how = (f"divide the logits by {m:.3g}" if m >= 1 else
               f"multiply the logits by {1 / m:.3g} (temperature {m:.3g})")
        return (f"To reach the zone, {how} — e.g. a fixed output scaling in the model's last "
                f"layer. Zone: T = {zone}; κ peaks at T* = {peak:.3g}.")
    what = "all initial weights" if homogeneous else scaled_what
    text = (f"To reach the zone, multiply {what} by {m:.3g} (the nearest value in the zone; "
            f"zone: α = {zone}; κ peaks at α* = {peak:.3g}).")
    if homogeneous and degree:
        text += (f" For this homogeneous model (degree L = {degree}) that is the same as "
                 f"dividing the logits by {m ** -degree:.3g}.")
    return text
