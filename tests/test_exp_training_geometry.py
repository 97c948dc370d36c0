"""training-geometry (P2's four properties over training, via the curvature monitor)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from goldilocks_zone.experiments import get
from goldilocks_zone.experiments._shared.base import RunContext
from goldilocks_zone.experiments.training_geometry import (
    Config,
    checks,
    plot,
    run,
    train_and_monitor,
)
from goldilocks_zone.monitor import CurvatureMonitor


def test_config_checks_and_registration():
    exp = get("training-geometry")
    assert exp.default_config(quick=True).num_samples < 60_000
    assert exp.default_config().models == ("lenet-300-100", "small-cnn")
    with pytest.raises(ValueError, match="scales"):
        exp.default_config(scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="monitor_every"):
        exp.default_config(monitor_every=0)


@pytest.mark.slow
def test_tiny_run_table_checks_and_figure(tmp_path):
    config = Config(models=("lenet-300-100",), dataset="digits", num_samples=300,
                    scales=(0.1, 1.0, 10.0), epochs=2, batch_size=50, monitor_every=3,
                    monitor_samples=48, dim=4, lanczos_iterations=8, budget_s=60.0)
    ctx = RunContext(show_progress=False)
    table = run(config, ctx)
    assert set(table["scale"]) == {0.1, 1.0, 10.0}
    per_run = table.groupby("scale")
    # 6 steps per epoch, 12 steps: monitored at 0, 3, 6, 9, 12
    assert all(list(g["step"]) == [0, 3, 6, 9, 12] for _, g in per_run)
    assert (table["status"] == "measured").all()
    assert np.allclose(table["epoch"], table["step"] / 6)
    for scale, lr in per_run["lr"].first().items():  # eta_0 / alpha^(L-2), L = 3
        assert lr == pytest.approx(0.05 / scale)
    frac = table["gradient_top_k_fraction"].to_numpy(dtype=float)
    assert ((frac >= 0) & (frac <= 1 + 1e-9)).all()
    assert (table["num_outliers"] <= table["num_classes"]).all()
    c = checks(table)
    assert set(c["property"]) == {"outliers", "gradient confinement", "rise then fall", "zone"}
    assert c["passed"].dtype == bool
    summary = ctx.provenance["summary"]
    assert any(k.endswith("gradient confinement") for k in summary)
    paths = plot(table, config, tmp_path)
    assert (tmp_path / "training_geometry.png").stat().st_size > 10_000 and len(paths) == 2


def _row(step, epoch, **values):
    base = dict(model="m", scale=1.0, seed=0, step=step, epoch=epoch, status="measured",
                num_classes=10, num_outliers=9, gradient_top_k_fraction=0.8,
                eigenvalue_1=1.0, positive_curvature=2.0, accuracy=0.5, grad_norm=1.0)
    base.update(values)
    return base


def test_checks_pass_and_fail_on_constructed_tables():
    lam = [1.0, 3.0, 2.0]  # rises then falls to 2/3 of the peak
    rows = [_row(s, s / 2, eigenvalue_1=v) for s, v in zip((0, 2, 4), lam)]
    rows += [_row(s, s / 2, scale=10.0, positive_curvature=0.1, accuracy=0.2, num_outliers=0,
                  gradient_top_k_fraction=0.1, eigenvalue_1=1.0 + s) for s in (0, 2, 4)]
    c = checks(pd.DataFrame(rows)).set_index("property")
    assert c["passed"].all(), c
    assert c.loc["outliers", "value"] == 9 and c.loc["zone", "value"] == 1.0
    # the in-zone run is the one with the largest kappa at step 0; make it fail everything
    bad = pd.DataFrame(rows)
    bad.loc[bad["scale"] == 1.0, ["num_outliers", "gradient_top_k_fraction"]] = [2, 0.3]
    bad.loc[bad["scale"] == 1.0, "eigenvalue_1"] = [1.0, 2.0, 3.0]
    bad.loc[bad["scale"] == 10.0, "accuracy"] = 0.9
    c = checks(bad).set_index("property")
    assert not c["passed"].any(), c


def test_training_loop_is_the_monitor_use_case():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    monitor = CurvatureMonitor(net, (x, y), every=4, dim=3, num_samples=20, top_k=2,
                               lanczos_iterations=5)
    per_epoch = train_and_monitor(net, x, y, lr=0.1, epochs=2, batch_size=16, momentum=0.0,
                                  seed=0, monitor=monitor)
    assert per_epoch == 3
    # 6 steps: 0 and 4 are due, the last step (6) is always measured
    assert [r["step"] for r in monitor.records] == [0, 4, 6]
    assert all(math.isfinite(r["positive_curvature"]) for r in monitor.records)
