"""Merge a sweep folder's done points into one tidy table, a manifest and figures.

The merged table has one block of rows per done point, in the spec's point order (not the
order in which points finished, so it is the same for every executor), with columns

    point_key, <one column per swept parameter>, <the experiment's own columns>

Lists (tuple-valued parameters) appear as comma-separated text. If an experiment's table
already has a column named like a swept parameter holding that parameter's value in every
row, that column is the grid column; if it holds something else, the swept value goes into
``sweep_<name>`` instead (the mapping is recorded under ``grid_columns`` in the manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.files import MANIFEST, write_results
from goldilocks_zone.sweep.spec import SpecError, resolve_experiment
from goldilocks_zone.sweep.store import PointStore, read_manifest
from goldilocks_zone.sweep.worker import DONE, FAILED, payload_to_table

POINT_KEY = "point_key"


@dataclass
class Collected:
    """What :func:`collect` produced."""

    table: pd.DataFrame
    manifest: dict[str, Any]
    figures: list[Path] = field(default_factory=list)
    figure_errors: list[str] = field(default_factory=list)


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(_cell(v)) for v in value)
    return value


def _matches(column: pd.Series, value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return False
    try:
        return bool((column == value).all())
    except (TypeError, ValueError):
        return False


def merge_points(store: PointStore, *, sweep: dict[str, Any] | None = None
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The merged table of ``store``'s done points and a description of what it holds.

    ``sweep`` is the folder's ``sweep.json`` (:meth:`PointStore.read_sweep`) if the caller has
    already read it; otherwise it is read here.
    """
    if sweep is None:
        sweep = store.read_sweep()
    swept: list[str] = sweep["swept"]
    points = sorted(sweep["points"], key=lambda p: p["index"])
    records = {p["key"]: r for p in points if (r := store.load(p["key"])) is not None}
    done = [p for p in points if records.get(p["key"], {}).get("status") == DONE]
    failed = [p for p in points if records.get(p["key"], {}).get("status") == FAILED]
    tables = [(p, payload_to_table(records[p["key"]]["table"])) for p in done]
    grid_columns: dict[str, str] = {}
    in_table: set[str] = set()
    for name in swept:
        present = [name in t.columns for _, t in tables]
        if name == POINT_KEY:
            grid_columns[name] = f"sweep_{name}"
        elif not any(present):
            grid_columns[name] = name
        elif all(present) and all(_matches(t[name], p["grid"][name]) for p, t in tables):
            grid_columns[name] = name  # the experiment's own column already holds the value
            in_table.add(name)
        else:
            grid_columns[name] = f"sweep_{name}"
    blocks = []
    for p, t in tables:
        front = {POINT_KEY: [p["key"]] * len(t)}
        for name in swept:
            if name in in_table:
                front[name] = t[name]
            else:
                front[grid_columns[name]] = [_cell(p["grid"][name])] * len(t)
        rest = t.drop(columns=sorted(in_table))
        blocks.append(pd.concat([pd.DataFrame(front, index=t.index), rest], axis=1))
    table = (pd.concat(blocks, ignore_index=True) if blocks
             else pd.DataFrame(columns=[POINT_KEY, *grid_columns.values()]))
    seconds = [records[p["key"]].get("seconds") or 0.0 for p in done + failed]
    info = {
        "counts": {"points": len(points), "done": len(done), "failed": len(failed),
                   "pending": len(points) - len(done) - len(failed), "rows": len(table)},
        "grid_columns": grid_columns,
        "failed_points": [
            {"index": p["index"], "key": p["key"], "grid": p["grid"],
             "error_type": records[p["key"]]["error"]["type"],
             "error_message": records[p["key"]]["error"]["message"],
             "record": str(store.point_path(p["key"]).relative_to(store.root))}
            for p in failed
        ],
        "points_with_non_finite_values": [
            p["key"] for p in done if records[p["key"]].get("non_finite_values")
        ],
        "point_seconds_total": float(sum(seconds)),
        "configs": {p["key"]: records[p["key"]]["config"] for p in done},
    }
    return table, info


def _slug(grid: Mapping[str, Any]) -> str:
    text = "_".join(f"{k}={_cell(v)}" for k, v in grid.items())
    text = re.sub(r"[^A-Za-z0-9._,=+-]+", "-", text).strip("-") or "all"
    if len(text) > 80:
        text = text[:64] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text


