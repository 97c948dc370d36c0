"""radius-shell (P3): a shell of positive curvature around the Xavier radius."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goldilocks_zone.experiments import get
from goldilocks_zone.experiments._shared.architecture import (
    build_problem,
    parameter_radius,
    parse_architecture,
)
from goldilocks_zone.experiments._shared.base import RunContext
from goldilocks_zone.experiments._shared.common import cpu_threads
from goldilocks_zone.experiments.radius_shell import (
    Config,
    plot,
    run,
    shell_table,
)


@pytest.fixture(scope="module")
def shell():
    """P3's setting on small real data: an MLP with biases, Xavier init, radii 10^-2..10^2."""
    config = Config(models=("mlp:32",), activations=("relu",), datasets=("digits",),
                    num_samples=300, radius_lo=-2.0, radius_hi=2.0, per_decade=2, dim=20,
                    seeds=(0, 1, 2))
    ctx = RunContext(show_progress=False)
    return config, run(config, ctx), ctx


def test_parse_architecture():
    arch = parse_architecture("mlp:100x50")
    assert arch.model == "mlp" and arch.kwargs == {"widths": (100, 50)} and arch.depth == 3
    assert parse_architecture("mlp:7").kwargs == {"widths": (7,)}
    cnn = parse_architecture("small-cnn")
    assert cnn.model == "small-cnn" and cnn.kwargs == {} and cnn.is_convolutional
    for bad in ("mlp:a", "mlpx3", "mlp:0", ""):
        with pytest.raises(ValueError):
            parse_architecture(bad)


def test_config_validation_and_quick_preset():
    exp = get("radius-shell")
    quick = exp.default_config(quick=True)
    assert quick.dim < exp.default_config().dim
    assert np.isclose(quick.relative_radii, 1.0).any()  # the Xavier radius is a grid point
    with pytest.raises(ValueError, match="straddle"):
        exp.default_config(radius_lo=0.5)
    with pytest.raises(ValueError, match="mlp"):
        exp.default_config(models=("mlp:abc",))


def test_cpu_threads_restores_the_setting():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with cpu_threads(-1):
            pass


def test_table_radii_and_reference_radii(shell):
    config, table, _ = shell
    assert len(table) == len(config.relative_radii) * len(config.seeds)
    assert np.allclose(table["radius"], table["scale"] * table["xavier_radius"])
    # Kaiming's variance 2/fan_in exceeds Xavier's 2/(fan_in + fan_out): a larger radius
    assert (table["kaiming_radius"] > table["xavier_radius"]).all()
    assert (table["dim"] == 20).all() and table["finite"].all()
    # κ ∈ [−√d, √d], π ∈ [0, 1]
    assert (table["positive_curvature"].abs() <= np.sqrt(20) + 1e-9).all()
    assert table["fraction_positive"].between(0, 1).all()
    # the radius of the built model is the Xavier radius the table reports
    problem = build_problem(parse_architecture("mlp:32"), dataset="digits", num_samples=300,
                            seed=0, activation="relu")
    assert np.isclose(parameter_radius(problem.model),
                      table.loc[table["seed"] == 0, "xavier_radius"].iloc[0])


def test_shell_contains_the_xavier_radius(shell):
    """Acceptance: κ clearly positive at the Xavier radius, ≈ 0 far inside and far outside."""
    _, table, ctx = shell
    curve = table.groupby("relative_radius")["positive_curvature"].mean().sort_index()
    kappa_x = curve.loc[np.isclose(curve.index, 1.0)].iloc[0]
    assert kappa_x > 1.5
    assert abs(curve.iloc[0]) < 0.3 * kappa_x, curve
    assert abs(curve.iloc[-1]) < 0.3 * kappa_x, curve
    pi = table.groupby("relative_radius")["fraction_positive"].mean().sort_index()
    assert pi.loc[np.isclose(pi.index, 1.0)].iloc[0] > max(pi.iloc[0], pi.iloc[-1])
    shells = shell_table(table)
    assert shells.loc[0, "shell_lo"] <= 1.0 <= shells.loc[0, "shell_hi"]
    summary = ctx.provenance["summary"]
    assert summary["xavier_radius_in_shell"] == 1
    assert np.isclose(summary["kappa_at_xavier_mean"], kappa_x)


def test_fundamental_condition_inside_and_saturation_outside(shell):
    """At the Xavier radius ‖G_R‖₂ > ‖H_R‖₂ (P1's fundamental condition); far outside the
    softmax saturates: confident, mostly wrong predictions with a loss far above log K."""
    _, table, _ = shell
    outer = table[table["relative_radius"] == table["relative_radius"].max()]
    xavier = table[np.isclose(table["relative_radius"], 1.0)]
    assert (xavier["g_spectral_norm"] > xavier["h_spectral_norm"]).all()
    assert (outer["loss"] > 100 * np.log(10)).all()
    inner = table[table["relative_radius"] == table["relative_radius"].min()]
    assert np.allclose(inner["loss"], np.log(10), rtol=1e-3)  # near-uniform outputs


def test_cnn_and_tanh_run_and_plot(shell, tmp_path):
    config = Config(models=("small-cnn", "mlp:16x16"), activations=("tanh",),
                    datasets=("digits",), num_samples=64, radius_lo=-1.0, radius_hi=1.0,
                    per_decade=1, dim=4, seeds=(0,))
    table = run(config, RunContext(show_progress=False))
    assert set(table["architecture"]) == {"small-cnn", "mlp:16x16"}
    assert table.groupby("architecture").size().tolist() == [3, 3]
    assert table["finite"].all()
    paths = plot(shell[1], shell[0], tmp_path)
    paths += plot(table, config, tmp_path / "cnn")
    assert {p.name for p in paths} >= {"radius_shell_kappa.png",
                                       "radius_shell_fraction_positive.png",
                                       "radius_shell_gauss_newton.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
