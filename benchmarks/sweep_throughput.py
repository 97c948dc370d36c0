"""Throughput of the sweep executors: points per second, local vs Dask with 1 and 2 workers.

    PYTHONPATH=src python3 benchmarks/sweep_throughput.py [--points 8] [--modes local,dask:1,dask:2]

Every mode runs the same grid of quick ``scale-sweep`` points (an MLP on sklearn's digits,
a 13-scale curvature sweep per point; the points differ by their data subsample seed) into a
fresh folder, with one torch thread per point. Reported per mode:

* ``startup s``: validating the spec and starting the executor (for Dask: the local cluster
  and the workers' imports, which the first tasks would otherwise pay);
* ``compute s``: from the first task handed out to the last point committed;
* ``points/s``: points / compute s (the sweep's steady throughput), and points / wall s;
* ``CPU s/point``: mean CPU time of the process that computed a point, during the point
  (a measure of the work, nearly independent of other load on the machine);
* ``speedup``: compute-phase throughput relative to the local executor.

It also checks that every mode produced the same table, bit for bit. Not a test: timings
depend on the machine and on what else runs on it (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def build_spec(points: int):
    from goldilocks_zone.sweep import parse_spec

    return parse_spec({
        "experiment": "scale-sweep",
        "quick": True,
        "base": {"model": "mlp", "dataset": "digits", "num_samples": 1000, "dim": 20,
                 "seeds": [0], "per_decade": 2},
        "grid": {"data_seed": list(range(points))},
    }, source="benchmark spec")


def run_mode(spec, mode: str, root: Path) -> tuple[dict, pd.DataFrame]:
    from goldilocks_zone.sweep import run_sweep

    if mode == "local":
        kwargs = {"executor": "local"}
        workers = 1
    else:
        workers = int(mode.split(":", 1)[1])
        kwargs = {"executor": "dask", "workers": workers}
    out = root / mode.replace(":", "-")
    started = time.time()
    report = run_sweep(spec, out, show_progress=False, plot=False, **kwargs)
    wall = time.time() - started
    if not report.complete:
        raise RuntimeError(f"{mode}: {report.failed} points failed: {report.failures[:1]}")
    compute = report.seconds - report.startup_seconds
    records = [json.loads(p.read_text()) for p in (out / "points").glob("*.json")]
    cpu = sum(r["cpu_seconds"] for r in records) / len(records)
    row = {
        "executor": "local" if mode == "local" else f"dask, {workers} worker(s)",
        "points": report.total,
        "wall s": wall,
        "startup s": report.startup_seconds,
        "compute s": compute,
        "points/s": report.total / compute,
        "points/s (wall)": report.total / wall,
        "CPU s/point": cpu,
    }
    return row, pd.read_parquet(out / "results.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12, help="grid points per mode")
    parser.add_argument("--modes", default="local,dask:1,dask:2",
                        help="comma-separated: local, dask:N")
    args = parser.parse_args(argv)

    import torch

    spec = build_spec(args.points)
    rows, tables = [], []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for mode in args.modes.split(","):
            load_before = os.getloadavg()[0]
            row, table = run_mode(spec, mode.strip(), Path(tmp))
            row["load avg"] = f"{load_before:.1f}"
            rows.append(row)
            tables.append(table)
            print(f"{mode}: {row['points/s']:.3f} points/s", file=sys.stderr)
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], check_exact=True)
    result = pd.DataFrame(rows)
    base = result["points/s"].iloc[0]
    result["speedup"] = result["points/s"] / base
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, python {platform.python_version()}; tables identical across "
          "modes: yes")
    print(result.to_markdown(index=False, floatfmt=".2f") if _has_tabulate()
          else result.to_string(index=False, float_format="{:.2f}".format))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
