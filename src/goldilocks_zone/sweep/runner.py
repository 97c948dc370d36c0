"""Run a registered experiment into an output folder and redraw figures from saved results.

The folder (``results.csv``, ``results.parquet``, ``manifest.json``, ``figures/``) is laid out
as in :mod:`goldilocks_zone.sweep.store`. Running one experiment is a one-point sweep as far as
results go: both are written by :func:`goldilocks_zone.files.write_results`.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.experiments._shared.base import Experiment, RunContext, config_to_dict, get
from goldilocks_zone.files import (
    FIGURES,
    MANIFEST,
    RESULTS_CSV,
    RESULTS_PARQUET,
    write_figures,
    write_results,
)
from goldilocks_zone.sweep.store import read_manifest

__all__ = ["FIGURES", "MANIFEST", "RESULTS_CSV", "RESULTS_PARQUET", "draw_figures",
           "load_results", "replot", "run_experiment"]


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("goldilocks-zone", "torch", "numpy", "scipy", "pandas", "matplotlib", "dask",
                 "distributed"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_description(device: str | None) -> str:
    import torch

    if device and device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_provenance(device: str | None, dtype: Any, seed: Any, command: list[str],
                   started: float) -> dict[str, Any]:
    """The manifest entries of a run folder that say what ran where: versions, device, dtype,
    seed, git commit, command line and start time (UTC)."""
    return {"versions": package_versions(), "device": device_description(device),
            "dtype": dtype, "seed": seed, "git_commit": git_commit(), "command": command,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}


def _plotter(experiment: Experiment, table: pd.DataFrame, config: Any):
    def draw(fig_dir: Path) -> tuple[list[Path], list[str]]:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        try:
            return [Path(p) for p in experiment.draw(table, config, fig_dir)], []
        finally:
            plt.close("all")

    return draw


def draw_figures(experiment: Experiment, table: pd.DataFrame, config: Any,
                 out_dir: Path) -> list[Path]:
    """Draw ``experiment``'s figures from ``table`` into ``out_dir/figures`` (atomically)."""
    return write_figures(Path(out_dir), _plotter(experiment, table, config))[0]


def run_experiment(name: str, config: Any = None, out_dir: str | Path | None = None, *,
                   quick: bool = False, show_progress: bool = True, plot: bool = True,
                   overrides: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict]:
    """Run experiment ``name`` and (if ``out_dir``) write table, manifest and figures.

    Returns ``(table, manifest)``.
    """
    experiment = get(name)
    if config is None:
        config = experiment.default_config(quick=quick, **(overrides or {}))
    ctx = RunContext(show_progress=show_progress)
    started = time.time()
    table = experiment.run(config, ctx)
    elapsed = time.time() - started
    config_dict = config_to_dict(config)
    manifest = {
        "experiment": experiment.id,
        "paper": experiment.paper,
        "summary": experiment.summary,
        "quick": quick,
        "config": config_dict,
        "provenance": ctx.provenance,
        **run_provenance(config_dict.get("device"), config_dict.get("dtype"),
                         config_dict.get("seed", config_dict.get("seeds")), sys.argv, started),
        "timings": {"run_seconds": elapsed},
        "num_rows": len(table),
    }
    if out_dir is not None:
        draw = _plotter(experiment, table, config) if plot else None
        manifest = write_results(out_dir, table, manifest, draw=draw)
    return table, manifest


def load_results(out_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """The table and manifest of a results folder (parquet if present, else CSV)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if (out / RESULTS_PARQUET).exists():
        return pd.read_parquet(out / RESULTS_PARQUET), manifest
    return pd.read_csv(out / RESULTS_CSV), manifest


def replot(out_dir: str | Path) -> list[Path]:
    """Redraw the figures of a results folder from its saved table (no recomputation)."""
    out = Path(out_dir)
    table, manifest = load_results(out)
    experiment = get(manifest["experiment"])
    return draw_figures(experiment, table, manifest["config"], out)
