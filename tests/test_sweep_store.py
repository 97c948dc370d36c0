"""The sweep result store under faults: divergent points, concurrent collects, corrupted
records and write errors (docs/sweeps.md, "Guarantees")."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from goldilocks_zone.cli import sweep as sweep_cli
from goldilocks_zone.sweep import (
    CorruptPointWarning,
    PointStore,
    StoreWriteError,
    atomic_write_bytes,
    merge_points,
    parse_spec,
    run_sweep,
)
from goldilocks_zone.sweep.store import record_checksum

ROOT = Path(__file__).resolve().parents[1]
TOY = "sweep_toys:TOY"


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- divergence is data


def test_an_all_nan_scale_sweep_cell_is_done_and_listed_among_non_finite_points(tmp_path):
    """A scale-sweep cell at scales 1e104..1e105 overflows everywhere (every κ is NaN): the
    point is done, its summary says so, and the manifest lists it; the finite cell beside it
    gets a zone from the same summary."""
    spec = parse_spec({
        "experiment": "scale-sweep", "quick": True,
        "base": {"model": "demo", "dataset": "digits", "num_samples": 40, "dim": 3,
                 "seeds": [0], "per_decade": 1},
        "grid": {"log10_range": [[104.0, 105.0], [-1.0, 1.0]]},
    })
    divergent, finite = (p.key for p in spec.points)
    report = run_sweep(spec, tmp_path / "out", show_progress=False, plot=False)
    assert (report.done, report.failed) == (2, 0), report.failures
    manifest = report.collected.manifest
    assert manifest["points_with_non_finite_values"] == [divergent]
    table = report.collected.table
    cell = table[table["point_key"] == divergent]
    assert len(cell) == 2 and cell["positive_curvature"].isna().all()
    assert not cell["finite"].any()

    store = PointStore(tmp_path / "out")
    summary = store.load(divergent)["provenance"]["summary"]
    assert summary["all_non_finite"] is True
    assert math.isnan(summary["peak_kappa"]) and math.isnan(summary["scale_at_peak"])
    assert summary["zone"] is None
    ok = store.load(finite)["provenance"]["summary"]
    assert ok["all_non_finite"] is False and math.isfinite(ok["peak_kappa"])
    assert ok["scale_at_peak"] in (0.1, 1.0, 10.0)


def _curvature_table(kappa: float) -> pd.DataFrame:
    rows = []
    for term in ("hessian", "g_term", "h_term"):
        for seed in (0, 1):
            for scale in (0.1, 1.0, 10.0):
                rows.append({"term": term, "seed": seed, "scale": scale, "dim": 4,
                             "positive_curvature": kappa, "fraction_positive": kappa,
                             "spectral_norm": kappa, "loss": kappa, "finite": False,
                             "num_classes": 3, "degree": 2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_zone_peak_and_slope_summary_reports_a_non_finite_curve(value):
    """Zone finding, peaks and slopes on curves with no finite value: NaN plus a flag, never
    an exception (``idxmax`` of an all-NaN curve used to raise)."""
    from goldilocks_zone.experiments import gauss_newton, radius_shell, random_model, simplex
    from goldilocks_zone.experiments.scale_sweep import zone_summary

    table = _curvature_table(value)
    zone = zone_summary(table)
    assert zone["all_non_finite"] is True and zone["zone"] is None
    assert math.isnan(zone["peak_kappa"]) and math.isnan(zone["scale_at_peak"])
    assert zone["non_finite_rows"] == 6

    fit = gauss_newton.fit_small_scale_slopes(table)
    assert math.isnan(fit["g_term"]["slope"]) and math.isnan(fit["h_term"]["slope"])
    summary = gauss_newton.summarise(table, fit)
    assert summary["all_non_finite"] is True and math.isnan(summary["peak_kappa_hessian"])
    assert summary["condition_scales"] is None

    shells = pd.DataFrame([{"architecture": "mlp", "activation": "relu", "dataset": "digits",
                            "relative_radius": r, "positive_curvature": value,
                            "fraction_positive": value, "kaiming_radius": 2.0,
                            "xavier_radius": 1.0, "seed": 0} for r in (0.1, 1.0, 10.0)])
    shell = radius_shell.shell_table(shells).iloc[0]
    assert shell["all_non_finite"] and math.isnan(shell["peak"])
    assert math.isnan(shell["shell_lo"]) and math.isnan(shell["peak_relative_radius"])
    assert radius_shell.summarise(shells)["networks_all_non_finite"] == 1

    sigma = pd.DataFrame([{"section": "sigma_z", "label_margin": math.nan, "sigma_z": s,
                           "positive_curvature": value, "top_eigenvalue": value}
                          for s in (0.1, 1.0, 10.0)])
    rm = random_model.summarise(sigma, top_k=3, label_margin=1.0)
    assert rm["kappa_all_non_finite"] is True and math.isnan(rm["sigma_z_at_peak_kappa"])
    assert math.isnan(rm["sigma_z_at_peak_top_eigenvalue"])

    radial = [{"section": "radial", "step": 0, "scale": s, "logit_variance": value}
              for s in (0.1, 1.0, 10.0)]
    training = [{"section": "training", "step": t, "logit_std": value, "logit_variance": value,
                 "gradient_length": value, "weight_norm": 1.0, "mean_entropy": value,
                 "train_accuracy": 0.5} for t in range(4)]
    slopes = simplex.summarise(pd.DataFrame(radial + training))
    assert math.isnan(slopes["radial_log_slope"])
    assert math.isnan(slopes["gradient_growth_exponent"])


# --------------------------------------------------------------------------- checksums


def test_a_flipped_digit_in_a_committed_point_is_detected_and_the_point_recomputed(tmp_path):
    spec = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [0, 1, 2]}})
    out = tmp_path / "out"
    first = run_sweep(spec, out, show_progress=False, plot=False)
    assert first.done == 3
    store = PointStore(out)
    key = spec.points[1].key
    path = store.point_path(key)
    original = json.loads(path.read_text())
    assert original["checksum"] == record_checksum(original)

    # flip one digit of a measured value; the file still parses as a valid record
    text = path.read_text()
    data_at = text.index('"data":')
    match = re.compile(r"\d\.(\d)").search(text, data_at)
    digit = match.start(1)
    flipped = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:]
    path.write_text(flipped)
    assert json.loads(flipped)["status"] == "done"

    with pytest.warns(CorruptPointWarning, match="checksum"):
        assert store.load(key) is None
    with pytest.warns(CorruptPointWarning):
        _, info = merge_points(store)
    assert info["counts"]["done"] == 2 and info["counts"]["pending"] == 1

    with pytest.warns(CorruptPointWarning):
        again = run_sweep(spec, out, show_progress=False, plot=False)
    assert (again.done, again.skipped_done) == (1, 2)
    recomputed = store.load(key)
    assert recomputed["table"] == original["table"]  # the very same numbers
    assert recomputed["checksum"] == record_checksum(recomputed)
    assert again.collected.manifest["counts"]["done"] == 3


# --------------------------------------------------------------------------- write errors


def test_a_write_error_exits_3_with_one_line_and_leaves_no_partial_point(tmp_path, capsys,
                                                                         monkeypatch):
    """Disk full (ENOSPC on the fsync of a point file) -> exit 3, a one-line message, no point
    file and no temp file; rerunning the same command resumes to completion."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f'experiment = "{TOY}"\nquick = true\n[grid]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    real_fsync = os.fsync

    def full_disk(fd):
        if "/points/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    code = sweep_cli.main(["sweep", str(spec_path), "--out", str(out), "--no-progress",
                           "--no-plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == sweep_cli.EXIT_WRITE_ERROR == 3
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert err[0].startswith("error: cannot write ") and "points" in err[0]
    assert list((out / "points").iterdir()) == []  # nothing committed, no temp file
    assert not (out / "results.csv").exists()

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sweep_cli.main(["sweep", str(spec_path), "--out", str(out), "--no-progress",
                           "--no-plot"]) == 0
    assert len(list((out / "points").iterdir())) == 2


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="POSIX file-size limit")
def test_a_file_size_limit_in_a_real_process_exits_3_and_resume_completes(tmp_path):
    spec_path = tmp_path / "spec.toml"
    # depth 80: each point record is ~10 kB, above the 4 kB limit; sweep.json stays below it
    spec_path.write_text(f'experiment = "{TOY}"\nquick = true\n[base]\ndepth = 80\nwidth = 8\n'
                         '[grid]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "goldilocks_zone.cli", "sweep", str(spec_path), "--out",
           str(out), "--no-progress", "--no-plot"]

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    limited = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True,
                             timeout=300, preexec_fn=limit)
    assert limited.returncode == 3, limited.stderr
    lines = limited.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], limited.stderr
    assert list((out / "points").iterdir()) == []
    resumed = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert pd.read_csv(out / "results.csv")["point_key"].nunique() == 2


