"""``gauss-newton`` (P1 Fig. 2): ||G||_2 ~ alpha^(2L-2) and ||H||_2 ~ alpha^(L-2) at small scale,
kappa(Hessian) > 1 where ||G||_2 >= ||H||_2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from goldilocks_zone.experiments import RunContext, get
from goldilocks_zone.experiments.gauss_newton import condition_mask, fit_small_scale_slopes
from goldilocks_zone.sweep.runner import replot, run_experiment


def _synthetic_table(g_slope: float, h_slope: float, bend_at: float) -> pd.DataFrame:
    """Pure power laws for alpha < bend_at, then a loss far from log K and bent norms."""
    rows = []
    for seed in (0, 1):
        for alpha in np.logspace(-3, 3, 13):
            bent = alpha >= bend_at
            loss = math.log(10) * (1.5 if bent else 1.0 + 1e-4)
            g = (1 + seed) * alpha**g_slope * (1e-3 if bent else 1.0)
            h = 2.0 * alpha**h_slope * (5.0 if bent else 1.0)
            for term, norm in (("hessian", g + h), ("g_term", g), ("h_term", h)):
                rows.append({"scale": alpha, "seed": seed, "term": term, "spectral_norm": norm,
                             "loss": loss, "num_classes": 10, "degree": 3,
                             "positive_curvature": 0.0})
    return pd.DataFrame(rows)


def test_slope_fit_recovers_power_laws_and_stops_where_outputs_leave_uniform():
    table = _synthetic_table(4.0, 1.0, bend_at=0.5)
    fit = fit_small_scale_slopes(table, uniform_tolerance=0.01)
    assert fit["region"] == [pytest.approx(1e-3), pytest.approx(10**-0.5)]
    assert fit["num_points"] == 6 and not fit["fallback_first_points"]
    assert fit["g_term"]["slope"] == pytest.approx(4.0, abs=1e-9)
    assert fit["h_term"]["slope"] == pytest.approx(1.0, abs=1e-9)
    assert fit["g_term"]["per_seed"] == {0: pytest.approx(4.0), 1: pytest.approx(4.0)}
    assert fit["predicted"] == {"g_term": 4, "h_term": 1}
    # nothing near-uniform: fall back to the first min_fit_points points, flagged
    fallback = fit_small_scale_slopes(_synthetic_table(4.0, 1.0, bend_at=1e-4),
                                      min_fit_points=3)
    assert fallback["fallback_first_points"] and fallback["num_points"] == 3


def test_condition_mask_on_synthetic_norms():
    table = _synthetic_table(4.0, 1.0, bend_at=1e9)
    mask = condition_mask(table)
    # seed-mean ||G|| = 1.5 alpha^4 >= 2 alpha  <=>  alpha >= (4/3)^(1/3)
    expected = mask.index.to_numpy() >= (4 / 3) ** (1 / 3)
    assert (mask.to_numpy() == expected).all()


def _check_science(table: pd.DataFrame, fit: dict, degree: int) -> None:
    assert fit["predicted"] == {"g_term": 2 * degree - 2, "h_term": degree - 2}
    assert fit["g_term"]["slope"] == pytest.approx(2 * degree - 2, rel=0.05)
    assert fit["h_term"]["slope"] == pytest.approx(degree - 2, rel=0.05)
    for slope in fit["g_term"]["per_seed"].values():
        assert slope == pytest.approx(2 * degree - 2, rel=0.05)
    # Hessian = G-term + H-term, row by row (traces add)
    piv = table.pivot_table(index=["seed", "scale"], columns="term", values="trace")
    np.testing.assert_allclose(piv["hessian"], piv["g_term"] + piv["h_term"],
                               rtol=1e-8, atol=1e-12 * piv["hessian"].abs().max())
    # the G-term is PSD: kappa(G) >= 0 and pi(G) = 1 while it has not underflowed
    g = table[table["term"] == "g_term"]
    assert (g["positive_curvature"] >= -1e-9).all()


@pytest.mark.slow
def test_gauss_newton_demo_on_circles_end_to_end(tmp_path):
    table, manifest = run_experiment(
        "gauss-newton", out_dir=tmp_path, quick=True, show_progress=False,
        overrides={"model": "demo", "dataset": "circles", "num_samples": 200, "dim": 16,
                   "seeds": (0,), "per_decade": 2})
    assert len(table) == 13 * 3 and set(table["term"]) == {"hessian", "g_term", "h_term"}
    fit = manifest["provenance"]["slope_fit"]
    assert fit["region"][0] == pytest.approx(1e-3) and fit["num_points"] >= 3
    _check_science(table, fit, degree=3)
    # the fundamental condition: kappa(Hessian) > 1 where ||G||_2 >= ||H||_2, ~0 where G << H
    mask = condition_mask(table)
    assert mask.any() and not mask.iloc[0] and not mask.iloc[-1]
    kappa = table[table["term"] == "hessian"].groupby("scale")["positive_curvature"].mean()
    assert kappa[mask[mask].index].max() > 1.0
    norms = table.pivot_table(index="scale", columns="term", values="spectral_norm")
    far = norms["g_term"] < 1e-3 * norms["h_term"]
    assert far.sum() >= 4 and kappa[far[far].index].abs().max() < 1.0
    summary = manifest["provenance"]["summary"]
    assert summary["predicted_slopes_2L-2_L-2"] == [4, 1]
    assert summary["min_kappa_where_G_ge_H"] > 0.5
    png = tmp_path / "figures" / "gauss_newton.png"
    assert png.stat().st_size > 10_000
    png.unlink()
    assert png in replot(tmp_path)


def test_gauss_newton_slopes_lenet_on_fashion_mnist():
    exp = get("gauss-newton")
    config = exp.default_config(num_samples=100, dim=8, seeds=(0,), log10_range=(-3.0, 0.0),
                                per_decade=1)
    ctx = RunContext(show_progress=False)
    table = exp.run(config, ctx)
    fit = ctx.provenance["slope_fit"]
    # alpha = 1 has O(1) logits, so the fit region is alpha in [1e-3, 1e-1]
    assert fit["region"] == [pytest.approx(1e-3), pytest.approx(1e-1)]
    _check_science(table, fit, degree=3)
