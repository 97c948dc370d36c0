"""hyperplane-training (P3): training on random hyperplanes / hyperspheres vs starting radius."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goldilocks_zone.experiments import get
from goldilocks_zone.experiments._shared.architecture import held_out_data
from goldilocks_zone.experiments._shared.base import RunContext
from goldilocks_zone.experiments.hyperplane_training import (
    Config,
    dimension_needed,
    plot,
    reference_accuracy,
    run,
)


@pytest.fixture(scope="module")
def trained():
    """Inside the zone (Xavier radius) vs far outside it (100 × Xavier), same d and basis."""
    config = Config(model="mlp:32", dataset="digits", num_samples=500, num_test=300,
                    dims=(2, 32, 128), scales=(1.0, 100.0), fixed_dim=32, steps=150,
                    batch_size=None, lr=0.02, seeds=(0,))
    ctx = RunContext(show_progress=False)
    return config, run(config, ctx), ctx


def test_config_checks():
    exp = get("hyperplane-training")
    assert exp.default_config(quick=True).steps < exp.default_config().steps
    with pytest.raises(ValueError, match="fixed_dim"):
        exp.default_config(dims=(1, 2), fixed_dim=5)
    with pytest.raises(ValueError, match="surfaces"):
        exp.default_config(surfaces=("torus",))
    with pytest.raises(ValueError, match="scales"):
        exp.default_config(scales=(0.0, 1.0))


def test_table_layout(trained):
    config, table, _ = trained
    # per seed: one unconstrained run per scale + (surfaces × dims × scales) confined runs
    assert len(table) == 2 + 2 * 3 * 2
    assert set(table["surface"]) == {"full", "hyperplane", "sphere"}
    full = table[table["surface"] == "full"]
    assert (full["dim"] == full["num_params"]).all()
    assert np.allclose(table["radius"], table["scale"] * table["xavier_radius"], rtol=1e-5)
    sphere = table[table["surface"] == "sphere"]
    assert np.allclose(sphere["final_radius"], sphere["radius"], rtol=1e-4)
    assert table["finite"].all()
    # every run starts from the same init (argmax is scale-invariant for this bias-free start)
    assert table["initial_train_accuracy"].nunique() == 1


def test_inside_the_zone_beats_far_outside(trained):
    """Acceptance: at the same d, training from the Xavier radius beats training from 100 ×."""
    _, table, ctx = trained
    for kind in ("hyperplane", "sphere"):
        for d in (32, 128):
            sub = table[(table["surface"] == kind) & (table["dim"] == d)].set_index("scale")
            assert sub.loc[1.0, "test_accuracy"] > sub.loc[100.0, "test_accuracy"] + 0.15, (
                kind, d)
            assert sub.loc[1.0, "train_loss"] < sub.loc[100.0, "train_loss"]
    xav = table[(table["surface"] == "hyperplane") & (table["scale"] == 1.0)].set_index("dim")
    assert xav.loc[128, "test_accuracy"] > xav.loc[2, "test_accuracy"] + 0.3  # more d helps
    summary = ctx.provenance["summary"]
    assert summary["hyperplane_xavier_minus_outermost_at_fixed_dim"] > 0.15
    assert summary["unconstrained_accuracy"] == reference_accuracy(table) > 0.8


def test_dimension_needed_on_a_constructed_table():
    rows = [{"surface": "full", "scale": 1.0, "dim": 1000, "radius": 1.0,
             "test_accuracy": 0.9}]
    for s, accs in ((1.0, (0.3, 0.7, 0.85)), (10.0, (0.1, 0.2, 0.5))):
        for d, acc in zip((1, 10, 100), accs):
            rows.append({"surface": "hyperplane", "scale": s, "dim": d, "radius": s,
                         "test_accuracy": acc})
    needed = dimension_needed(pd.DataFrame(rows), threshold=0.9).set_index("scale")
    assert needed.loc[1.0, "dim_needed"] == 100   # 0.85 ≥ 0.81 first at d = 100
    assert np.isnan(needed.loc[10.0, "dim_needed"])
    needed = dimension_needed(pd.DataFrame(rows), threshold=0.7).set_index("scale")
    assert needed.loc[1.0, "dim_needed"] == 10    # 0.7 ≥ 0.63


def test_held_out_data_comes_from_the_test_split():
    import torch

    x, y = held_out_data("digits", 50, like=torch.zeros(1, dtype=torch.float64), seed=3)
    assert x.shape[0] == y.shape[0] == 50 and x.dtype == torch.float64
    x2, _ = held_out_data("digits", 50, like=torch.zeros(1), seed=3)
    assert torch.allclose(x.float(), x2)
    with pytest.raises(ValueError, match="test"):
        held_out_data("digits", 10**6, like=torch.zeros(1))


def test_plot(trained, tmp_path):
    config, table, _ = trained

    paths = plot(table, config, tmp_path)
    assert {p.name for p in paths} == {"hyperplane_accuracy_vs_dim.png",
                                       "hyperplane_accuracy_vs_dim.pdf",
                                       "hyperplane_accuracy_vs_radius.png",
                                       "hyperplane_accuracy_vs_radius.pdf"}
    assert all(p.stat().st_size > 1000 for p in paths)
