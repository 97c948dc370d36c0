"""goldilocks_zone.diagnose (module goldilocks_zone.diagnosis) and ``goldilocks diagnose``."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch

import goldilocks_zone
from goldilocks_zone import data, models
from goldilocks_zone.cli import main as cli
from goldilocks_zone.diagnosis import Diagnosis, diagnose, load_model

TEMPS = tuple(10.0 ** e for e in range(-6, 7))
SCALES = tuple(10.0 ** (e / 2) for e in range(-4, 5))


@pytest.fixture(scope="module")
def circles():
    return data.load("circles", num_samples=400, seed=0)


def _demo(seed: int = 0, **kwargs) -> torch.nn.Module:
    return models.create("demo", (2,), 3, seed=seed, **kwargs).double()


def test_demo_model_peaks_inside_the_zone(circles):
    model = _demo()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    result = goldilocks_zone.diagnose(model, circles, dim=20, temperatures=TEMPS,
                                      scales=SCALES)
    assert isinstance(result, Diagnosis)
    # the model is left exactly as it came
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    # a clear peak of kappa inside, ~0 at both ends of the temperature axis
    ts = result.temperature_sweep.set_index("temperature")["positive_curvature"]
    assert result.best_temperature_kappa > 1.0
    assert ts.iloc[0] < 0.35 * result.best_temperature_kappa
    assert ts.iloc[-1] < 0.35 * result.best_temperature_kappa
    lo, hi = result.zone_temperatures
    assert lo <= result.best_temperature <= hi and lo > TEMPS[0] and hi < TEMPS[-1]
    assert result.verdict == "inside" and result.fundamental_condition
    # homogeneous (L = 3): the scale axis is the temperature axis, T = alpha^-L, exactly
    assert result.homogeneous and result.degree == 3
    ss = result.scale_sweep.set_index("scale")["positive_curvature"]
    for alpha in (0.1, 1.0, 10.0):
        at_t = ts[np.isclose(ts.index, alpha ** -3, rtol=1e-9)]
        at_s = ss[np.isclose(ss.index, alpha, rtol=1e-9)]
        assert len(at_t) == len(at_s) == 1
        assert float(at_s.iloc[0]) == pytest.approx(float(at_t.iloc[0]), abs=1e-8)
    assert result.best_scale_kappa == pytest.approx(result.best_temperature_kappa, abs=1e-8)
    # current-point quantities
    assert result.prior_mismatch == pytest.approx(
        math.dist(result.class_prior, result.mean_probs))
    assert result.gradient_norm > 0 and 0 <= result.fraction_positive <= 1
    text = result.report()
    for needle in ("positive curvature kappa", "||G_R||_2", "prior mismatch", "T* =",
                   "alpha* =", "Verdict: inside"):
        assert needle in text


def test_small_init_is_diagnosed_below_the_zone(circles, tmp_path):
    model = _demo()
    with torch.no_grad():  # our own instance: shrink the weights far below the zone
        for p in model.parameters():
            p.mul_(0.05)
    result = diagnose(model, circles, dim=20, temperatures=TEMPS, scan_scales=False)
    assert result.scale_sweep is None
    assert result.verdict == "below" and result.best_temperature < 1.0
    assert result.positive_curvature < 0.5 * result.best_temperature_kappa
    # the advice translates T* into the weight scale that undoes the shrinking (~20)
    alpha_star = result.best_temperature ** (-1 / 3)
    assert 3 < alpha_star < 100 and f"{alpha_star:.3g}" in result.advice
    paths = result.plot(tmp_path / "below.png")
    assert all(p.exists() and p.stat().st_size > 5_000 for p in paths)
    json.dumps(result.to_dict(), default=str)


def test_non_homogeneous_model_scans_temperature_only(circles):
    model = _demo(activation="tanh")
    result = diagnose(model, circles, dim=10, temperatures=(0.01, 1.0, 100.0))
    assert not result.homogeneous and result.scale_sweep is None
    assert "tanh" in result.homogeneity_reason.lower() or "Tanh" in result.homogeneity_reason
    assert len(result.temperature_sweep) == 3


def test_bad_inputs(circles):
    with pytest.raises(TypeError, match="inputs"):
        diagnose(_demo(), [1, 2, 3])
    with pytest.raises(ValueError, match="dim"):
        diagnose(_demo(), circles, dim=10_000)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model", (2,), 3)


def test_cli_with_registry_model_and_factory(tmp_path, monkeypatch, capsys):
    out = tmp_path / "diag"
    code = cli(["diagnose", "--model", "demo", "--dataset", "circles", "--num-samples", "300",
                "--dim", "10", "--temperatures", "0.01,1,100", "--scales", "0.3,1,3",
                "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Verdict:" in printed and "figure:" in printed
    for name in ("report.txt", "diagnosis.json", "temperature_sweep.csv", "scale_sweep.csv",
                 "diagnosis.png", "diagnosis.pdf"):
        assert (out / name).exists(), name
    saved = json.loads((out / "diagnosis.json").read_text())
    assert saved["dim"] == 10 and len(saved["temperature_sweep"]) == 3

    # a user's factory: package.module:factory, called with in_shape / num_classes
    (tmp_path / "user_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def build(in_shape, num_classes):
            return nn.Sequential(nn.Linear(in_shape[0], 16), nn.ReLU(),
                                 nn.Linear(16, num_classes))

        def fixed():
            return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("user_models:build", (2,), 3)
    assert model[0].in_features == 2 and model[2].out_features == 3
    assert isinstance(load_model("user_models:fixed", (2,), 3), torch.nn.Sequential)
    code = cli(["diagnose", "--model", "user_models:build", "--dataset", "circles",
                "--num-samples", "200", "--dim", "5", "--temperatures", "0.1,1,10"])
    assert code == 0
    assert "homogeneous: no" in capsys.readouterr().out  # biases
    with pytest.raises(SystemExit, match="no attribute"):
        cli(["diagnose", "--model", "user_models:missing", "--dataset", "circles"])
