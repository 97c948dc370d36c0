"""``random-model`` experiment end to end: table sections, summary, figures, the science."""

from __future__ import annotations

import json

import numpy as np
import pytest

from goldilocks_zone.experiments import get
from goldilocks_zone.sweep.runner import replot, run_experiment


@pytest.mark.slow
def test_random_model_experiment_end_to_end(tmp_path):
    out = tmp_path / "rm"
    table, _ = run_experiment(
        "random-model", out_dir=out, quick=True, show_progress=False,
        overrides={"dim": 200, "num_samples": 150, "per_decade": 1})
    assert set(table["section"]) == {"spectrum", "margin", "sigma_z"}
    spec = table[table["section"] == "spectrum"]
    assert len(spec) == 200 and spec["index"].tolist() == list(range(1, 201))
    # the cosines with an orthonormal eigenbasis carry all the gradient power
    assert float((spec["cosine"] ** 2).sum()) == pytest.approx(1.0)
    # class structure only adds positive curvature: the spectrum dominates the bulk's
    assert (spec["eigenvalue"].to_numpy()[:20] >= spec["null_eigenvalue"].to_numpy()[:20]).all()
    margin = table[table["section"] == "margin"].set_index("label_margin")
    assert margin.loc[3.0, "gradient_power_top10"] > margin.loc[0.0, "gradient_power_top10"]
    sweep = table[table["section"] == "sigma_z"].sort_values("sigma_z")
    assert len(sweep) == 8
    kappa = sweep["positive_curvature"].to_numpy()
    assert abs(kappa[0]) < 0.5 and abs(kappa[-1]) < 0.5 and kappa.max() > 5
    assert 0 < int(np.argmax(kappa)) < len(kappa) - 1
    summary = json.loads((out / "manifest.json").read_text())["provenance"]["summary"]
    assert summary["gradient_power_top10"] == pytest.approx(margin.loc[3.0,
                                                                     "gradient_power_top10"])
    assert summary["peak_kappa"] == pytest.approx(kappa.max())
    for name in ("random_model_spectrum", "random_model_sigma_z"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 20_000
        (out / "figures" / f"{name}.png").unlink()
    assert len(replot(out)) == 4


def test_config_validation():
    exp = get("random-model")
    with pytest.raises(ValueError, match="top_k"):
        exp.default_config(top_k=0)
    with pytest.raises(ValueError, match="log10_sigma_z"):
        exp.default_config(log10_sigma_z=(2.0, 1.0))
    with pytest.raises(ValueError, match="sigma_c"):
        exp.default_config(sigma_c=-1.0)


@pytest.mark.slow
def test_hessian_spectrum_of_a_network_beside_the_random_model(tmp_path):
    """The full-space spectrum of a small trained MLP on real digits: SLQ density normalised,
    Lanczos outliers above the bulk holding much of the gradient; the SLQ estimate of the
    random model's trace agrees with the exact one."""
    out = tmp_path / "hs"
    table, _ = run_experiment(
        "hessian-spectrum", out_dir=out, quick=True, show_progress=False,
        overrides={"num_samples": 200, "train_samples": 600, "train_steps": 150,
                   "widths": (16,), "num_probes": 4, "num_steps": 30, "top_k": 15,
                   "lanczos_iterations": 60, "random_dim": 500})
    dens = table[table["section"] == "density"]
    for (_, _), g in dens.groupby(["source", "stage"]):
        g = g.sort_values("eigenvalue")
        assert np.trapezoid(g["density"], g["eigenvalue"]) == pytest.approx(1.0, abs=0.02)
    st = table[table["section"] == "stats"].set_index(["source", "stage"])
    trained = st.loc[("network", "trained")]
    assert trained["num_outliers"] >= 1 and trained["gradient_power_top_c"] > 0.3
    assert trained["accuracy"] > 0.8
    slq = st.loc[("random-model (SLQ)", "random model")]
    assert abs(slq["trace"] - slq["exact_trace"]) < 4 * slq["trace_std_error"]
    assert st.loc[("random-model", "random model"), "num_outliers"] == 10
    # Lanczos eigenvalues are sorted and the top one bounds the SLQ nodes' support
    top = table[(table["section"] == "top") & (table["source"] == "network")]
    for _, g in top.groupby("stage"):
        lam = g.sort_values("index")["eigenvalue"].to_numpy()
        assert (np.diff(lam) <= 1e-9 * abs(lam[0])).all()
    assert (out / "figures" / "hessian_spectrum.png").stat().st_size > 20_000
