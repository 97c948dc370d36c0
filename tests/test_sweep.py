"""Sweep specs, point keys, the atomic result store, failures, retries and collect.

Execution across processes (SIGKILL + resume, Dask) lives in ``test_sweep_execution.py``.
The experiments swept here are the toys of ``tests/sweep_toys.py``, plugged in by reference.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldilocks_zone.cli import sweep as sweep_cli
from goldilocks_zone.sweep import (
    PointStore,
    SpecError,
    atomic_write_text,
    collect,
    load_spec,
    merge_points,
    parse_spec,
    payload_to_table,
    point_key,
    run_sweep,
    table_to_payload,
)

TOY = "sweep_toys:TOY"


def write_spec(folder: Path, text: str, name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any point is computed."""
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a point was computed although the spec is invalid")

    monkeypatch.setattr("goldilocks_zone.sweep.executors.compute_point", forbidden)
    return calls


# --------------------------------------------------------------------------- spec and keys


def test_grid_and_zip_expand_in_file_order_with_full_configs():
    spec = parse_spec({
        "experiment": TOY, "quick": True,
        "base": {"width": 16},
        "grid": {"seed": [0, 1], "scale": [0.5, 2]},
        "zip": {"depth": [1, 2, 3], "label": ["a", "b", "c"]},
    })
    assert len(spec.points) == 2 * 2 * 3
    assert spec.swept == ["seed", "scale", "depth", "label"]
    first, second, fourth = spec.points[0], spec.points[1], spec.points[3]
    assert first.grid == {"seed": 0, "scale": 0.5, "depth": 1, "label": "a"}
    assert second.grid == {"seed": 0, "scale": 0.5, "depth": 2, "label": "b"}  # zip innermost
    assert fourth.grid == {"seed": 0, "scale": 2.0, "depth": 1, "label": "a"}
    # full config = defaults <- QUICK preset <- base <- point values, coerced to field types
    assert first.config == {"seed": 0, "scale": 0.5, "width": 16, "depth": 1, "repeats": 5,
                            "fail": False, "tags": [1, 2], "label": "a"}
    assert isinstance(fourth.config["scale"], float)
    assert [p.index for p in spec.points] == list(range(12))
    assert len({p.key for p in spec.points}) == 12


def test_zip_as_array_of_groups():
    spec = parse_spec({"experiment": TOY, "zip": [{"seed": [0, 1]},
                                                  {"depth": [1, 2], "width": [8, 16]}]})
    assert [(p.grid["seed"], p.grid["depth"], p.grid["width"]) for p in spec.points] == [
        (0, 1, 8), (0, 2, 16), (1, 1, 8), (1, 2, 16)]


def test_point_key_is_a_hash_of_experiment_and_full_config():
    spec = parse_spec({"experiment": TOY, "grid": {"seed": [3]}})
    point = spec.points[0]
    assert point.key == point_key(TOY, point.config)
    assert len(point.key) == 16 and int(point.key, 16) >= 0
    # same config reached another way (value in base instead of grid, int vs float) -> same key
    other = parse_spec({"experiment": TOY, "base": {"scale": 1}, "grid": {"seed": [3]}})
    assert other.points[0].key == point.key
    # any config change changes the key; so does the experiment
    assert parse_spec({"experiment": TOY, "grid": {"seed": [4]}}).points[0].key != point.key
    assert point_key("sweep_toys:TOY_BROKEN_PLOT", point.config) != point.key
    # quick changes the config (repeats), hence the key
    quick = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [3]}})
    assert quick.points[0].config["repeats"] == 5 and quick.points[0].key != point.key


def test_spec_hash_ignores_key_order_but_not_values():
    a = parse_spec({"experiment": TOY, "grid": {"seed": [0, 1], "depth": [1, 2]}})
    b = parse_spec({"experiment": TOY, "grid": {"depth": [1, 2], "seed": [0, 1]}})
    c = parse_spec({"experiment": TOY, "grid": {"seed": [0, 1], "depth": [1, 3]}})
    assert a.hash == b.hash
    assert {p.key for p in a.points} == {p.key for p in b.points}
    assert a.hash != c.hash