def test_atomic_write_failure_is_a_store_write_error_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "table.bin"
    atomic_write_bytes(path, b"old")

    def full(fd, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreWriteError, match="No space left") as info:
        atomic_write_bytes(path, b"new")
    assert info.value.errno == errno.ENOSPC and info.value.path == path
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]


# --------------------------------------------------------------------------- concurrent collects

COLLECTOR = """
import sys, time
from pathlib import Path
from goldilocks_zone.sweep import collect
out, stop, plot = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
calls = 0
while True:
    done = stop.exists()
    collect(out, plot=plot)
    calls += 1
    if done and calls >= 3:  # overlap the other collectors even when the sweep was quick
        break
print(calls)
"""


@pytest.mark.slow
def test_concurrent_collects_during_a_sweep_never_fail_or_expose_a_partial_file(tmp_path):
    """8 collect processes loop while a sweep runs (and collects itself at the end); a reader
    parses results.csv and manifest.json the whole time. No collect fails, every read sees a
    complete file, and no temp file is left."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f'experiment = "{TOY}"\n[base]\nrepeats = 20\n[grid]\n'
                         f'seed = {list(range(8))}\n')
    out = tmp_path / "out"
    stop = tmp_path / "stop"
    script = tmp_path / "collector.py"
    script.write_text(COLLECTOR)
    env = subprocess_env()
    sweep = subprocess.Popen([sys.executable, "-m", "goldilocks_zone.cli", "sweep",
                              str(spec_path), "--out", str(out), "--no-progress"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    collectors: list[subprocess.Popen] = []
    reads = {"csv": 0, "manifest": 0}
    try:
        deadline = time.time() + 120
        while not (out / "sweep.json").exists():
            assert sweep.poll() is None, sweep.communicate()
            assert time.time() < deadline
            time.sleep(0.01)
        collectors = [subprocess.Popen([sys.executable, str(script), str(out), str(stop),
                                        "1" if i < 2 else "0"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for i in range(8)]
        deadline = time.time() + 400
        while any(p.poll() is None for p in [sweep, *collectors]):
            assert time.time() < deadline, "the sweep or a collector hung"
            if sweep.poll() is not None and not stop.exists():
                stop.touch()
            if (out / "results.csv").exists():
                rows = pd.read_csv(out / "results.csv")
                assert len(rows) % 3 == 0 and rows["point_key"].notna().all()
                reads["csv"] += 1
            if (out / "manifest.json").exists():
                manifest = json.loads((out / "manifest.json").read_text())
                assert manifest["kind"] == "sweep" and manifest["counts"]["points"] == 8
                reads["manifest"] += 1
    finally:
        for p in [sweep, *collectors]:
            if p.poll() is None:
                p.kill()
                p.wait()
    sweep_out, sweep_err = sweep.communicate()
    assert sweep.returncode == 0, sweep_err
    calls = 0
    for p in collectors:
        stdout, stderr = p.communicate()
        assert p.returncode == 0, stderr
        calls += int(stdout.strip())
    print("collect calls", calls, "reads", reads)
    assert calls >= 24 and reads["csv"] > 10 and reads["manifest"] > 10, (calls, reads)
    assert temp_files(out) == []
    final = pd.read_csv(out / "results.csv")
    assert final["point_key"].nunique() == 8
    assert json.loads((out / "manifest.json").read_text())["counts"]["done"] == 8


# --------------------------------------------------------------------------- one result store


def test_run_and_sweep_write_every_file_through_the_one_atomic_writer(tmp_path, monkeypatch):
    """`goldilocks run` (run_experiment), replot and a sweep with its collect: every file in
    their folders is written by files.atomic_write_bytes, and the run folder keeps its
    layout (results.csv/parquet, manifest.json, figures/)."""
    import sweep_toys

    from goldilocks_zone import files
    from goldilocks_zone.experiments._shared import base
    from goldilocks_zone.sweep.runner import load_results, replot, run_experiment

    written: list[Path] = []
    real = files.atomic_write_bytes

    def spy(path, data):
        written.append(Path(path))
        real(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", spy)
    monkeypatch.setitem(base._REGISTRY, "toy", sweep_toys.TOY)

    run_dir = tmp_path / "run"
    table, manifest = run_experiment("toy", out_dir=run_dir, quick=True, show_progress=False)
    files = {p for p in run_dir.rglob("*") if p.is_file()}
    assert files == set(written)
    assert {p.relative_to(run_dir).as_posix() for p in files} == {
        "results.csv", "results.parquet", "manifest.json", "figures/toy_norms.png"}
    assert manifest["figures"] == ["figures/toy_norms.png"] and manifest["table_errors"] == []
    loaded, on_disk = load_results(run_dir)
    pd.testing.assert_frame_equal(loaded, table)
    assert on_disk["experiment"] == "toy" and on_disk["num_rows"] == len(table)
    written.clear()
    assert replot(run_dir) == [run_dir / "figures" / "toy_norms.png"]
    assert written == [run_dir / "figures" / "toy_norms.png"]

    written.clear()
    spec = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [0, 1]}})
    run_sweep(spec, tmp_path / "sweep", show_progress=False)
    files = {p for p in (tmp_path / "sweep").rglob("*") if p.is_file() and p.name != ".lock"}
    assert files == set(written)
    assert temp_files(tmp_path) == []


def test_an_all_nan_cell_still_gets_its_figure(tmp_path):
    """The figure of a fully divergent cell is drawn (the x range kept, a "no finite values"
    note) instead of failing in matplotlib's log axis."""
    from goldilocks_zone.experiments import get

    exp = get("scale-sweep")
    nan = float("nan")
    table = pd.DataFrame({"term": ["hessian"] * 2, "scale": [1e104, 1e105], "seed": [0, 0],
                          "positive_curvature": [nan, nan], "fraction_positive": [nan, nan]})
    paths = exp.draw(table, exp.default_config(quick=True), tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
