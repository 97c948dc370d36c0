"""Figure conventions shared by experiments: paper-ready style, PNG + PDF output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "figure.dpi": 120,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.4, height: float = 2.6,
               **kwargs):
    """A figure with ``nrows x ncols`` axes of ``width x height`` inches each."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, **kwargs)
    for ax in axes.flat:
        for key, value in STYLE.items():
            if key == "axes.grid":
                ax.grid(value, alpha=STYLE["grid.alpha"])
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
    return fig, axes


def save_figure(fig, fig_dir: Path, name: str, *, tight_layout: bool = True) -> list[Path]:
    """Save ``fig`` as ``fig_dir/name.png`` and ``.pdf``; close it; return both paths.

    ``tight_layout=False`` skips :meth:`Figure.tight_layout`, which does not cooperate with a
    colorbar spanning several axes (the bounding box is still tight)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    if tight_layout:
        fig.tight_layout()
    paths = [fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return paths


def style_axis(ax, *, xlabel: str | None = None, ylabel: str | None = None,
               title: str | None = None, title_size: float | None = 9,
               xscale: str | None = None, yscale: str | None = None,
               xlim: tuple[Any, Any] | None = None, ylim: tuple[Any, Any] | None = None,
               legend: dict[str, Any] | None = None) -> None:
    """Scale, limit and label one panel: ``xscale``/``yscale`` (``"log"``, ...), ``xlim``/
    ``ylim`` (``(lo, hi)``; a ``None`` end stays automatic), axis labels, a title of
    ``title_size`` points (``None``: matplotlib's title size) and, when ``legend`` is given,
    a legend drawn with those keyword arguments (``{}``: the defaults)."""
    if xscale is not None:
        ax.set_xscale(xscale)
    if yscale is not None:
        ax.set_yscale(yscale)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if legend is not None:
        ax.legend(**legend)


def log_colours(values, *, fallback: Any, cmap: str = "viridis"):
    """Colours of ``values`` on a log colour scale: ``(colour, norm)`` with ``colour(v)`` the
    colour of ``v``; with a single distinct value ``norm`` is ``None`` and every colour is
    ``fallback`` (a colour, or a float: that position of the colour map)."""
    colour_map = matplotlib.colormaps[cmap]
    values = list(values)
    norm = (matplotlib.colors.LogNorm(vmin=min(values), vmax=max(values))
            if len(values) > 1 else None)
    if isinstance(fallback, float):
        fallback = colour_map(fallback)

    def colour(value: float):
        return colour_map(norm(value)) if norm is not None else fallback

    return colour, norm


def band(ax, table: pd.DataFrame, x: str, y: str, *, label: str | None = None,
         color: str | None = None, marker: str | None = "o", linestyle: str = "-",
         alpha: float = 0.2, markersize: float = 3.0, **kwargs):
    """Seed mean of ``y`` against ``x`` with a min-max band over seeds; returns the line.

    A curve with no finite value (overflow at extreme scales) is data, not an error: the axis
    keeps the curve's x range (also on a log axis) and says "no finite values" in its
    middle."""
    g = table.groupby(x)[y].agg(["mean", "min", "max", "count"]).sort_index()
    xs = g.index.to_numpy(dtype=float)
    if len(xs) and not np.isfinite(g["mean"].to_numpy(dtype=float)).any():
        lo, hi = float(xs.min()), float(xs.max())
        ax.set_xlim(lo / 2 if lo == hi else lo, hi * 2 if lo == hi else hi)
        ax.text(0.5, 0.5, f"no finite values of {y}", transform=ax.transAxes, ha="center",
                va="center", fontsize=8, color="0.4")
    (line,) = ax.plot(xs, g["mean"].to_numpy(), label=label, color=color, marker=marker,
                      linestyle=linestyle, markersize=markersize, **kwargs)
    if (g["count"] > 1).any():
        ax.fill_between(xs, g["min"].to_numpy(), g["max"].to_numpy(), color=line.get_color(),
                        alpha=alpha, linewidth=0)
    return line


def describe(config: Any) -> str:
    """Short subtitle of a curvature config: model, dataset, samples, d, basis, seeds."""
    seeds = config.seeds
    return (f"{config.model} on {config.dataset} "
            f"(S={config.num_samples}, d={config.dim}, {config.basis} "
            f"basis, {len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