def test_tuple_parameters_can_be_swept():
    spec = parse_spec({"experiment": TOY, "grid": {"tags": [[1, 2], [3]]}})
    assert [p.config["tags"] for p in spec.points] == [[1, 2], [3]]


BAD_SPECS = [
    ({"grid": {"seed": [0]}}, "missing 'experiment'"),
    ({"experiment": "no-such-experiment", "grid": {"seed": [0]}}, "unknown experiment"),
    ({"experiment": "no_such_module_xyz:EXP", "grid": {"seed": [0]}}, "cannot import module"),
    ({"experiment": "sweep_toys:MISSING", "grid": {"seed": [0]}}, "has no attribute"),
    ({"experiment": "sweep_toys:NOT_AN_EXPERIMENT", "grid": {"seed": [0]}}, "not a"),
    ({"experiment": TOY, "grid": {"sede": [0]}}, "unknown parameter 'sede'"),
    ({"experiment": TOY, "base": {"widht": 3}, "grid": {"seed": [0]}},
     "unknown parameter 'widht'"),
    ({"experiment": TOY, "grid": {"seed": ["zero"]}}, "expects an integer"),
    ({"experiment": TOY, "grid": {"scale": [1.0, "big"]}}, "expects a number"),
    ({"experiment": TOY, "grid": {"fail": ["maybe"]}}, "expects true/false"),
    ({"experiment": TOY, "grid": {"width": [8, 0]}}, "point 1 (width=0) is invalid"),
    ({"experiment": TOY}, "empty grid"),
    ({"experiment": TOY, "grid": {}}, "empty grid"),
    ({"experiment": TOY, "grid": {"seed": []}}, "empty list"),
    ({"experiment": TOY, "grid": {"seed": 3}}, "must be a list of values"),
    ({"experiment": TOY, "zip": {"seed": [0, 1], "depth": [1, 2, 3]}}, "equal lengths"),
    ({"experiment": TOY, "base": {"seed": 1}, "grid": {"seed": [0]}}, "both [base] and [grid]"),
    ({"experiment": TOY, "grid": {"seed": [0]}, "zip": {"seed": [1]}}, "both [grid] and [zip]"),
    ({"experiment": TOY, "gird": {"seed": [0]}}, "unknown key(s) 'gird'"),
    ({"experiment": TOY, "quick": "yes", "grid": {"seed": [0]}}, "'quick' must be true"),
    ({"experiment": TOY, "grid": {"scale": [1, 1.0]}}, "have the same config"),
    ({"experiment": TOY, "grid": {"seed": [0]}, "figures": {"by": ["depth"]}},
     "not swept parameters"),
]


@pytest.mark.parametrize(("data", "message"), BAD_SPECS,
                         ids=[m for _, m in BAD_SPECS])
def test_bad_specs_raise_clear_errors(data, message):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert message in str(info.value)


def test_known_parameters_are_listed_for_a_typo():
    with pytest.raises(SpecError, match="known parameters: depth, fail, label, repeats"):
        parse_spec({"experiment": TOY, "grid": {"sede": [0]}})


def test_load_spec_reports_missing_and_invalid_toml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(write_spec(tmp_path, "experiment = \n"))


