"""``logit-clustering``: vectorised per-sample Jacobians, SGD helper, P2's ordering on real data."""

from __future__ import annotations

import json

import pytest
import torch

from goldilocks_zone.experiments._shared.functional_training import (
    accuracy_and_loss,
    model_params,
    per_sample_jacobians,
)
from goldilocks_zone.experiments.logit_clustering import clustering
from goldilocks_zone.sweep.runner import replot, run_experiment
from goldilocks_zone.training.minibatch import sgd_trajectory


def _tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 4 * 4, 3)).double()
    x = torch.randn(7, 1, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    return net, x, y


def test_per_sample_jacobians_match_autograd():
    net, x, y = _tiny()
    params = model_params(net)
    chunks = list(per_sample_jacobians(net, params, x, chunk_size=3))
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    jac = torch.cat(chunks)
    dim = sum(p.numel() for p in net.parameters())
    assert jac.shape == (7, 3, dim)
    for s in range(7):  # dense oracle: one backward pass per (sample, logit), test only
        for k in range(3):
            net.zero_grad()
            net(x[s:s + 1])[0, k].backward()
            ref = torch.nn.utils.parameters_to_vector([p.grad for p in net.parameters()])
            torch.testing.assert_close(jac[s, k], ref)


def test_sgd_trajectory_is_seeded_functional_and_learns():
    net, x, y = _tiny()
    before = [p.detach().clone() for p in net.parameters()]
    theta0 = model_params(net)
    run1 = dict(sgd_trajectory(net, theta0, x, y, steps=60, lr=0.2, batch_size=4, seed=1,
                               yield_at=(0, 30)))
    run2 = dict(sgd_trajectory(net, theta0, x, y, steps=60, lr=0.2, batch_size=4, seed=1))
    assert sorted(run1) == [0, 30, 60] and sorted(run2) == [60]
    for k in theta0:
        torch.testing.assert_close(run1[60][k], run2[60][k], rtol=0, atol=0)
        torch.testing.assert_close(run1[0][k], theta0[k], rtol=0, atol=0)
    for p, b in zip(net.parameters(), before):  # the model is untouched
        assert torch.equal(p.detach(), b)
    assert accuracy_and_loss(net, run1[60], x, y)[1] < 0.5 * accuracy_and_loss(net, theta0, x,
                                                                              y)[1]
    with pytest.raises(ValueError, match="lr"):
        next(sgd_trajectory(net, theta0, x, y, steps=1, lr=0.0, batch_size=2))


def test_clustering_streamed_over_chunks_equals_one_chunk():
    net, x, y = _tiny()
    params = model_params(net)
    a = clustering(net, params, x, y, 3, chunk_size=2)
    b = clustering(net, params, x, y, 3, chunk_size=7)
    assert a.as_dict() == pytest.approx(b.as_dict())


@pytest.mark.slow
def test_logit_clustering_ordering_on_real_networks(tmp_path):
    """Acceptance (P2 Fig. 1): q_SLSC > q_SL > q_DL with q_DL near 0, for an MLP and a CNN on
    real digits images, at initialisation and after training."""
    out = tmp_path / "lc"
    table, _ = run_experiment(
        "logit-clustering", out_dir=out, quick=True, show_progress=False,
        overrides={"datasets": ("digits",), "activations": ("relu",), "num_samples": 60,
                   "train_samples": 600, "train_steps": 80})
    assert len(table) == 4 and set(table["stage"]) == {"init", "trained"}
    assert (table["q_slsc"] > table["q_sl"]).all()
    assert (table["q_sl"] > table["q_dl"] + 0.1).all()
    assert (table["q_dl"].abs() < 0.05).all()
    # training worked: well above chance (10 classes)
    trained = table[table["stage"] == "trained"]
    assert (trained["train_accuracy"] > 0.5).all()
    # pair counts for 60 balanced samples (6 per class), 10 logits
    assert (table["pairs_slsc"] == 10 * 10 * 6 * 5).all()
    assert (table["pairs_sl"] == 10 * (60 * 60 - 10 * 36)).all()
    summary = json.loads((out / "manifest.json").read_text())["provenance"]["summary"]
    assert summary["settings"] == 4 and summary["ordering_holds"] == 4
    (out / "figures" / "logit_clustering.png").unlink()
    assert any(p.name == "logit_clustering.png" for p in replot(out))
