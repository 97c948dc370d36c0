"""``expected-g`` (P1 Figs. 3-4): measured kappa(G) against the random-model prediction
kappa(E G) of Eq. 9, over scale and dimension, and Gamma_p^-2 of random logits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.experiments import RunContext, get
from goldilocks_zone.experiments._shared.common import load_problem
from goldilocks_zone.experiments.expected_g import g_term_point, logit_panel, summarise
from goldilocks_zone.sweep.runner import run_experiment


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_g_term_from_jacobians_equals_the_engine(scale):
    problem = load_problem(model="demo", dataset="circles", num_samples=80, seed=0)
    basis = random_basis(problem.num_params, 6, seed=0)
    point = g_term_point(problem, basis, scale=scale, batch_size=None, debias=False)
    engine = subspace_curvature(problem.model, problem.data, basis, scale=scale).stats("g_term")
    assert point["positive_curvature"] == pytest.approx(engine.positive_curvature, rel=1e-9)
    assert point["spectral_norm"] == pytest.approx(engine.spectral_norm, rel=1e-9)
    assert point["trace"] == pytest.approx(engine.trace, rel=1e-9)


def test_logit_panel_limits():
    rows = logit_panel(30, 10, (1e-3, 1.0, 1e3), seed=0)
    mean = {r["logit_scale"]: r["gamma_p_inv_sq"] for r in rows if r["series"] == "mean"}
    sets = [r for r in rows if r["series"] == "set"]
    assert len(sets) == 3 * 30
    # uniform outputs: Gamma_p^-2 = 1/(K-1); confident outputs: -> 1
    assert mean[1e-3] == pytest.approx(1 / 9, rel=1e-4)
    assert mean[1e3] == pytest.approx(1.0, abs=1e-6)
    assert 1 / 9 < mean[1.0] < 1.0
    assert all(1 / 9 - 1e-9 <= r["gamma_p_inv_sq"] <= 1 + 1e-9 for r in rows)


@pytest.mark.slow
def test_expected_g_lenet_on_fashion_mnist_end_to_end(tmp_path):
    dims = (2, 4, 8, 16, 32)
    table, manifest = run_experiment(
        "expected-g", out_dir=tmp_path, quick=True, show_progress=False,
        overrides={"num_samples": 200, "dim": 16, "seeds": (0,), "per_decade": 1,
                   "dims": dims, "logit_sets": 10, "logit_per_decade": 2})
    assert set(table["panel"]) == {"scale", "dim", "logits"}
    sc = table[table["panel"] == "scale"].sort_values("scale")
    assert len(sc) == 7 and sc["finite"].all()
    d, k = 16, 10
    # G is PSD (kappa >= 0) and kappa lies in [0, sqrt(d)]
    assert (sc["positive_curvature"] >= 0).all()
    assert (sc["positive_curvature"] <= math.sqrt(d) + 1e-9).all()
    # Gamma_p: sqrt(K-1) at uniform outputs (tiny scale) down to ~1 when confident
    assert sc["gamma_p"].iloc[0] == pytest.approx(math.sqrt(k - 1), rel=1e-6)
    assert sc["gamma_p"].iloc[-1] < 1.1
    # sigma^2 of J R scales like alpha^(2L-2) = alpha^4 for the homogeneous LeNet
    ratio = sc["sigma_e2"].iloc[1] / sc["sigma_e2"].iloc[0]
    assert ratio == pytest.approx(10.0**4, rel=1e-6)
    # Eq. 9 agrees with the measurement on the plateau (small alpha) ...
    small = sc[sc["scale"] <= 0.1]
    rel = (small["positive_curvature"] - small["expected_curvature"]).abs() \
        / small["expected_curvature"]
    assert rel.max() < 0.2
    # ... and both decline once Gamma_p -> 1 (plateau, then decline)
    assert sc["expected_curvature"].iloc[-1] < sc["expected_curvature"].iloc[0] - 0.5
    assert sc["positive_curvature"].iloc[-1] < sc["positive_curvature"].iloc[0] - 1.0
    # kappa vs d: increasing, below sqrt(d), Eq. 9 within 25%
    dm = table[table["panel"] == "dim"].sort_values("dim")
    assert tuple(dm["dim"]) == dims
    assert np.all(np.diff(dm["positive_curvature"].to_numpy()) > 0)
    assert (dm["positive_curvature"] <= np.sqrt(dm["dim"]) + 1e-9).all()
    rel = (dm["positive_curvature"] - dm["expected_curvature"]).abs() / dm["expected_curvature"]
    assert rel.max() < 0.25
    # the d = config.dim point of the dimension panel is the scale panel's point at alpha = 1
    at_one = sc[np.isclose(sc["scale"], 1.0)]["positive_curvature"].iloc[0]
    assert dm[dm["dim"] == d]["positive_curvature"].iloc[0] == pytest.approx(at_one)
    summary = manifest["provenance"]["summary"]
    assert summary["gamma_p_inv_sq_range"][0] == pytest.approx(1 / 9, rel=1e-3)
    assert (tmp_path / "figures" / "expected_g.png").stat().st_size > 10_000


def test_expected_g_rejects_dims_larger_than_the_model():
    exp = get("expected-g")
    config = exp.default_config(model="demo", dataset="circles", num_samples=20, dim=4,
                                seeds=(0,), per_decade=1, log10_range=(-1.0, 0.0),
                                dims=(4, 10**6))
    with pytest.raises(ValueError, match="exceed the number of parameters"):
        exp.run(config, RunContext(show_progress=False))


def test_theory_inputs_are_float64():
    problem = load_problem(model="demo", dataset="circles", num_samples=30, seed=1)
    basis = random_basis(problem.num_params, 3, seed=1)
    point = g_term_point(problem, basis, scale=1.0, batch_size=7, debias=True)
    assert isinstance(point["expected_curvature"], float)
    assert 0 < point["expected_curvature"] <= math.sqrt(3) + 1e-12
    assert torch.get_default_dtype() == torch.float32  # untouched global state


def test_saturated_rows_are_marked_and_left_out_of_the_agreement():
    """Saturated means M-bar = 0 (every output one-hot): G is the zero matrix, kappa(G) reads
    0, Eq. 9 keeps its confident-output limit (Gamma_p = 1). Just below that, M-bar and G are
    tiny (~1e-200, their squares underflow) but non-zero: measured, not saturated."""
    from goldilocks_zone.curvature import projected_logit_jacobians
    from goldilocks_zone.theory import mean_softmax_covariance

    problem = load_problem(model="demo", dataset="circles", num_samples=200, seed=0)
    basis = random_basis(problem.num_params, 10, seed=0)
    live = g_term_point(problem, basis, scale=1.0, batch_size=None, debias=False)
    tiny = g_term_point(problem, basis, scale=200.0, batch_size=None, debias=False)
    dead = g_term_point(problem, basis, scale=1e3, batch_size=None, debias=False)
    assert not live["saturated"] and live["positive_curvature"] > 1

    def trace_m_bar(scale):
        probs = projected_logit_jacobians(problem.model, problem.data, basis, scale=scale).probs
        return float(mean_softmax_covariance(probs).diagonal().sum())

    assert 0 < trace_m_bar(200.0) < 1e-150 and trace_m_bar(1e3) == 0.0
    # G ~ 1e-199: its squared entries underflow, yet kappa is measured (rank one: 1.0)
    assert 0 < tiny["frobenius"] < 1e-150
    assert not tiny["saturated"] and tiny["positive_curvature"] == pytest.approx(1.0)
    assert dead["saturated"] and dead["positive_curvature"] == 0.0 and dead["frobenius"] == 0
    assert dead["gamma_p"] == 1.0 and dead["expected_curvature"] > 1
    authors = g_term_point(problem, basis, scale=1.0, batch_size=None, debias=False, ddof=1)
    assert authors["sigma_c2"] == pytest.approx(live["sigma_c2"] * 30 / 29, rel=1e-12)
    table = pd.DataFrame([{"panel": "scale", "scale": a, "seed": 0, "dim": 10, **p}
                          for a, p in ((1.0, live), (1e3, dead))]
                         + logit_panel(2, 3, (1.0,), seed=0))
    summary = summarise(table)
    assert summary["saturated_rows"] == 1 and summary["smallest_saturated_scale"] == 1e3
    assert summary["median_relative_gap_kappa_g_vs_eq9"] == pytest.approx(
        abs(live["positive_curvature"] - live["expected_curvature"])
        / live["expected_curvature"])
