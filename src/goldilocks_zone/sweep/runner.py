"""Run a registered experiment into an output folder and redraw figures from saved results.

Layout of an output folder::

    DIR/results.csv        one tidy row per measured point
    DIR/results.parquet    the same table, typed
    DIR/manifest.json      experiment id, full config, provenance, versions, device, timings
    DIR/figures/*.png|pdf  the paper's figure(s), drawn from the table alone
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.experiments._shared.base import Experiment, RunContext, config_to_dict, get

MANIFEST = "manifest.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
FIGURES = "figures"


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


def write_table(table: pd.DataFrame, out_dir: Path) -> None:
    """Write ``results.csv`` and ``results.parquet`` atomically (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (RESULTS_CSV + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out_dir / RESULTS_CSV)
    tmp = out_dir / (RESULTS_PARQUET + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out_dir / RESULTS_PARQUET)


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))
    tmp.replace(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def draw_figures(experiment: Experiment, table: pd.DataFrame, config: Any,
                 out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    fig_dir = out_dir / FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    return experiment.draw(table, config, fig_dir)


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
        "versions": package_versions(),
        "device": device_description(config_dict.get("device")),
        "dtype": config_dict.get("dtype"),
        "seed": config_dict.get("seed", config_dict.get("seeds")),
        "git_commit": git_commit(),
        "command": sys.argv,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "timings": {"run_seconds": elapsed},
        "num_rows": len(table),
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_table(table, out)
        if plot:
            t0 = time.time()
            figures = draw_figures(experiment, table, config, out)
            manifest["timings"]["plot_seconds"] = time.time() - t0
            manifest["figures"] = [str(p.relative_to(out)) for p in figures]
        write_json(manifest, out / MANIFEST)
    return table, manifest


def load_results(out_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"{manifest_path} not found: {out} is not a results folder written by "
            "'goldilocks run' or 'goldilocks collect'"
        )
    manifest = json.loads(manifest_path.read_text())
    if (out / RESULTS_PARQUET).exists():
        table = pd.read_parquet(out / RESULTS_PARQUET)
    else:
        table = pd.read_csv(out / RESULTS_CSV)
    return table, manifest


def replot(out_dir: str | Path) -> list[Path]:
    """Redraw the figures of a results folder from its saved table (no recomputation)."""
    out = Path(out_dir)
    table, manifest = load_results(out)
    experiment = get(manifest["experiment"])
    return draw_figures(experiment, table, manifest["config"], out)
