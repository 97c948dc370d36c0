"""Executors: where the points of a sweep are computed.

* :class:`LocalExecutor` runs points one after another in this process.
* :class:`DaskExecutor` hands them to a Dask cluster: a ``LocalCluster`` of worker processes
  on this machine (``workers=N``, listening on 127.0.0.1 only), or an existing cluster given
  by its scheduler address (``scheduler="tcp://HOST:PORT"``, e.g. one started by
  dask-jobqueue on SLURM).

Both yield point records (see :func:`goldilocks_zone.sweep.worker.compute_point`) as the points
finish, in completion order; the driver commits each one. Workers never write files.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from goldilocks_zone.sweep.worker import compute_point, failed_record

NANNY_ENV = "distributed.nanny.pre-spawn-environ"


@dataclass(frozen=True)
class Task:
    """One point to compute: experiment reference, point key and full config dict."""

    experiment: str
    key: str
    config: dict[str, Any]


class ExecutorError(RuntimeError):
    """The executor could not start or its workers cannot run the experiment."""


class LocalExecutor:
    """Sequential, in-process execution.

    ``threads`` is the torch intra-op thread count used for each point (default 1, the same
    as a Dask worker's, so local and Dask results are bit-identical).
    """

    name = "local"

    def __init__(self, *, threads: int | None = 1):
        self.threads = threads

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": 1, "threads_per_point": self.threads}

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield compute_point(task.experiment, task.key, task.config, threads=self.threads)


class DaskExecutor:
    """Execution on a Dask cluster; only this (driver) process writes results.

    Give either ``workers`` (start a ``LocalCluster`` of that many single-threaded worker
    processes bound to 127.0.0.1, closed at exit) or ``scheduler`` (the address of a running
    cluster, left running at exit; ``connect_timeout`` seconds to reach it). ``threads`` is the
    torch thread count per point.
    """

    name = "dask"

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None,
                 threads: int | None = 1, experiment: str | None = None,
                 connect_timeout: float = 30.0):
        if (workers is None) == (scheduler is None):
            raise ValueError("give exactly one of workers (a local cluster) or scheduler")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.scheduler = scheduler
        self.threads = threads
        self.experiment = experiment
        self.connect_timeout = connect_timeout
        self._stack = contextlib.ExitStack()
        self.client: Any = None
        self.cluster: Any = None

    def __enter__(self) -> DaskExecutor:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ExecutorError(
                "the dask executor needs dask.distributed: pip install 'goldilocks-zone[dask]'"
            ) from exc
        try:
            if self.scheduler is not None:
                client = Client(self.scheduler, timeout=self.connect_timeout)
                self.client = self._stack.enter_context(client)
            else:
                import dask

                # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers; setting it at
                # all disables glibc's adaptive mmap threshold, so every large torch temporary
                # is mmap'ed and unmapped again: ~60% more CPU per point in our measurements.
                with dask.config.set({NANNY_ENV + ".MALLOC_TRIM_THRESHOLD_": None}):
                    self.cluster = self._stack.enter_context(LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR,
                    ))
                self.client = self._stack.enter_context(Client(self.cluster))
        except Exception as exc:  # OSError / TimeoutError from distributed's connection code
            self._stack.close()
            where = self.scheduler or "a local cluster"
            raise ExecutorError(f"cannot connect to {where}: {exc}") from exc
        if self.experiment is not None:
            self._check_workers(self.experiment)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _check_workers(self, experiment_ref: str) -> None:
        """Fail early, with one clear message, if workers cannot import the experiment."""
        if self.workers is not None:
            self.client.wait_for_workers(self.workers, timeout=120)
        try:
            self.client.run(exec, "from goldilocks_zone.sweep.spec import resolve_experiment\n"
                            f"resolve_experiment({experiment_ref!r})\n")
        except Exception as exc:
            raise ExecutorError(
                f"Dask workers cannot load experiment {experiment_ref!r}: "
                f"{type(exc).__name__}: {exc}. Install goldilocks-zone (and the module of a "
                "'module:ATTR' experiment) in the workers' environment."
            ) from exc

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"executor": self.name, "threads_per_point": self.threads}
        if self.client is not None:
            info["scheduler"] = self.client.scheduler.address
            with contextlib.suppress(Exception):
                info["workers"] = len(self.client.scheduler_info(n_workers=-1)["workers"])
        if self.cluster is not None:
            info["local_cluster"] = True
            info["dashboard"] = self.cluster.dashboard_link
        return info

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        from distributed import as_completed

        if not tasks:
            return
        token = uuid.uuid4().hex[:8]
        futures = {}
        for task in tasks:
            future = self.client.submit(
                compute_point, task.experiment, task.key, task.config, threads=self.threads,
                key=f"goldilocks-point-{task.key}-{token}", pure=False, retries=0,
            )
            futures[future] = task
        try:
            for future in as_completed(list(futures)):
                task = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the point failed
                    record = failed_record(task.experiment, task.key, task.config, exc)
                future.release()
                yield record
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                with contextlib.suppress(Exception):
                    self.client.cancel(pending)
