"""init-selection (P3): score inits by κ, π and initial loss; compare training speed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goldilocks_zone.experiments import get
from goldilocks_zone.experiments._shared.base import RunContext
from goldilocks_zone.experiments.init_selection import (
    SCORES,
    Config,
    compare,
    per_init,
    plot,
    run,
)


def _synthetic(speed_of, n: int = 16, steps: int = 20) -> pd.DataFrame:
    """A long table with logged steps 0, 10, 20; accuracy at step 10 = speed_of(κ)."""
    rng = np.random.default_rng(0)
    kappa = rng.permutation(np.linspace(-1, 3, n))
    rows = []
    for i, k in enumerate(kappa):
        common = {"init": i, "scale": 1.0, "radius": 1.0, "positive_curvature": k,
                  "fraction_positive": 0.5 + k / 10, "initial_loss": 3.0 - k,
                  "steps_to_target": np.nan}
        for step, acc in ((0, 0.1), (10, speed_of(k, i)), (20, 0.9)):
            rows.append(common | {"step": step, "train_accuracy": acc, "test_accuracy": acc,
                                  "train_loss": 1.0})
    return pd.DataFrame(rows)


def test_compare_detects_a_perfect_ordering():
    table = _synthetic(lambda k, i: 0.2 + 0.1 * k)
    result = compare(table, speed_step=10, top_fraction=0.25, steps=20).set_index("score")
    assert set(result.index) == set(SCORES)
    for score in SCORES:  # all three scores order the inits the same way here
        row = result.loc[score]
        assert row.n_top == 4 and row.n_rest == 12
        # exact one-sided Mann-Whitney p for complete separation: 1 / C(16, 4)
        assert row.p_value == pytest.approx(1 / 1820, rel=1e-6)
        assert row.spearman_rho == pytest.approx(1.0 if SCORES[score] else -1.0)
        assert row.top_median_accuracy > row.rest_median_accuracy
    # none reached a target: censored at steps + 1, no evidence either way
    assert (result["top_median_steps_to_target"] == 21).all()
    assert (result["steps_p_value"] > 0.4).all()


def test_compare_without_signal_is_not_significant():
    table = _synthetic(lambda k, i: 0.5 + 0.01 * ((i * 7) % 5))
    result = compare(table, speed_step=10, top_fraction=0.25, steps=20)
    assert (result["p_value"] > 0.05).all()


def test_per_init_uses_the_last_logged_step_before_speed_step():
    table = _synthetic(lambda k, i: 0.4)
    inits = per_init(table, speed_step=15, steps=20)
    assert len(inits) == 16 and np.allclose(inits["speed_accuracy"], 0.4)
    assert (inits["steps_to_target_censored"] == 21).all()


def test_config_checks():
    exp = get("init-selection")
    assert exp.default_config(quick=True).num_inits < exp.default_config().num_inits
    with pytest.raises(ValueError, match="multiple"):
        exp.default_config(speed_step=7, eval_every=5)
    with pytest.raises(ValueError, match="top_fraction"):
        exp.default_config(top_fraction=1.0)
    with pytest.raises(ValueError, match="num_inits"):
        exp.default_config(num_inits=2)


def test_end_to_end_produces_p_values_and_comparison(tmp_path):
    config = Config(model="mlp:16", dataset="digits", num_samples=300, num_test=200,
                    num_inits=12, dim=6, score_samples=150, top_fraction=0.25, steps=30,
                    batch_size=None, eval_every=5, speed_step=10, lr=0.02)
    ctx = RunContext(show_progress=False)
    table = run(config, ctx)
    assert table["init"].nunique() == 12
    assert sorted(table["step"].unique()) == list(range(0, 31, 5))
    inits = per_init(table, speed_step=10, steps=30)
    # the init scales spread over 10^[-1, 1] around Xavier, and κ responds to them
    assert inits["scale"].min() < 0.5 and inits["scale"].max() > 2
    assert inits["positive_curvature"].std() > 0.3
    comparison = pd.DataFrame(ctx.provenance["comparison"])
    assert list(comparison["score"]) == list(SCORES)
    assert comparison["p_value"].between(0, 1).all()
    assert (comparison["n_top"] == 3).all() and (comparison["n_rest"] == 9).all()
    summary = ctx.provenance["summary"]
    for score in SCORES:
        assert 0 <= summary[f"{score}_p_value"] <= 1
    paths = plot(table, config, tmp_path)
    assert {p.name for p in paths} == {"init_selection.png", "init_selection.pdf"}
