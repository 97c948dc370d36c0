"""The run folder of a diagnosis, laid out like ``goldilocks run``'s::

    DIR/manifest.json          kind "diagnosis", options, provenance, versions, device, timings
    DIR/results.csv|.parquet   the tidy table (one row per init, basis and axis value)
    DIR/diagnosis.json         the summary: verdict, zone, intervals, advice
    DIR/report.txt             the plain-language report
    DIR/figures/diagnosis.png|.pdf

``goldilocks plot DIR`` redraws the figure from the table and summary (:func:`redraw`). Every
file is written by the package's atomic writer (:mod:`goldilocks_zone.files`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.diagnosis.figure import draw
from goldilocks_zone.diagnosis.report import Diagnosis
from goldilocks_zone.files import (
    FIGURES,
    MANIFEST,
    RESULTS_CSV,
    RESULTS_PARQUET,
    atomic_write_text,
    write_results,
)

__all__ = ["KIND", "check_out_dir", "redraw", "remove_stale", "write_run_folder"]

KIND = "diagnosis"
SUMMARY = "diagnosis.json"
REPORT = "report.txt"
FIGURE = Path(FIGURES) / "diagnosis.png"
#: Everything a diagnosis writes (and what older versions wrote): removed before a rerun.
OWNED = (MANIFEST, SUMMARY, REPORT, RESULTS_CSV, RESULTS_PARQUET, str(FIGURE),
         str(FIGURE.with_suffix(".pdf")), "temperature_sweep.csv", "scale_sweep.csv",
         "diagnosis.png", "diagnosis.pdf")


def check_out_dir(out: str | Path) -> Path:
    """Create ``out`` (with parents) and prove it writable, before any computation.

    Raises ValueError naming the problem: ``out`` is a file, a parent is a file, or the folder
    cannot be written.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; choose a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"--out {str(out)!r} is not a writable folder ({exc.strerror or exc})"
                         ) from None
    return path


def remove_stale(out: Path) -> list[Path]:
    """Delete the files a previous diagnosis (or run) left in ``out``; returns them."""
    removed = []
    for name in OWNED:
        p = out / name
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def write_run_folder(out: Path, result: Diagnosis, manifest: dict[str, Any]) -> list[Path]:
    """Write summary and report, then table, figure and (last, so that a folder with a
    manifest is complete) the manifest with ``"kind": "diagnosis"``, all through the package's
    atomic writer (:func:`goldilocks_zone.files.write_results`, the writer of ``goldilocks
    run``'s folders too). Returns the figure paths."""
    summary = result.summary()
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, allow_nan=True))
    atomic_write_text(out / REPORT, result.report() + "\n")
    written = write_results(out, result.table, {**manifest, "kind": KIND,
                                                "num_rows": len(result.table)},
                            draw=lambda fig_dir: (draw(result.table, summary,
                                                       fig_dir / FIGURE.name), []))
    return [out / f for f in written["figures"]]


def redraw(out: str | Path, fig_dir: str | Path | None = None) -> list[Path]:
    """Redraw the figure of a diagnosis folder from its table and summary, into ``fig_dir``
    (default ``out/figures``)."""
    out = Path(out)
    summary_path = out / SUMMARY
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} not found: {out} is not a folder written by "
                                "'goldilocks diagnose --out'")
    summary = json.loads(summary_path.read_text())
    if (out / RESULTS_PARQUET).exists():
        table = pd.read_parquet(out / RESULTS_PARQUET)
    else:
        table = pd.read_csv(out / RESULTS_CSV)
    return draw(table, summary, Path(fig_dir) / FIGURE.name if fig_dir else out / FIGURE)

