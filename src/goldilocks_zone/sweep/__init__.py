"""Sweeps at scale: resumable grids of experiment points, run locally or on Dask.

A spec (TOML) names an experiment and the values of its parameters to cross (``[grid]``) or
zip (``[zip]``); every point is one task keyed by a hash of its full config. The driver
commits each finished point atomically into ``DIR/points/<key>.json``; reruns skip done points;
``collect`` merges them into ``DIR/results.csv|parquet`` with figures. See ``docs/sweeps.md``.

Layers: :mod:`.spec` (parse, validate, expand), :mod:`.worker` (compute one point),
:mod:`.executors` (local, Dask), :mod:`.store` (atomic result store), :mod:`.engine`
(run a sweep), :mod:`.collect` (merge, manifest, figures), :mod:`.cli` (command line).
"""

from goldilocks_zone.files import (
    StoreWriteError,
    atomic_write_bytes,
    atomic_write_text,
    write_results,
)
from goldilocks_zone.sweep.collect import Collected, collect, merge_points
from goldilocks_zone.sweep.engine import SweepReport, make_executor, run_sweep
from goldilocks_zone.sweep.executors import DaskExecutor, ExecutorError, LocalExecutor, Task
from goldilocks_zone.sweep.spec import (
    SpecError,
    SweepPoint,
    SweepSpec,
    load_spec,
    parse_spec,
    point_key,
    resolve_experiment,
)
from goldilocks_zone.sweep.store import CorruptPointWarning, PointStore
from goldilocks_zone.sweep.worker import compute_point, payload_to_table, table_to_payload

__all__ = [
    "Collected",
    "CorruptPointWarning",
    "DaskExecutor",
    "ExecutorError",
    "LocalExecutor",
    "PointStore",
    "SpecError",
    "StoreWriteError",
    "SweepPoint",
    "SweepReport",
    "SweepSpec",
    "Task",
    "atomic_write_bytes",
    "atomic_write_text",
    "collect",
    "compute_point",
    "load_spec",
    "make_executor",
    "merge_points",
    "parse_spec",
    "payload_to_table",
    "point_key",
    "resolve_experiment",
    "run_sweep",
    "table_to_payload",
    "write_results",
]