def draw_sweep_figures(experiment_ref: str, table: pd.DataFrame, sweep: dict[str, Any],
                       info: dict[str, Any], fig_root: Path) -> tuple[list[Path], list[str]]:
    """Draw the experiment's figures, one set per value of the ``[figures] by`` parameters
    (default: every swept parameter, i.e. one set per point).

    Each set is drawn from the merged rows of its points, with the config of its first point.
    A figure that fails is reported in the returned error list; it never loses results.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    try:
        experiment = resolve_experiment(experiment_ref)
    except SpecError as exc:
        return [], [f"figures skipped: {exc}"]
    by_spec = sweep["spec"].get("figures", {}).get("by")
    by = list(sweep["swept"]) if by_spec is None else list(by_spec)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for p in sorted(sweep["points"], key=lambda p: p["index"]):
        if p["key"] in info["configs"]:
            ident = tuple(_cell(p["grid"][name]) for name in by)
            groups.setdefault(ident, []).append(p)
    figures: list[Path] = []
    errors: list[str] = []
    for ident, members in groups.items():
        keys = [p["key"] for p in members]
        rows = table[table[POINT_KEY].isin(keys)].reset_index(drop=True)
        config = info["configs"][keys[0]]
        fig_dir = fig_root if len(groups) == 1 else fig_root / _slug(dict(zip(by, ident)))
        fig_dir.mkdir(parents=True, exist_ok=True)
        try:
            figures.extend(Path(f) for f in experiment.draw(rows, config, fig_dir))
        except Exception as exc:  # noqa: BLE001 - a figure must never lose results
            label = ", ".join(f"{k}={v}" for k, v in zip(by, ident)) or "all points"
            errors.append(f"figure for {label} failed: {type(exc).__name__}: {exc}")
        finally:
            plt.close("all")
    return figures, errors


def collect(out_dir: str | Path, *, plot: bool = True,
            run_info: dict[str, Any] | None = None) -> Collected:
    """Merge the done points of sweep folder ``out_dir`` into ``results.csv`` /
    ``results.parquet``, write ``manifest.json`` and (if ``plot``) the figures, all through
    :func:`goldilocks_zone.files.write_results` (the writer of ``goldilocks run`` too).

    Safe to run at any time, also while a sweep is running (it reads committed points only)
    and while other collects run (every file is replaced atomically under a unique temp name,
    so readers see a complete old or a complete new file).
    ``run_info`` (counts and timings of the sweep run that just finished) goes into the
    manifest under ``last_run``; without it the previous ``last_run`` is kept.
    """
    from goldilocks_zone.sweep.runner import git_commit, package_versions

    started = time.time()
    store = PointStore(out_dir)
    sweep = store.read_sweep()  # read once: the merge, the manifest and the figures share it
    table, info = merge_points(store, sweep=sweep)
    spec = sweep["spec"]
    ref = spec["experiment"]
    merge_seconds = time.time() - started

    previous_run = None
    if run_info is None and (store.root / MANIFEST).is_file():
        with contextlib.suppress(Exception):  # an unreadable old manifest is just replaced
            previous_run = read_manifest(store.root).get("last_run")

    draw = None
    if plot and info["counts"]["done"]:
        def draw(fig_root: Path) -> tuple[list[Path], list[str]]:
            return draw_sweep_figures(ref, table, sweep, info, fig_root)

    manifest = {
        "kind": "sweep",
        "experiment": ref,
        "spec": spec,
        "spec_hash": sweep["spec_hash"],
        "quick": spec["quick"],
        "config": next(iter(info["configs"].values()), None),
        "swept": sweep["swept"],
        "grid_columns": info["grid_columns"],
        "counts": info["counts"],
        "failed_points": info["failed_points"],
        "points_with_non_finite_values": info["points_with_non_finite_values"],
        "timings": {"point_seconds_total": info["point_seconds_total"],
                    "merge_seconds": merge_seconds, "plot_seconds": 0.0},
        "last_run": run_info if run_info is not None else previous_run,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "collected_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_rows": len(table),
    }
    manifest = write_results(store.root, table, manifest, draw=draw)
    return Collected(table=table, manifest=manifest,
                     figures=[store.root / f for f in manifest["figures"]],
                     figure_errors=manifest["figure_errors"])
