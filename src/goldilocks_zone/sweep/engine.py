"""Run a sweep: validate, skip finished points, execute the rest, commit each as it finishes.

Only this (driver) process writes to the sweep folder, and it holds the folder's lock while it
runs. A point is committed the moment its record arrives, so a crash or a kill loses at most
the points that were still computing; rerunning the same spec into the same folder resumes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goldilocks_zone.sweep.collect import Collected, collect
from goldilocks_zone.sweep.executors import DaskExecutor, LocalExecutor, Task
from goldilocks_zone.sweep.spec import SpecError, SweepSpec, load_spec
from goldilocks_zone.sweep.store import PointStore
from goldilocks_zone.sweep.worker import DONE, FAILED

EXECUTORS = ("local", "dask")


@dataclass
class SweepReport:
    """Counts and timings of one :func:`run_sweep` call.

    ``done`` / ``failed`` count the points computed by this call; ``skipped_done`` the points
    already done before it; ``skipped_failed`` the points that had failed before and were not
    retried (``retry_failed=False``). ``seconds`` is the wall time of the call before collect,
    ``startup_seconds`` the part of it spent validating and starting the executor (e.g. a Dask
    cluster and its workers' imports).
    """

    out_dir: Path
    total: int
    done: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    executor: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    collected: Collected | None = None

    @property
    def complete(self) -> bool:
        """Every point of the spec is done (none failed, none pending)."""
        return self.done + self.skipped_done == self.total

    def summary_line(self) -> str:
        line = (f"{self.done} done, {self.failed} failed, {self.skipped_done} skipped "
                f"(already done)")
        if self.skipped_failed:
            line += f", {self.skipped_failed} skipped (failed before; --retry-failed reruns them)"
        return line + f" in {self.seconds:.1f} s"

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "failed": self.failed,
                "skipped_done": self.skipped_done, "skipped_failed": self.skipped_failed,
                "seconds": self.seconds, "startup_seconds": self.startup_seconds,
                "executor": self.executor,
                "points_per_second": (self.done + self.failed) / self.seconds
                if self.seconds > 0 else None}


def make_executor(executor: str = "local", *, workers: int | None = None,
                  scheduler: str | None = None, threads: int | None = 1,
                  experiment: str | None = None) -> LocalExecutor | DaskExecutor:
    """Build an executor by name, checking the option combination."""
    if executor not in EXECUTORS:
        raise SpecError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if threads is not None and threads < 1:
        raise SpecError(f"threads must be >= 1, got {threads}")
    if executor == "local":
        if workers is not None or scheduler is not None:
            raise SpecError("--workers and --scheduler need --executor dask")
        return LocalExecutor(threads=threads)
    if workers is not None and scheduler is not None:
        raise SpecError("give --workers (start a local cluster) or --scheduler (use a running "
                        "cluster), not both")
    if workers is not None and workers < 1:
        raise SpecError(f"--workers must be >= 1, got {workers}")
    return DaskExecutor(workers=1 if workers is None and scheduler is None else workers,
                        scheduler=scheduler, threads=threads, experiment=experiment)


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path, *, executor: str = "local",
              workers: int | None = None, scheduler: str | None = None,
              threads: int | None = 1, retry_failed: bool = False, show_progress: bool = True,
              plot: bool = True, collect_results: bool = True) -> SweepReport:
    """Run the points of ``spec`` that are not done yet into ``out_dir``; return a report.

    Everything is validated (spec, executor options, the folder's own spec) before any point
    runs; problems raise :class:`SpecError`. At the end the done points are merged into
    ``results.csv`` / ``results.parquet`` with figures (see :func:`collect`), unless
    ``collect_results`` is off.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    runner = make_executor(executor, workers=workers, scheduler=scheduler, threads=threads,
                           experiment=spec.experiment)
    store = PointStore(out_dir)
    store.check_compatible(spec)  # before creating anything; checked again under the lock
    started = time.time()
    report = SweepReport(out_dir=store.root, total=len(spec.points))
    with store.lock():
        store.initialise(spec)
        store.remove_orphans()
        statuses = store.statuses()
        todo = []
        for point in spec.points:
            status = statuses.get(point.key)
            if status == DONE:
                report.skipped_done += 1
            elif status == FAILED and not retry_failed:
                report.skipped_failed += 1
            else:
                todo.append(point)
        by_key = {p.key: p for p in todo}
        tasks = [Task(spec.experiment, p.key, p.config) for p in todo]
        if show_progress:
            print(f"sweep: {len(tasks)} of {report.total} points to run "
                  f"({report.skipped_done} already done, {report.skipped_failed} failed before "
                  f"and not retried) with the {runner.name} executor", file=sys.stderr)
        bar = None
        try:
            if tasks:
                with runner:
                    report.startup_seconds = time.time() - started
                    report.executor = runner.describe()
                    bar = _progress_bar(len(tasks), show_progress)
                    for record in runner.run(tasks):
                        point = by_key[record["key"]]
                        record.update(index=point.index, grid=point.grid,
                                      committed_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime()))
                        store.commit(record)
                        if record["status"] == DONE:
                            report.done += 1
                        else:
                            report.failed += 1
                            failure = {"index": point.index, "key": point.key,
                                       "grid": point.grid, **record["error"]}
                            report.failures.append(failure)
                            if bar is not None:
                                bar.write(f"point {point.index} ({point.label()}) failed: "
                                          f"{failure['type']}: {failure['message']}")
                        if bar is not None:
                            left = len(tasks) - report.done - report.failed
                            bar.set_postfix_str(f"done={report.done} failed={report.failed} "
                                                f"left={left}", refresh=False)
                            bar.update(1)
            else:
                report.executor = {"executor": executor, "note": "nothing to run"}
        finally:
            if bar is not None:
                bar.close()
            report.seconds = time.time() - started
        if collect_results:
            report.collected = collect(store.root, plot=plot, run_info=report.as_dict())
    return report


def _progress_bar(total: int, show: bool):
    if not show or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="pt", dynamic_ncols=True,
                postfix=f"done=0 failed=0 left={total}")
