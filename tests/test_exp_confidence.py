"""confidence (P1 §4): entropy, positive curvature and initial loss over random inits."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from goldilocks_zone.experiments.confidence import correlations
from goldilocks_zone.sweep.runner import run_experiment

SMALL = dict(num_inits=10, num_samples=200, dim=10)


@pytest.mark.slow
def test_curvature_rises_with_entropy_and_falls_with_loss(tmp_path):
    table, manifest = run_experiment("confidence", out_dir=tmp_path, show_progress=False,
                                     overrides=SMALL)
    assert len(table) == SMALL["num_inits"] and table["seed"].is_unique
    assert table["finite"].all()
    # entropies are entropies, kappa lies in [-sqrt(d), sqrt(d)], positive inside the zone
    assert ((table["mean_entropy"] > 0) & (table["mean_entropy"] <= math.log(10) + 1e-9)).all()
    assert (table["positive_curvature"].abs() <= math.sqrt(SMALL["dim"]) + 1e-9).all()
    assert (table["positive_curvature"] > 0.5).all()
    corr = manifest["provenance"]["correlations"]
    # less confident inits (higher entropy) have more positive curvature and a lower loss
    assert corr["mean_entropy vs positive_curvature"]["pearson_r"] > 0.5
    assert corr["mean_entropy vs positive_curvature"]["pearson_p"] < 0.05
    assert corr["mean_entropy vs loss"]["pearson_r"] < -0.5
    assert corr["positive_curvature vs loss"]["spearman_rho"] < -0.3
    assert (tmp_path / "figures" / "confidence.png").stat().st_size > 10_000


def test_correlations_handle_degenerate_columns():
    table = pd.DataFrame({"mean_entropy": [1.0, 2.0, 3.0, 4.0],
                          "positive_curvature": [2.0, 4.0, 6.0, 8.0],
                          "loss": [1.0, 1.0, 1.0, 1.0]})
    corr = correlations(table)
    assert corr["mean_entropy vs positive_curvature"]["pearson_r"] == pytest.approx(1.0)
    assert math.isnan(corr["mean_entropy vs loss"]["pearson_r"])


def test_config_validation():
    with pytest.raises(ValueError, match="num_inits"):
        run_experiment("confidence", show_progress=False, plot=False,
                       overrides=dict(num_inits=2))