@pytest.mark.parametrize(("text", "message"), [
    ('experiment = "nope"\n[grid]\nseed = [0]\n', "unknown experiment 'nope'"),
    (f'experiment = "{TOY}"\n[grid]\nseed = ["x"]\n', "expects an integer"),
    (f'experiment = "{TOY}"\n[grid]\n', "empty grid"),
    (f'experiment = "{TOY}"\n[grid]\nsede = [0]\n', "unknown parameter 'sede'"),
])
def test_cli_rejects_bad_specs_before_any_work(tmp_path, capsys, no_compute, text, message):
    out = tmp_path / "out"
    rc = sweep_cli.main(["sweep", str(write_spec(tmp_path, text)), "--out", str(out),
                         "--no-progress"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert no_compute == []


def test_output_folder_holding_another_sweep_is_refused(tmp_path, capsys, no_compute):
    out = tmp_path / "out"
    first = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [0]}})
    PointStore(out).initialise(first)
    before = sorted(p.name for p in out.rglob("*"))
    spec = write_spec(tmp_path, f'experiment = "{TOY}"\nquick = true\n[grid]\nseed = [0, 1]\n')
    rc = sweep_cli.main(["sweep", str(spec), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "already holds a different sweep" in err and "new --out folder" in err
    assert sorted(p.name for p in out.rglob("*")) == before
    # a non-empty folder that is not a sweep folder is refused too
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("x\n1\n")
    assert sweep_cli.main(["sweep", str(spec), "--out", str(other), "--no-progress"]) == 2
    assert "holds no sweep.json" in capsys.readouterr().err


def test_bad_executor_options_fail_before_any_work(tmp_path, capsys, no_compute):
    spec = write_spec(tmp_path, f'experiment = "{TOY}"\n[grid]\nseed = [0]\n')
    out = tmp_path / "out"
    rc = sweep_cli.main(["sweep", str(spec), "--out", str(out), "--workers", "2",
                         "--scheduler", "tcp://127.0.0.1:1"])
    assert rc == 2 and "not both" in capsys.readouterr().err
    rc = sweep_cli.main(["sweep", str(spec), "--out", str(out), "--threads", "0"])
    assert rc == 2 and "threads must be >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_lists_points_without_running(tmp_path, capsys, no_compute):
    spec = write_spec(tmp_path, f'experiment = "{TOY}"\n[grid]\nseed = [0, 1, 2]\n')
    out = tmp_path / "out"
    assert sweep_cli.main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "3 points" in printed and "seed=2" in printed
    assert not out.exists()


# --------------------------------------------------------------------------- table payloads


def test_payload_round_trip_is_exact_and_typed():
    table = pd.DataFrame({
        "i": np.array([1, -2, 3], dtype=np.int64),
        "x": [0.1, float("inf"), float("nan")],
        "neg_zero": [-0.0, 1e-310, -float("inf")],
        "flag": [True, False, True],
        "name": ["a", "b", "c"],
    })
    back = payload_to_table(json.loads(json.dumps(table_to_payload(table), allow_nan=True)))
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    assert math.copysign(1.0, back["neg_zero"][0]) == -1.0
    empty = payload_to_table(table_to_payload(table.iloc[:0]))
    assert list(empty.columns) == list(table.columns) and len(empty) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_payload_round_trip_preserves_every_float64_bit(values):
    table = pd.DataFrame({"v": np.array(values, dtype=np.float64)})
    text = json.dumps(table_to_payload(table), allow_nan=True)
    back = payload_to_table(json.loads(text))["v"].to_numpy()
    original = table["v"].to_numpy()
    same_nan = np.isnan(back) == np.isnan(original)
    assert same_nan.all()
    finite = ~np.isnan(original)
    assert (back[finite].view(np.int64) == original[finite].view(np.int64)).all()


def test_non_dataframe_result_is_rejected():
    with pytest.raises(TypeError, match="pandas.DataFrame"):
        table_to_payload([1, 2, 3])


# --------------------------------------------------------------------------- store


def test_atomic_write_leaves_old_content_and_no_temp_file_when_interrupted(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "point.json"
    atomic_write_text(path, '{"old": 1}')

    def crash(src, dst):
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(path, '{"new": 2}')
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["point.json"]


def test_store_ignores_temp_and_corrupt_files_and_a_sweep_cleans_them(tmp_path):
    out = tmp_path / "out"
    spec = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [0, 1, 2]}})
    store = PointStore(out)
    store.initialise(spec)
    k0, k1, k2 = (p.key for p in spec.points)
    # what a crash can leave behind: a half-written temp file of point 0 ...
    (store.points_dir / f".{k0}.json.abc123.tmp").write_text('{"key": "' + k0 + '", "sta')
    # ... and, from outside interference, a truncated final file of point 1
    store.point_path(k1).write_text('{"key": "' + k1 + '", "status": "do')
    assert store.statuses() == {}
    report = run_sweep(spec, out, show_progress=False, plot=False)
    assert (report.done, report.skipped_done) == (3, 0)
    assert store.statuses() == {k0: "done", k1: "done", k2: "done"}
    assert not [p for p in store.points_dir.iterdir() if p.name.endswith(".tmp")]


