"""The command line: list, run (options, --quick, TOML config, errors), plot."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from goldilocks_zone.cli import main
from goldilocks_zone.experiments import names

TINY = ["--model", "demo", "--dataset", "circles", "--num-samples", "150", "--dim", "6",
        "--seeds", "0", "--per-decade", "1", "--no-progress"]


def test_list_names_every_experiment_model_and_dataset(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in names():
        assert name in out
    for name in ("lenet-300-100", "fashion-mnist", "circles"):
        assert name in out


def test_run_help_lists_the_experiments_parameters(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "scale-sweep", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--num-samples" in out and "--per-decade" in out and "--quick" in out


def test_run_writes_tidy_results_manifest_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "scale-sweep", *TINY, "--log10-range", "-2,2", "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table["scale"]) == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0])
    assert {"positive_curvature", "fraction_positive", "spectral_norm", "top_eigenvalue",
            "seed", "dim"} <= set(table.columns)
    assert pd.read_parquet(out / "results.parquet").shape == table.shape
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "scale-sweep"
    assert manifest["config"]["dim"] == 6 and manifest["config"]["model"] == "demo"
    assert manifest["versions"]["torch"]
    assert manifest["provenance"]["dataset"]["fingerprint"]
    assert manifest["timings"]["run_seconds"] > 0
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").exists() for p in pngs)
    printed = capsys.readouterr().out
    assert "results.csv" in printed and ".png" in printed

    # plot redraws from the saved table alone
    for p in pngs:
        p.unlink()
    assert main(["plot", str(out)]) == 0
    assert sorted((out / "figures").glob("*.png")) == pngs


def test_toml_config_and_explicit_options(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[config]\nmodel = "demo"\ndataset = "circles"\nnum_samples = 120\n'
                   'dim = 4\nseeds = [3]\nper_decade = 1\nlog10_range = [-1.0, 1.0]\n')
    out = tmp_path / "run"
    assert main(["run", "scale-sweep", "--config", str(cfg), "--dim", "5", "--no-progress",
                 "--no-plot", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["dim"] == 5  # the explicit option wins over the file
    assert manifest["config"]["seeds"] == [3] and manifest["config"]["num_samples"] == 120


@pytest.mark.parametrize("argv,message", [
    (["run", "no-such-experiment", "--out", "x"], "unknown experiment"),
    (["run", "scale-sweep", "--dim", "many", "--out", "x"], "expects an integer"),
    (["run", "scale-sweep", "--seeds", "0,0", "--out", "x"], "distinct"),
])
def test_bad_options_fail_with_clear_messages(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option,name,listed", [
    ("--dataset", "no-such-data", "fashion-mnist"),
    ("--model", "no-such-net", "lenet-300-100"),
])
def test_unknown_dataset_or_model_lists_the_choices_and_exits_2(option, name, listed, tmp_path):
    res = subprocess.run([sys.executable, "-m", "goldilocks_zone.cli", "run", "scale-sweep",
                          option, name, "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert name in res.stderr and listed in res.stderr
    assert not (tmp_path / "x").exists()  # failed before any work


def test_model_factory_reference_is_passed_through(monkeypatch, tmp_path):
    """``--model package.module:factory`` is not rejected by the CLI; it reaches the
    experiment's config unchanged (the model registry resolves it)."""
    seen = {}

    def fake_run(name, config, out, **kwargs):
        seen["config"] = config
        return pd.DataFrame({"seed": [0]}), {}

    monkeypatch.setattr("goldilocks_zone.sweep.runner.run_experiment", fake_run)
    assert main(["run", "scale-sweep", "--model", "my_pkg.nets:build",
                          "--dataset", "circles", "--out", str(tmp_path)]) == 0
    assert seen["config"].model == "my_pkg.nets:build"


def test_options_are_generated_from_the_config_types():
    """Every config field becomes an option; bools are flags (also --no-X); values go through
    the same coercion as TOML configs."""
    import dataclasses

    from goldilocks_zone.cli.main import config_parser
    from goldilocks_zone.experiments import get

    exp = get("expected-g")
    parser = config_parser(exp)
    options = {o for a in parser._actions for o in a.option_strings}
    for f in dataclasses.fields(exp.config_cls):
        assert f"--{f.name.replace('_', '-')}" in options
    assert parser.parse_args(["--out", "o", "--debias"]).debias == "true"
    assert parser.parse_args(["--out", "o", "--no-debias"]).debias == "false"
    args = parser.parse_args(["--out", "o", "--debias", "no", "--logit-classes", "none",
                              "--dims", "2,5"])
    config = exp.config_from_dict({k: v for k, v in vars(args).items()
                                   if k in exp.parameters and v is not None})
    assert config.debias is False and config.logit_classes is None and config.dims == (2, 5)


