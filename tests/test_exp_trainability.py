"""trainability (P1 §5): full-batch GD from scaled inits, labelled behaviours."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from goldilocks_zone import data, models
from goldilocks_zone.experiments.trainability import final_table, label_run, learning_rate
from goldilocks_zone.sweep.runner import load_results, run_experiment
from goldilocks_zone.training.gradient_descent import evaluate, gradient_descent, initial_params

GRID = dict(num_samples=300, test_samples=300, scales=(0.01, 1.0, 100.0), steps=30,
            log_every=10, sharpness_every=3, sharpness_samples=100, sharpness_iterations=6)


@pytest.mark.slow
def test_grid_with_divergent_and_trained_runs(tmp_path):
    table, manifest = run_experiment("trainability", out_dir=tmp_path, show_progress=False,
                                     overrides=GRID)
    final = final_table(table).set_index("scale")
    labels = set(final["label"])
    assert {"diverged", "trained"} <= labels, final
    # alpha = 0.01: lr = eta_0 / alpha^(L-2) = 10 blows the weights up; recorded, not raised
    assert final.loc[0.01, "label"] == "diverged"
    tiny = table[table["scale"] == 0.01].sort_values("step")
    assert not bool(tiny["finite"].iloc[-1])
    assert not (math.isfinite(float(tiny["train_loss"].iloc[-1]))
                and math.isfinite(float(tiny["grad_norm"].iloc[-1])))
    assert tiny["step"].iloc[-1] < GRID["steps"]
    # alpha = 1 is inside the zone and trains
    assert final.loc[1.0, "label"] == "trained"
    assert final.loc[1.0, "train_accuracy"] > 0.6 and final.loc[1.0, "test_accuracy"] > 0.5
    # the lr rule, with L = 3 for LeNet-300-100
    for scale, lr in final["lr"].items():
        assert lr == pytest.approx(0.1 / scale)
    # logged quantities: step 0 is the init, cos(theta, theta_0) = 1 there; sharpness measured
    start = table[(table["scale"] == 1.0) & (table["step"] == 0)].iloc[0]
    assert start["cos_param_init"] == pytest.approx(1.0)
    assert start["sharpness"] > 0 and start["sharpness_residual"] < 0.1 * start["sharpness"]
    # accuracy does not depend on alpha at init for a homogeneous net
    inits = table[table["step"] == 0]
    assert np.ptp(inits["train_accuracy"].to_numpy()) <= 0.004
    # divergence is data in the saved table (non-finite values survive the round trip)
    saved, saved_manifest = load_results(tmp_path)
    assert len(saved) == len(table) and saved["finite"].dtype == bool
    assert "labels" in saved_manifest["provenance"]["summary"]
    for name in ("trainability_curves", "trainability_accuracy"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000


def _history(**last) -> pd.DataFrame:
    first = dict(step=0, train_loss=2.3, train_accuracy=0.1, cos_param_init=1.0,
                 zero_logit_fraction=0.0, finite=True)
    end = dict(first, step=100, train_loss=0.5, train_accuracy=0.9, cos_param_init=0.9)
    end.update(last)
    return pd.DataFrame([first, end])


@pytest.mark.parametrize("last, diverged, expected", [
    ({}, False, "trained"),
    ({"train_loss": math.nan, "finite": False}, True, "diverged"),
    ({"train_loss": 50.0}, False, "diverged"),  # exploded: > 10 x max(initial, log K)
    ({"zero_logit_fraction": 1.0, "train_accuracy": 0.1}, False, "zero-logits"),
    ({"cos_param_init": 0.9999}, False, "lazy"),
    ({"train_accuracy": 0.3}, False, "stalled"),
])
def test_label_rules(last, diverged, expected):
    label = label_run(_history(**last), majority_rate=0.1, num_classes=10,
                      trained_fraction=0.5, lazy_cosine=0.999, zero_logit_threshold=0.99,
                      explode_factor=10.0, diverged=diverged)
    assert label == expected


def test_learning_rate_rule():
    assert learning_rate(0.1, 10.0, 3) == pytest.approx(0.01)
    assert learning_rate(0.1, 0.5, 5) == pytest.approx(0.8)


def test_gradient_descent_is_functional_and_records_zero_logits():
    """Tiny demo net on circles: GD never touches the model; a far-too-small init with the
    compensating lr kills the last hidden layer (all logits exactly 0)."""
    ds = data.load("circles", num_samples=300, seed=0)
    model = models.create("demo", (2,), 3, seed=0).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = (ds.inputs.double(), ds.targets)
    run = gradient_descent(model, train, lr=0.5, steps=30, log_every=10)
    losses = [row["train_loss"] for row in run.history]
    assert losses[-1] < losses[0]
    assert [row["step"] for row in run.history] == [0, 10, 20, 30]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the final params are what evaluate sees
    ev = evaluate(model, run.params, train)
    assert ev.loss == pytest.approx(run.history[-1]["train_loss"])
    # zero logits far below the zone
    small = gradient_descent(model, train, lr=0.5 / 0.01, steps=200, log_every=50, scale=0.01)
    last = small.history[-1]
    assert last["zero_logit_fraction"] == 1.0 and not small.diverged
    label = label_run(pd.DataFrame(small.history), majority_rate=float(ds.prior.max()),
                      num_classes=3, trained_fraction=0.5, lazy_cosine=0.999,
                      zero_logit_threshold=0.99, explode_factor=10.0, diverged=False)
    assert label == "zero-logits"
    # a huge step overflows float32 and is reported, not raised
    model32 = models.create("demo", (2,), 3, seed=0)
    wild = gradient_descent(model32, (ds.inputs.float(), ds.targets), lr=1e30, steps=20,
                            log_every=5, scale=10.0)
    assert wild.diverged and not wild.history[-1]["finite"]
    assert not np.isfinite(wild.history[-1]["train_loss"]) or \
        not np.isfinite(wild.history[-1]["grad_norm"])


def test_initial_params_and_errors():
    model = models.create("demo", (2,), 3, seed=1)
    p = initial_params(model, scale=3.0, dtype=torch.float64)
    for (_name, q), w in zip(p.items(), model.parameters()):
        torch.testing.assert_close(q, 3.0 * w.detach().double())
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(model, (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)), lr=-1,
                         steps=1)
    with pytest.raises(ValueError, match="scales"):
        run_experiment("trainability", show_progress=False, plot=False,
                       overrides=dict(scales=(0.0,)))
