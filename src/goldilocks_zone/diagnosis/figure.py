"""The diagnosis figure, drawn from the tidy table and the JSON summary alone (so that
``goldilocks plot DIR`` redraws it without recomputation).

Left: κ (mean and 95% band over bases and inits) along the axis, the zone shaded, the current
point marked with its interval, the peak starred. Right: ‖G_R‖₂ and ‖H_R‖₂ along the axis
(log scale, only positive finite values, so that an underflowed norm never stretches the axis
to 1e-308).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["draw"]

#: Norms below this fraction of the largest one are left out of the log axis.
_LOG_RANGE = 1e-12


def _band(table: pd.DataFrame, axis: str, column: str):
    from goldilocks_zone.diagnosis.verdict import confidence_interval

    groups = table.groupby(axis)[column]
    xs = np.array(sorted(groups.groups), dtype=float)
    stats = [confidence_interval(groups.get_group(x)) for x in xs]
    mean = np.array([s.mean for s in stats])
    half = np.array([s.half_width if math.isfinite(s.half_width) else 0.0 for s in stats])
    return xs, mean, half


def draw(table: pd.DataFrame, summary: dict[str, Any], path: str | Path) -> list[Path]:
    """Save the figure to ``path`` (suffix picks the format; ``.png`` also gets a ``.pdf``
    twin). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".png")
    axis = summary["axis"]
    verdict = summary["verdict"]
    sym = r"\alpha" if axis == "scale" else "T"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))

    xs, mean, half = _band(table, axis, "positive_curvature")
    if verdict.get("zone"):
        lo, hi = verdict["zone"]
        ax.axvspan(lo, hi, color="gold", alpha=0.3, lw=0, label="Goldilocks zone")
    ax.fill_between(xs, mean - half, mean + half, color="tab:blue", alpha=0.2, lw=0,
                    label="95% interval")
    ax.plot(xs, mean, "o-", ms=3.5, color="tab:blue", label=r"$\kappa$ (mean)")
    now = verdict["kappa_now"]
    err = now["half_width"] if math.isfinite(now["half_width"]) else 0.0
    ax.errorbar([1.0], [now["mean"]], yerr=[err], fmt="o", ms=8, mfc="none", mec="k",
                ecolor="k", capsize=3, label="your init", zorder=5)
    if verdict.get("peak") is not None and math.isfinite(verdict["peak_kappa"]["mean"]):
        ax.plot([verdict["peak"]], [verdict["peak_kappa"]["mean"]], "*", ms=11,
                color="tab:orange", label=f"peak ${sym}^\\star$ = {verdict['peak']:.2g}",
                zorder=6)
    if verdict.get("multiplier") not in (None, 1.0):
        ax.axvline(verdict["multiplier"], color="tab:green", lw=1, ls="--",
                   label=f"suggested ${sym}$ = {verdict['multiplier']:.2g}")
    finite = mean[np.isfinite(mean)]
    top = max(float(np.max(finite + half[np.isfinite(mean)])) if finite.size else 1.0, 0.1)
    ax.set_ylim(min(-0.05 * top, float(np.min(finite - half[np.isfinite(mean)]))
                    if finite.size else 0.0), 1.15 * top)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel(r"positive curvature $\kappa$")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"verdict: {verdict['label']}", fontsize=9)

    for column, colour, label in (("g_spectral_norm", "tab:green", r"$\|G_R\|_2$"),
                                  ("h_spectral_norm", "tab:red", r"$\|H_R\|_2$")):
        gx, gm, _ = _band(table, axis, column)
        ok = np.isfinite(gm) & (gm > 0)
        if ok.any():
            ok &= gm >= _LOG_RANGE * gm[ok].max()
            ax2.plot(gx[ok], gm[ok], "o-", ms=3, color=colour, label=label)
    ax2.axvline(1.0, color="k", lw=0.8, ls=":", label="your init")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlim(xs.min() / 1.5, xs.max() * 1.5)
        a.set_xlabel(r"weight scale $\alpha$" if axis == "scale" else "softmax temperature $T$")
    ax2.set_yscale("log")
    ax2.set_ylabel("spectral norm")
    ax2.set_title(r"positive curvature needs $\|G_R\|_2 \gtrsim \|H_R\|_2$", fontsize=9)
    ax2.legend(fontsize=7, loc="best")
    name = summary.get("model_name") or "model"
    fig.suptitle(f"{name}: is the initialisation in the Goldilocks zone?", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [path] + ([path.with_suffix(".pdf")] if path.suffix == ".png" else [])
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return paths