def test_common_config_fields_have_one_name_and_one_type():
    """model, dataset, num_samples, seeds, dim, dtype, device are declared once
    (experiments/_shared/config.py); no experiment re-types them or uses an old alias."""
    import typing

    from goldilocks_zone.experiments import get
    from goldilocks_zone.experiments._shared import config as shared

    base = typing.get_type_hints(shared.SubspaceConfig)
    for name in names():
        hints = typing.get_type_hints(get(name).config_cls)
        assert not {"architecture", "num_train", "seed_list", "basis_kind"} & set(hints), name
        for field_name in shared.COMMON_FIELDS:
            if field_name in hints and not (name == "random-model" and field_name == "dim"):
                allowed = {base[field_name]} | {a for a in typing.get_args(base[field_name])
                                                if a is not type(None)}
                assert hints[field_name] in allowed, (name, field_name, hints[field_name])
                assert issubclass(get(name).config_cls, shared.ConfigBase)


def test_plot_of_a_folder_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(tmp_path)])
    assert "not a results folder" in str(exc.value)


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "goldilocks_zone.cli", "list"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "scale-sweep" in res.stdout


def test_negative_values_need_no_equals_sign():
    from goldilocks_zone.cli.main import _join_negative_values

    assert _join_negative_values(["--log10-range", "-3,3", "--dim", "5"]) == [
        "--log10-range=-3,3", "--dim", "5"]
    assert _join_negative_values(["--a", "-0.5", "--quick", "--b=-1"]) == [
        "--a=-0.5", "--quick", "--b=-1"]


def test_printed_table_is_short_mean_over_seeds():
    from goldilocks_zone.cli.main import short_table

    table = pd.DataFrame({"scale": [0.1, 1.0, 0.1, 1.0], "seed": [0, 0, 1, 1],
                          "term": ["hessian"] * 4, "positive_curvature": [0.0, 2.0, 0.2, 4.0],
                          "basis": ["orthonormal"] * 4})
    short, note = short_table(table, ("term", "scale"))
    assert list(short["scale"]) == [0.1, 1.0]
    assert list(short["positive_curvature"]) == pytest.approx([0.1, 3.0])
    assert note == "mean over seeds" and "basis" not in short.columns
    other = pd.DataFrame({"a": [1, 2]})
    assert short_table(other, ("term", "scale"))[0].equals(other)
    # rows not identified by (keys, seed), e.g. one row per pixel or per step: nothing averaged
    pixels = pd.DataFrame({"alpha": [5.0] * 4, "seed": [0] * 4, "scale": [5.0] * 4,
                           "row": [0, 0, 1, 1], "positive_curvature": [1.0, 2.0, 3.0, 4.0]})
    short, note = short_table(pixels, ("alpha", "scale"))
    assert short.equals(pixels) and note == ""


def test_manifests_with_renamed_fields_still_give_a_typed_config():
    """``goldilocks plot`` on a folder written before a rename (CHANGELOG.md) rebuilds the
    typed config: old field names map to the new ones."""
    from goldilocks_zone.experiments import get

    exp = get("hyperplane-training")
    config = exp.config_from_dict({"architecture": "mlp:8", "num_train": 50,
                                   "basis_kind": "sparse", "dims": [2, 4], "fixed_dim": 4})
    assert isinstance(config, exp.config_cls)
    assert (config.model, config.num_samples, config.basis, config.dims) == (
        "mlp:8", 50, "sparse", (2, 4))
    with pytest.raises(KeyError, match="unknown parameter"):
        exp.config_from_dict({"no_such_field": 1})


def test_run_out_that_is_a_file_exits_2_and_a_write_error_exits_3(tmp_path, capsys,
                                                                  monkeypatch):
    """--out naming a file is refused before any computation (exit 2); a disk-full error while
    the results are written is one line and exit 3 (the code docs/sweeps.md documents), with
    no partial results file."""
    import errno
    import os

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["run", "scale-sweep", *TINY, "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err

    real_fsync = os.fsync

    def full_disk(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    out = tmp_path / "out"
    assert main(["run", "scale-sweep", *TINY, "--log10-range", "-1,1", "--no-plot",
                 "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert not (out / "results.csv").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("experiment", ["logit-clustering", "simplex", "hessian-spectrum"])
@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr", 0.0, "lr must be positive"), ("lr", float("nan"), "lr must be positive"),
    ("batch_size", 0, "batch_size >= 1"), ("train_samples", 0, "train_samples >= 1"),
    ("train_steps", -1, "train_steps >= 0")])
def test_sgd_knobs_are_checked_once_for_every_sgd_experiment(experiment, field, value, message):
    """The minibatch-SGD knobs are validated by the shared SGDConfig, so every experiment that
    trains with them refuses a bad value before any computation."""
    from goldilocks_zone.experiments._shared.base import get, make_config

    with pytest.raises(ValueError, match=message):
        make_config(get(experiment).config_cls, {field: value})
