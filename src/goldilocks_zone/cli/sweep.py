"""``goldilocks sweep`` and ``goldilocks collect`` (called from :mod:`goldilocks_zone.cli`).

    goldilocks sweep SPEC.toml --out DIR [--executor local|dask] [--workers N]
                     [--scheduler tcp://HOST:PORT] [--threads T] [--retry-failed]
                     [--no-plot] [--no-progress] [--dry-run]
    goldilocks collect DIR [--no-plot]

Exit status of ``sweep``: 0 when every point of the spec is done, 1 when some point failed
(its record holds the error and traceback), 2 for a bad spec or options (nothing was run),
3 when a file of the sweep folder could not be written (disk full, quota, permissions; the
points committed before are kept and no partial file is left: free space and rerun the same
command to resume), 130 when interrupted (committed points are kept; rerun the same command to
resume). ``collect``: 0, 2 for a folder that is not a sweep folder, 3 for a write error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from goldilocks_zone.files import StoreWriteError
from goldilocks_zone.sweep.spec import SpecError

#: Exit codes (documented in docs/sweeps.md).
EXIT_OK, EXIT_POINT_FAILED, EXIT_USAGE, EXIT_WRITE_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goldilocks sweep",
        description="Run every point of a TOML sweep spec (an experiment and the values of "
        "its parameters to cross in [grid] or zip in [zip]) into DIR. Finished points are "
        "committed one by one; rerunning the same command resumes where it stopped. See "
        "docs/sweeps.md.",
    )
    parser.add_argument("spec", help="sweep spec (TOML)")
    parser.add_argument("--out", required=True, help="sweep folder (created if missing)")
    parser.add_argument("--executor", choices=("local", "dask"), default=None,
                        help="local: sequential in this process (default); dask: on a Dask "
                        "cluster (--workers N local processes, or --scheduler ADDRESS)")
    parser.add_argument("--workers", type=int, default=None,
                        help="start a local Dask cluster of N worker processes (implies "
                        "--executor dask)")
    parser.add_argument("--scheduler", default=None,
                        help="address of a running Dask scheduler, e.g. tcp://HOST:8786 "
                        "(implies --executor dask)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per point (default 1: results are bit-identical "
                        "across executors at equal thread counts)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun points whose earlier run failed")
    parser.add_argument("--no-plot", action="store_true", help="skip drawing figures")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the spec and list its points without running anything")
    return parser


def _collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goldilocks collect",
        description="Merge the done points of a sweep folder into DIR/results.csv and "
        "DIR/results.parquet (with the swept parameters as columns), write DIR/manifest.json "
        "and draw the experiment's figures. Safe while the sweep is still running.",
    )
    parser.add_argument("dir", help="sweep folder")
    parser.add_argument("--no-plot", action="store_true", help="skip drawing figures")
    return parser


def _print_collected(collected, out: Path) -> None:
    counts = collected.manifest["counts"]
    print(f"{counts['done']} of {counts['points']} points done, {counts['failed']} failed, "
          f"{counts['pending']} pending; {counts['rows']} rows")
    non_finite = collected.manifest["points_with_non_finite_values"]
    if non_finite:
        print(f"  {len(non_finite)} done point(s) hold non-finite values (e.g. divergence at "
              "extreme settings): kept as data")
    for failure in collected.manifest["failed_points"][:10]:
        print(f"  failed: point {failure['index']} {failure['grid']}: "
              f"{failure['error_type']}: {failure['error_message']}  "
              f"({out / failure['record']})")
    if len(collected.manifest["failed_points"]) > 10:
        print(f"  ... {len(collected.manifest['failed_points']) - 10} more failures in "
              f"{out / 'manifest.json'}")
    for message in collected.figure_errors + collected.manifest.get("table_errors", []):
        print(f"  warning: {message}")
    print(f"results: {out / 'results.csv'}")
    figures = [f for f in collected.manifest["figures"] if f.endswith(".png")]
    for fig in figures[:10]:
        print(f"figure:  {out / fig}")
    if len(figures) > 10:
        print(f"... {len(figures) - 10} more figures under {out / 'figures'}")


def _cmd_sweep(argv: list[str]) -> int:
    from goldilocks_zone.sweep.engine import run_sweep
    from goldilocks_zone.sweep.executors import ExecutorError
    from goldilocks_zone.sweep.spec import load_spec

    args = _sweep_parser().parse_args(argv)
    executor = args.executor or ("dask" if args.workers or args.scheduler else "local")
    try:
        spec = load_spec(args.spec)
        if args.dry_run:
            print(f"{len(spec.points)} points of experiment {spec.experiment!r} "
                  f"(spec hash {spec.hash}):")
            for p in spec.points:
                print(f"  {p.index:5d}  {p.key}  {p.label()}")
            return 0
        report = run_sweep(spec, args.out, executor=executor, workers=args.workers,
                           scheduler=args.scheduler, threads=args.threads,
                           retry_failed=args.retry_failed, show_progress=not args.no_progress,
                           plot=not args.no_plot)
    except (SpecError, ExecutorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreWriteError as exc:
        print(f"error: {exc}. Points committed before are kept; free space (or fix the "
              "folder) and rerun the same command to resume.", file=sys.stderr)
        return EXIT_WRITE_ERROR
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished points are kept in {args.out}; rerun the same command "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    out = Path(args.out)
    if report.collected is not None:
        _print_collected(report.collected, out)
    print(report.summary_line())
    return EXIT_OK if report.complete else EXIT_POINT_FAILED


def _cmd_collect(argv: list[str]) -> int:
    from goldilocks_zone.sweep.collect import collect

    args = _collect_parser().parse_args(argv)
    try:
        collected = collect(args.dir, plot=not args.no_plot)
    except StoreWriteError as exc:
        print(f"error: {exc}. The points are untouched; free space and rerun collect.",
              file=sys.stderr)
        return EXIT_WRITE_ERROR
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_collected(collected, Path(args.dir))
    return EXIT_OK


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is ``"sweep"`` or ``"collect"``."""
    if not argv or argv[0] not in ("sweep", "collect"):
        raise SystemExit("usage: goldilocks sweep SPEC.toml --out DIR | goldilocks collect DIR")
    if argv[0] == "sweep":
        return _cmd_sweep(argv[1:])
    return _cmd_collect(argv[1:])
