"""Sweeps across processes: a real SIGKILL mid-run and resume, Dask executors, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from goldilocks_zone.sweep import PointStore, parse_spec, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TOY = "sweep_toys:TOY"


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def sweep_command(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "goldilocks_zone.cli", "sweep", str(spec), "--out", str(out),
            "--no-progress", "--no-plot", *extra]


def committed(points_dir: Path) -> list[Path]:
    if not points_dir.is_dir():
        return []
    return [p for p in points_dir.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_point_once_with_identical_values(tmp_path):
    num_points = 8
    spec_path = tmp_path / "spec.toml"
    # ~0.2 s of eigen-solves per point: long enough to kill between commits, short overall
    spec_path.write_text(f"""
experiment = "{TOY}"
[base]
repeats = 150
[grid]
seed = {list(range(num_points // 2))}
scale = [0.5, 1e200]
""")
    out = tmp_path / "killed"
    proc = subprocess.Popen(sweep_command(spec_path, out), env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(committed(out / "points")) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the sweep committed no points in 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = len(committed(out / "points"))
    assert 2 <= at_kill < num_points, "the kill did not land mid-run"
    assert not (out / "results.csv").exists()

    resumed = subprocess.run(sweep_command(spec_path, out), env=subprocess_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = resumed.stdout.strip().splitlines()[-1]
    ran = int(summary.split(" done")[0])
    skipped = int(summary.split("failed, ")[1].split(" skipped")[0])
    assert ran + skipped == num_points and skipped >= at_kill, summary

    # every point exactly once, no temp files left, and values identical to a clean run
    files = committed(out / "points")
    spec = parse_spec({"experiment": TOY, "base": {"repeats": 150},
                       "grid": {"seed": list(range(num_points // 2)), "scale": [0.5, 1e200]}})
    assert sorted(p.stem for p in files) == sorted(p.key for p in spec.points)
    assert not [p for p in (out / "points").iterdir() if p.name.endswith(".tmp")]
    resumed_table = pd.read_parquet(out / "results.parquet")
    assert resumed_table.groupby("point_key").size().eq(3).all()  # depth 3: one block each

    clean = run_sweep(spec, tmp_path / "clean", show_progress=False, plot=False)
    assert clean.done == num_points
    clean_table = pd.read_parquet(tmp_path / "clean" / "results.parquet")
    pd.testing.assert_frame_equal(resumed_table, clean_table, check_exact=True)


MIXED = {"experiment": TOY, "quick": True,
         "grid": {"seed": [0, 1, 2], "scale": [0.5, 1e200]},
         "zip": {"fail": [False, True]}}


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in committed(out / "points")}


@pytest.mark.slow
def test_local_and_dask_local_cluster_give_identical_tables(tmp_path):
    spec = parse_spec(MIXED)
    local = run_sweep(spec, tmp_path / "local", show_progress=False, plot=False)
    dask = run_sweep(spec, tmp_path / "dask", executor="dask", workers=2, show_progress=False,
                     plot=False)
    for report in (local, dask):
        assert (report.done, report.failed) == (6, 6)
    assert dask.executor["executor"] == "dask" and dask.executor["workers"] == 2
    assert dask.executor["scheduler"].startswith("tcp://127.0.0.1:")
    assert "127.0.0.1" in dask.executor["dashboard"]
    local_table = pd.read_parquet(tmp_path / "local" / "results.parquet")
    dask_table = pd.read_parquet(tmp_path / "dask" / "results.parquet")
    pd.testing.assert_frame_equal(local_table, dask_table, check_exact=True)
    # computed in worker processes, committed by this (driver) process only
    records = _records(tmp_path / "dask")
    assert len(records) == 12
    assert all(r["worker"] is None or r["worker"]["pid"] != os.getpid()
               for r in records.values())
    failures = [r for r in records.values() if r["status"] == "failed"]
    assert len(failures) == 6
    assert all(r["error"]["type"] == "ValueError" and "Traceback" in r["error"]["traceback"]
               for r in failures)


@pytest.mark.slow
def test_dask_executor_on_an_existing_scheduler_resumes_a_local_sweep(tmp_path):
    from distributed import LocalCluster

    spec = parse_spec(MIXED)
    out = tmp_path / "out"
    # half the points locally, as if the first attempt had stopped ...
    part = parse_spec({**MIXED, "grid": {"seed": [0], "scale": [0.5, 1e200]}})
    PointStore(out).initialise(spec)
    for point in part.points:
        from goldilocks_zone.sweep import compute_point

        record = compute_point(TOY, point.key, point.config)
        PointStore(out).commit({**record, "index": 0, "grid": point.grid})
    # ... and the rest on a cluster that was started independently
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        report = run_sweep(spec, out, executor="dask", scheduler=cluster.scheduler_address,
                           show_progress=False, plot=False)
    assert (report.skipped_done, report.skipped_failed) == (2, 2)
    assert (report.done, report.failed) == (4, 4)
    reference = run_sweep(spec, tmp_path / "reference", show_progress=False, plot=False)
    assert reference.done == 6
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(tmp_path / "reference" / "results.parquet"),
                                  check_exact=True)


def test_unreachable_scheduler_is_a_clear_error():
    from goldilocks_zone.sweep import DaskExecutor, ExecutorError

    with pytest.raises(ExecutorError, match="cannot connect to tcp://127.0.0.1:9"):
        with DaskExecutor(scheduler="tcp://127.0.0.1:9", connect_timeout=1):
            pass


@pytest.mark.slow
def test_a_real_experiment_swept_equals_its_direct_runs(tmp_path):
    from goldilocks_zone.experiments import RunContext, get

    spec = parse_spec({
        "experiment": "scale-sweep", "quick": True,
        "base": {"model": "mlp", "dataset": "circles", "num_samples": 60, "dim": 4,
                 "seeds": [0], "log10_range": [-1.0, 1.0], "per_decade": 1},
        "grid": {"activation": ["relu", "tanh"]},
    })
    report = run_sweep(spec, tmp_path / "out", show_progress=False, plot=False)
    assert report.complete and report.done == 2
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    experiment = get("scale-sweep")
    for point in spec.points:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            direct = experiment.run(experiment.default_config(**point.config),
                                    RunContext(show_progress=False))
        finally:
            torch.set_num_threads(threads)
        swept = table[table["point_key"] == point.key].drop(columns=["point_key"])
        assert (swept["activation"] == point.grid["activation"]).all()
        swept = swept.drop(columns=["activation"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(swept, direct, check_exact=True)
    # the two activations really are different points with different curvature
    kappa = table.groupby("activation")["positive_curvature"].apply(list)
    assert kappa["relu"] != kappa["tanh"]
