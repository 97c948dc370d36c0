"""What runs on a worker: one sweep point -> a JSON-ready result record.

:func:`compute_point` never raises for an experiment's own failure: an exception becomes a
``failed`` record with its type, message and traceback, so one bad point never stops a sweep.
Non-finite numbers in a table are data (``done``). The record holds the table in an exact,
typed JSON form (:func:`table_to_payload`): Python's float repr round-trips every float64,
and ``NaN`` / ``Infinity`` are kept, so the driver stores exactly what the worker computed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from typing import Any

import numpy as np
import pandas as pd

from goldilocks_zone.experiments._shared.base import RunContext, make_config

DONE = "done"
FAILED = "failed"


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def table_to_payload(table: pd.DataFrame) -> dict[str, Any]:
    """``{"columns": [...], "dtypes": [...], "data": [[row], ...]}``, exact for float64."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"an experiment's run must return a pandas.DataFrame, got "
                        f"{type(table).__name__}")
    columns = [str(c) for c in table.columns]
    if len(set(columns)) != len(columns):
        raise ValueError(f"table has duplicate column names: {columns}")
    dtypes = [str(t) for t in table.dtypes]
    data = [[_scalar(v) for v in row] for row in table.itertuples(index=False, name=None)]
    payload = {"columns": columns, "dtypes": dtypes, "data": data}
    json.dumps(payload, allow_nan=True)  # fail here, on the worker, if not serialisable
    return payload


def payload_to_table(payload: dict[str, Any]) -> pd.DataFrame:
    """Inverse of :func:`table_to_payload`."""
    columns = payload["columns"]
    table = pd.DataFrame(payload["data"], columns=columns)
    if not len(table):
        table = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for column, dtype in zip(columns, payload["dtypes"]):
        try:
            table[column] = table[column].astype(dtype)
        except (TypeError, ValueError):
            pass  # keep the inferred dtype (e.g. a nullable column restored as object)
    return table


def _json_safe(obj: Any) -> Any:
    """Round-trip ``obj`` through JSON, turning numpy values, tensors and the like into text."""

    def default(o: Any) -> Any:
        tolist = getattr(o, "tolist", None)  # numpy scalars and arrays, tensors
        if callable(tolist):
            return tolist()
        return repr(o)

    return json.loads(json.dumps(obj, default=default, allow_nan=True))


def _count_non_finite(payload: dict[str, Any]) -> int:
    return sum(1 for row in payload["data"] for v in row
               if isinstance(v, float) and not math.isfinite(v))


def compute_point(experiment_ref: str, key: str, config: dict[str, Any], *,
                  threads: int | None = 1) -> dict[str, Any]:
    """Run one point of a sweep and return its record (never raises for experiment errors).

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards): results are
    bit-identical across executors when they use the same thread count.
    """
    import torch

    from goldilocks_zone.sweep.spec import resolve_experiment

    started = time.time()
    cpu_started = time.process_time()
    record: dict[str, Any] = {
        "key": key,
        "experiment": experiment_ref,
        "config": config,
        "worker": {"host": platform.node(), "pid": os.getpid(), "threads": threads},
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None and threads > 0:
            torch.set_num_threads(threads)
        experiment = resolve_experiment(experiment_ref)
        ctx = RunContext(show_progress=False)
        table = experiment.run(make_config(experiment.config_cls, config), ctx)
        payload = table_to_payload(table)
        record.update(status=DONE, table=payload, error=None,
                      provenance=_json_safe(ctx.provenance),
                      num_rows=len(payload["data"]),
                      non_finite_values=_count_non_finite(payload))
    except Exception as exc:  # noqa: BLE001 - any experiment failure becomes data
        record.update(status=FAILED, table=None, provenance=None,
                      error=error_record(exc))
    finally:
        torch.set_num_threads(previous_threads)
    record["seconds"] = time.time() - started
    record["cpu_seconds"] = time.process_time() - cpu_started  # this process, all threads
    return record


def error_record(exc: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` of an exception."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc), "traceback": tb}


def failed_record(experiment_ref: str, key: str, config: dict[str, Any],
                  exc: BaseException) -> dict[str, Any]:
    """The record of a point whose task died outside :func:`compute_point` (e.g. a worker
    process killed by the OS), built on the driver."""
    return {
        "key": key, "experiment": experiment_ref, "config": config, "worker": None,
        "status": FAILED, "table": None, "provenance": None, "error": error_record(exc),
        "seconds": None,
    }