def test_only_one_driver_per_sweep_folder(tmp_path):
    store = PointStore(tmp_path / "out")
    with store.lock():
        with pytest.raises(SpecError, match="another sweep is running"):
            with PointStore(tmp_path / "out").lock():
                pass
    with store.lock():  # released again
        pass


# --------------------------------------------------------------------------- running


def test_raising_and_diverging_points_are_recorded_and_the_rest_complete(tmp_path, capsys):
    out = tmp_path / "out"
    spec = parse_spec({"experiment": TOY, "quick": True,
                       "grid": {"seed": [0, 1], "scale": [1.0, 1e200]},
                       "zip": {"fail": [False, True]}})
    report = run_sweep(spec, out, show_progress=False, plot=False)
    assert (report.done, report.failed, report.total) == (4, 4, 8)
    assert not report.complete
    store = PointStore(out)
    for point in spec.points:
        record = store.load(point.key)
        assert record["index"] == point.index and record["grid"] == point.grid
        if point.grid["fail"]:
            assert record["status"] == "failed"
            assert record["error"]["type"] == "ValueError"
            assert "toy failure requested" in record["error"]["message"]
            assert "Traceback" in record["error"]["traceback"]
            assert "sweep_toys.py" in record["error"]["traceback"]
        else:
            assert record["status"] == "done"
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["point_key"]) == {p.key for p in spec.points if not p.grid["fail"]}
    diverged = table[table["scale"] == 1e200]
    converged = table[table["scale"] == 1.0]
    assert np.isinf(diverged["norm"]).any() and diverged["top_eigenvalue"].isna().any()
    assert np.isfinite(converged[["norm", "log_norm", "top_eigenvalue"]].to_numpy()).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"points": 8, "done": 4, "failed": 4, "pending": 0,
                                  "rows": len(table)}
    assert {f["key"] for f in manifest["failed_points"]} == {
        p.key for p in spec.points if p.grid["fail"]}
    assert set(manifest["points_with_non_finite_values"]) == set(diverged["point_key"])
    assert sweep_cli.main(["collect", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "4 of 8 points done, 4 failed, 0 pending" in printed
    assert "2 done point(s) hold non-finite values" in printed
    assert printed.count("toy failure requested") == 4


def test_rerun_skips_done_points_and_retry_failed_reruns_failed_ones(tmp_path, monkeypatch):
    out = tmp_path / "out"
    spec = parse_spec({"experiment": "sweep_toys:FLAKY", "quick": True,
                       "grid": {"seed": [0, 1, 2]}})
    monkeypatch.setenv("SWEEP_TOY_FLAKY_SEEDS", "1")  # seed 1 hits a transient failure
    first = run_sweep(spec, out, show_progress=False, plot=False)
    assert (first.done, first.failed) == (2, 1)
    store = PointStore(out)
    done_mtimes = {k: store.point_path(k).stat().st_mtime_ns
                   for k, s in store.statuses().items() if s == "done"}

    monkeypatch.delenv("SWEEP_TOY_FLAKY_SEEDS")
    second = run_sweep(spec, out, show_progress=False, plot=False)
    assert (second.done, second.failed, second.skipped_done, second.skipped_failed) == (
        0, 0, 2, 1)
    assert "1 skipped (failed before; --retry-failed reruns them)" in second.summary_line()

    third = run_sweep(spec, out, retry_failed=True, show_progress=False, plot=False)
    assert (third.done, third.failed, third.skipped_done, third.skipped_failed) == (1, 0, 2, 0)
    assert third.complete
    assert set(store.statuses().values()) == {"done"}
    for key, mtime in done_mtimes.items():  # done points were never rewritten
        assert store.point_path(key).stat().st_mtime_ns == mtime
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["seed"].unique()) == [0, 1, 2]


def test_collect_merges_in_spec_order_with_grid_columns_and_figures(tmp_path, capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path, f"""
experiment = "{TOY}"
quick = true
[grid]
depth = [2, 1]
tags = [[1, 2], [5]]
[figures]
by = ["depth"]
""")
    rc = sweep_cli.main(["sweep", str(spec_path), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "4 done, 0 failed, 0 skipped (already done) in" in printed
    table = pd.read_csv(out / "results.csv")
    spec = load_spec(spec_path)
    assert list(table.columns[:3]) == ["point_key", "depth", "tags"]
    expected_keys = [p.key for p in spec.points for _ in range(p.config["depth"])]
    assert table["point_key"].tolist() == expected_keys
    assert table["tags"].tolist()[:4] == ["1,2", "1,2", "5", "5"]
    assert (table.groupby("point_key")["layer"].max() == table.groupby("point_key")["depth"]
            .first()).all()
    figures = sorted((out / "figures").rglob("*.png"))
    assert [p.parent.name for p in figures] == ["depth=1", "depth=2"]  # one set per depth
    # collect again on demand after deleting the merged outputs: same table
    (out / "results.csv").unlink()
    (out / "results.parquet").unlink()
    assert sweep_cli.main(["collect", str(out), "--no-plot"]) == 0
    assert "4 of 4 points done" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sweep" and manifest["spec_hash"] == spec.hash
    assert manifest["last_run"]["done"] == 4  # kept from the sweep run
    assert "torch" in manifest["versions"]


def test_collect_reads_sweep_json_once(tmp_path, monkeypatch):
    """The merge, the manifest and the figures share one read of ``sweep.json``."""
    out = tmp_path / "out"
    spec = parse_spec({"experiment": TOY, "quick": True, "grid": {"seed": [0, 1]},
                       "figures": {"by": []}})
    run_sweep(spec, out, show_progress=False, plot=False)
    expected, _ = merge_points(PointStore(out))
    reads = []
    real_read = PointStore.read_sweep

    def counting_read(self):
        reads.append(self.root)
        return real_read(self)

    monkeypatch.setattr(PointStore, "read_sweep", counting_read)
    collected = collect(out, plot=True)
    assert len(reads) == 1
    pd.testing.assert_frame_equal(collected.table, expected)
    assert collected.manifest["spec_hash"] == spec.hash
    assert collected.figures and not collected.figure_errors


def test_a_failing_figure_never_loses_results(tmp_path):
    out = tmp_path / "out"
    spec = parse_spec({"experiment": "sweep_toys:TOY_BROKEN_PLOT", "quick": True,
                       "grid": {"seed": [0, 1]}, "figures": {"by": []}})
    report = run_sweep(spec, out, show_progress=False, plot=True)
    assert report.complete
    assert len(pd.read_csv(out / "results.csv")) == 2 * 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["figure_errors"]) == 1
    assert "this plot always fails" in manifest["figure_errors"][0]


def test_collect_of_a_non_sweep_folder_is_a_clear_error(tmp_path, capsys):
    assert sweep_cli.main(["collect", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples"
                                         / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    spec = load_spec(path)
    assert len(spec.points) >= 2
    assert len({p.key for p in spec.points}) == len(spec.points)
