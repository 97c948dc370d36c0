"""``goldilocks diagnose``: validation before work, run folder, redraw, --json; and
``models.create`` with a ``package.module:factory`` spec."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from goldilocks_zone import models
from goldilocks_zone.cli import main as cli

FACTORY = textwrap.dedent("""
    import torch.nn as nn

    def build(in_shape, num_classes):
        return nn.Sequential(nn.Linear(in_shape[0], 16), nn.ReLU(),
                             nn.Linear(16, num_classes))

    def not_a_module():
        return 42
""")


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "user_models_diag.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models_diag"


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Any data loading or measurement fails the test: validation must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the options were validated")

    monkeypatch.setattr("goldilocks_zone.data.load", boom)
    monkeypatch.setattr("goldilocks_zone.diagnosis.diagnose", boom)


BASE = ["diagnose", "--model", "demo", "--dataset", "circles"]


@pytest.mark.parametrize("extra, needle", [
    (["--scales", "0.1,1,10", "--no-scales"], "--scales conflicts"),
    (["--num-samples", "-5"], "--num-samples must be a positive integer"),
    (["--num-samples", "0"], "--num-samples must be a positive integer"),
    (["--dim", "0"], "--dim must be a positive integer"),
    (["--temperatures", "1,2,3", "--axis", "scale"], "--temperatures conflicts"),
    (["--inits", "3"], "--inits needs a factory"),
    (["--dtype", "float16"], "unknown dtype"),
])
def test_bad_options_exit_2_before_work(extra, needle, no_heavy_work, capsys):
    assert cli([*BASE, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_unknown_names_and_factory_options(no_heavy_work, user_models, capsys):
    assert cli(["diagnose", "--model", "nope", "--dataset", "circles"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "lenet-300-100" in err
    assert cli(["diagnose", "--model", "demo", "--dataset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "fashion-mnist" in err
    assert cli(["diagnose", "--model", f"{user_models}:build", "--dataset", "circles",
                "--activation", "tanh"]) == 2
    assert "registry models only" in capsys.readouterr().err
    assert cli(["diagnose", "--model", f"{user_models}:missing", "--dataset", "circles"]) == 2
    assert "no attribute" in capsys.readouterr().err


def test_out_checked_before_work(tmp_path, no_heavy_work, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli([*BASE, "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert cli([*BASE, "--out", str(a_file / "sub")]) == 2
    assert "not a writable folder" in capsys.readouterr().err


def test_run_folder_redraw_stale_files_and_json(tmp_path, capsys):
    out = tmp_path / "diag"
    out.mkdir()
    (out / "temperature_sweep.csv").write_text("stale")  # an older layout's file
    args = [*BASE, "--num-samples", "64", "--dim", "4", "--bases", "2", "--scales",
            "0.1,1,10", "--no-progress", "--dtype", "float64"]
    assert cli([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("Verdict:") < printed.index("Glossary:") and "figure:" in printed
    assert not (out / "temperature_sweep.csv").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "diagnosis" and manifest["config"]["dim"] == 4
    assert manifest["versions"]["torch"] and "figures/diagnosis.png" in manifest["figures"]
    for name in ("results.csv", "results.parquet", "report.txt", "diagnosis.json",
                 "figures/diagnosis.png", "figures/diagnosis.pdf"):
        assert (out / name).exists(), name
    summary = json.loads((out / "diagnosis.json").read_text())
    # redraw from the folder alone
    (out / "figures" / "diagnosis.png").unlink()
    assert cli(["plot", str(out)]) == 0
    assert (out / "figures" / "diagnosis.png").stat().st_size > 10_000
    assert summary["verdict"]["label"] in ("in the zone", "below", "above", "borderline")


def test_json_output_is_the_summary(capsys):
    args = [*BASE, "--num-samples", "64", "--dim", "4", "--bases", "2", "--scales",
            "0.1,1,10", "--no-progress", "--json", "--seed", "5"]
    assert cli(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["verdict"] == second["verdict"]  # same seed -> identical numbers
    assert first["verdict"]["label"] in ("in the zone", "below", "above", "borderline")
    assert first["num_samples"] == 64 and first["dim"] == 4 and first["seed"] == 5


def test_factory_spec_in_models_create(user_models):
    state = torch.get_rng_state()
    a = models.create(f"{user_models}:build", (2,), 3, seed=7)
    b = models.create(f"{user_models}:build", (2,), 3, seed=7)
    c = models.create(f"{user_models}:build", (2,), 3, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert a[0].in_features == 2 and a[2].out_features == 3
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)
    assert torch.equal(models.load_model(f"{user_models}:build", (2,), 3)[0].weight,
                       models.create(f"{user_models}:build", (2,), 3, seed=0)[0].weight)
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        models.create(f"{user_models}:not_a_module", (2,), 3)
    with pytest.raises(ValueError, match="cannot import"):
        models.create("no_such_module_xyz:build", (2,), 3)
    with pytest.raises(ValueError, match="registry models only"):
        models.create(f"{user_models}:build", (2,), 3, activation="tanh")
    with pytest.raises(ValueError, match="unknown model"):
        models.create("no-such-model", (2,), 3)
