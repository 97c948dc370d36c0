r"""Finding the Goldilocks zone on a curve of positive curvature :math:`\kappa(x)`.

One definition, used by every experiment summary and by the diagnosis: along a sorted axis
``x`` (scale, temperature, radius ...) the zone is the contiguous run of grid points around the
maximum of :math:`\kappa` where :math:`\kappa \ge` ``fraction`` × the maximum. Non-finite
values of :math:`\kappa` (overflow at extreme scales) never belong to the zone; a curve with no
finite value at all, or whose maximum is not positive, has no zone — that is reported as data
(``Zone.peak_index is None`` / ``Zone.bounds is None``), never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Zone:
    """The peak of a κ curve and the zone around it.

    ``peak_index``/``peak_x``/``peak_kappa``: the largest finite κ (``None``/NaN when no value
    is finite). ``bounds``: ``(x_lo, x_hi)`` of the zone, ``None`` when there is no zone
    (no finite value, or a peak ≤ 0). ``num_finite``: how many points had a finite κ.
    """

    peak_index: int | None
    peak_x: float
    peak_kappa: float
    bounds: tuple[float, float] | None
    num_finite: int

    @property
    def all_non_finite(self) -> bool:
        return self.num_finite == 0

    def contains(self, x: float) -> bool:
        return self.bounds is not None and self.bounds[0] <= x <= self.bounds[1]


def find_zone(xs: Sequence[float] | np.ndarray, kappa: Sequence[float] | np.ndarray, *,
              fraction: float = 0.5) -> Zone:
    r"""The zone of ``kappa`` along ``xs`` (same length, ``xs`` sorted ascending).

    The zone is the largest contiguous interval of grid points containing the argmax of the
    finite values where :math:`\kappa \ge` ``fraction`` :math:`\cdot \max\kappa`; it exists
    only when that maximum is finite and positive.
    """
    x = np.asarray(xs, dtype=float)
    k = np.asarray(kappa, dtype=float)
    if x.shape != k.shape or x.ndim != 1:
        raise ValueError(f"xs and kappa must be 1-D of equal length, got {x.shape} and {k.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    finite = np.isfinite(k)
    if not finite.any():
        return Zone(None, float("nan"), float("nan"), None, 0)
    masked = np.where(finite, k, -np.inf)
    best = int(np.argmax(masked))
    peak = float(masked[best])
    bounds = None
    if peak > 0:
        lo = hi = best
        while lo > 0 and masked[lo - 1] >= fraction * peak:
            lo -= 1
        while hi < len(x) - 1 and masked[hi + 1] >= fraction * peak:
            hi += 1
        bounds = (float(x[lo]), float(x[hi]))
    return Zone(best, float(x[best]), peak, bounds, int(finite.sum()))
