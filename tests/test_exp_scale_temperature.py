"""``scale-sweep`` and ``temperature-sweep``: the Goldilocks zone exists, and for homogeneous
networks the temperature sweep is the scale sweep under T = alpha^-L (P1 Fig. 1)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from goldilocks_zone.experiments import RunContext, get
from goldilocks_zone.sweep.runner import replot, run_experiment

QUIET = RunContext(show_progress=False)


def _seed_mean(table: pd.DataFrame, x: str, y: str = "positive_curvature") -> pd.Series:
    return table.groupby(x)[y].mean().sort_index()


def _assert_zone(kappa: pd.Series, *, end_tol: float, peak_min: float) -> None:
    """kappa ~ 0 at both ends of the grid, a clear positive peak strictly inside."""
    assert abs(kappa.iloc[0]) < end_tol, kappa
    assert abs(kappa.iloc[-1]) < end_tol, kappa
    assert kappa.max() > peak_min, kappa
    peak = kappa.index.get_loc(kappa.idxmax())
    assert 0 < peak < len(kappa) - 1
    assert kappa.max() - max(abs(kappa.iloc[0]), abs(kappa.iloc[-1])) > 0.8 * peak_min


def test_zone_exists_for_demo_on_circles():
    exp = get("scale-sweep")
    config = exp.default_config(model="demo", dataset="circles", num_samples=200, dim=20,
                                seeds=(0, 1, 2), per_decade=1)
    table = exp.run(config, RunContext(show_progress=False))
    assert len(table) == 3 * 7 and set(table["term"]) == {"hessian"}
    assert table["finite"].all()
    kappa = _seed_mean(table, "scale")
    # the ends are H-term dominated: kappa is zero up to the sqrt(2/d) fluctuation of a
    # random projection, averaged over three seeds
    _assert_zone(kappa, end_tol=3 * math.sqrt(2 / 20) / math.sqrt(3), peak_min=1.0)
    frac = _seed_mean(table, "scale", "fraction_positive")
    assert abs(frac.iloc[0] - 0.5) < 0.1 and abs(frac.iloc[-1] - 0.5) < 0.1
    assert frac.max() > 0.55
    # bias-free ReLU network: predictions (accuracy) do not depend on alpha
    assert table.groupby("seed")["accuracy"].nunique().eq(1).all()
    # the loss is log K at tiny scale (uniform outputs)
    assert table.loc[table["scale"] == table["scale"].min(), "loss"].to_numpy() == \
        pytest.approx(math.log(3), rel=1e-4)


@pytest.mark.slow
def test_scale_sweep_end_to_end_lenet_on_fashion_mnist(tmp_path):
    out = tmp_path / "scale"
    table, manifest = run_experiment(
        "scale-sweep", out_dir=out, quick=True, show_progress=False,
        overrides={"num_samples": 200, "dim": 16, "seeds": (0,), "per_decade": 1})
    # files and provenance
    assert (out / "results.csv").exists() and (out / "results.parquet").exists()
    assert (out / "figures" / "scale_sweep.png").stat().st_size > 10_000
    assert (out / "figures" / "scale_sweep.pdf").exists()
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["config"]["model"] == "lenet-300-100"
    assert saved["provenance"]["model"]["degree"] == 3
    assert saved["provenance"]["dataset"]["num_samples"] == 200
    summary = saved["provenance"]["summary"]
    # the science: a zone for LeNet-300-100 on real Fashion-MNIST
    kappa = _seed_mean(table, "scale")
    _assert_zone(kappa, end_tol=0.6, peak_min=1.5)
    assert summary["peak_kappa"] == pytest.approx(kappa.max())
    assert 0.1 <= summary["scale_at_peak"] <= 10
    assert set(table.columns) >= {"scale", "temperature", "seed", "dim", "term",
                                  "positive_curvature", "fraction_positive", "spectral_norm",
                                  "top_eigenvalue", "trace", "frobenius", "loss", "accuracy",
                                  "finite"}
    # the figure is redrawn from the saved table alone
    (out / "figures" / "scale_sweep.png").unlink()
    paths = replot(out)
    assert (out / "figures" / "scale_sweep.png") in paths


@pytest.mark.slow
def test_temperature_sweep_equals_scale_sweep_under_t_alpha_to_minus_l(tmp_path):
    table, manifest = run_experiment(
        "temperature-sweep", out_dir=tmp_path, quick=True, show_progress=False,
        overrides={"model": "demo", "dataset": "circles", "num_samples": 150, "dim": 12,
                   "per_decade": 1, "scales": (1.0, 10.0)})
    degree = 3
    assert (table["degree"] == degree).all()
    temp = table[table["sweep"] == "temperature"]
    scale = table[table["sweep"] == "scale"]
    alphas = np.logspace(-3, 3, 7)
    # T grid spans 10^[-3L, 3L]
    np.testing.assert_allclose(sorted(temp.loc[temp["scale"] == 1.0, "temperature"]),
                               sorted(alphas ** -degree), rtol=1e-12)
    np.testing.assert_allclose(sorted(scale["scale"]), alphas, rtol=1e-12)
    # kappa, pi and the Hessian itself coincide under T = alpha^-L (same basis)
    assert scale["kappa_gap"].max() < 1e-8
    assert scale["identity_residual"].max() < 1e-8
    ref = temp[temp["scale"] == 1.0].set_index("temperature").sort_index()
    for _, row in scale.iterrows():
        match = ref.loc[ref.index[np.isclose(ref.index, row["equivalent_temperature"],
                                             rtol=1e-12)][0]]
        assert row["positive_curvature"] == pytest.approx(match["positive_curvature"],
                                                          abs=1e-8)
        assert row["fraction_positive"] == match["fraction_positive"]
    # at alpha = 10 the kappa(T) curve is the alpha = 1 curve shifted by T -> T * 10^L
    ten = temp[temp["scale"] == 10.0].set_index("temperature")["positive_curvature"]
    one = ref["positive_curvature"]
    for t in one.index[:-1]:
        shifted = ten.index[np.isclose(ten.index, t * 10.0**degree, rtol=1e-9)]
        if len(shifted):
            assert ten[shifted[0]] == pytest.approx(one[t], abs=1e-8)
    summary = manifest["provenance"]["summary"]
    assert summary["max_kappa_gap_scale_vs_temperature"] < 1e-8
    assert summary["peak_kappa"] > 1.0
    assert (tmp_path / "figures" / "temperature_sweep.png").stat().st_size > 10_000


def test_temperature_sweep_skips_overlay_for_non_homogeneous_model():
    exp = get("temperature-sweep")
    config = exp.default_config(model="demo", dataset="circles", num_samples=60, dim=4,
                                seeds=(0,), activation="tanh", log10_range=(-1.0, 1.0),
                                per_decade=1, scales=(1.0,), basis="sparse")
    ctx = RunContext(show_progress=False)
    table = exp.run(config, ctx)
    assert set(table["sweep"]) == {"temperature"}
    assert "not positively homogeneous" in ctx.provenance["equivalence_note"]
    assert ctx.provenance["degree"]["homogeneous"] is False
    # nominal L = number of weight layers (3): T = 10^[-3, 3]
    np.testing.assert_allclose(sorted(table["temperature"]), [1e-3, 1.0, 1e3], rtol=1e-12)


@pytest.mark.parametrize("name", ["scale-sweep", "temperature-sweep"])
@pytest.mark.parametrize("bad, match", [
    ({"basis": "dense"}, "basis"),
    ({"log10_range": (1.0, -1.0)}, "increasing"),
    ({"seeds": ()}, "seed"),
    ({"dim": 0}, "dim"),
])
def test_bad_config_is_rejected_with_a_clear_message(name, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        get(name).default_config(**bad)


def test_temperature_sweep_requires_the_reference_scale():
    with pytest.raises(ValueError, match="include 1.0"):
        get("temperature-sweep").default_config(scales=(0.1, 10.0))


def test_paper_defaults():
    cfg = get("scale-sweep").default_config()
    assert (cfg.model, cfg.dataset, cfg.dim, cfg.seeds, cfg.dtype) == (
        "lenet-300-100", "fashion-mnist", 50, (0, 1, 2), "float64")
    assert tuple(cfg.log10_range) == (-3.0, 3.0) and cfg.per_decade == 4
    quick = get("temperature-sweep").default_config(quick=True)
    assert quick.num_samples < cfg.num_samples
