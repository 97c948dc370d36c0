"""``simplex``: freezing of the softmax over training and in the random model."""

from __future__ import annotations

import json
import math

import pytest

from goldilocks_zone.experiments import get
from goldilocks_zone.experiments.simplex import checkpoint_steps
from goldilocks_zone.sweep.runner import replot, run_experiment


def test_checkpoints_include_start_end_and_stages():
    steps = checkpoint_steps(1000, 5, (0.005, 0.05, 1.0))
    assert steps[0] == 0 and steps[-1] == 1000
    assert {5, 50, 1000} <= set(steps) and steps == sorted(set(steps))


@pytest.mark.slow
def test_simplex_end_to_end_freezing(tmp_path):
    """Acceptance (P2 Fig. 3-4): over training the logit variance and the logit-gradient
    length grow and the mean entropy falls; in the simplex the points move to the corners, in
    the network late in training and in the random model as sigma_z grows."""
    out = tmp_path / "sx"
    table, _ = run_experiment(
        "simplex", out_dir=out, quick=True, show_progress=False,
        overrides={"train_steps": 150, "train_samples": 600, "probe_samples": 90,
                   "jacobian_samples": 10, "num_checkpoints": 6})
    tr = table[table["section"] == "training"].sort_values("step")
    assert tr["step"].iloc[0] == 0 and tr["step"].iloc[-1] == 150
    assert tr["logit_variance"].iloc[-1] > 2 * tr["logit_variance"].iloc[0]
    assert tr["gradient_length"].iloc[-1] > tr["gradient_length"].iloc[0]
    assert tr["mean_entropy"].iloc[-1] < 0.5 * tr["mean_entropy"].iloc[0]
    assert tr["train_accuracy"].iloc[-1] > 0.8
    sx = table[table["section"] == "simplex"]
    probs = sx[["p0", "p1", "p2"]].sum(axis=1)
    assert probs.to_numpy() == pytest.approx(1.0)
    net = sx[sx["source"] == "network"].groupby("step")["entropy"].mean().sort_index()
    assert len(net) == 3 and net.iloc[-1] < net.iloc[0]
    rnd = sx[sx["source"] == "random-model"].groupby("sigma_z")["entropy"].mean().sort_index()
    assert rnd.is_monotonic_decreasing and rnd.iloc[-1] < 0.05 < 0.5 < rnd.iloc[0] < math.log(3)
    # bias-free at init (kaiming biases are zero): Var(z) grows as alpha^(2L), L = 3 layers
    summary = json.loads((out / "manifest.json").read_text())["provenance"]["summary"]
    assert summary["radial_log_slope"] == pytest.approx(6.0, abs=1e-3)
    for name in ("simplex", "simplex_dynamics"):
        (out / "figures" / f"{name}.png").unlink()
    assert len(replot(out)) == 4


def test_config_validation():
    exp = get("simplex")
    with pytest.raises(ValueError, match="classes"):
        exp.default_config(classes=(0, 1))
    with pytest.raises(ValueError, match="simplex_fractions"):
        exp.default_config(simplex_fractions=(0.0, 1.0))
