"""Fidelity to P1: the demo model is the paper's, and the identities docs/fidelity.md quotes
hold on it (Tr of the H-term = 0 for bias-free ReLU nets; scale <-> temperature)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import goldilocks_zone as gz
from goldilocks_zone import data, models


def test_demo_is_the_papers_network():
    net = models.create("demo", (2,), 3, seed=0)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 2), (32, 32), (3, 32)]
    assert all(m.bias is None for m in linears)  # bias-free
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 2
    assert sum(p.numel() for p in net.parameters()) == 1184
    assert net(torch.zeros(5, 2)).shape == (5, 3)
    # Kaiming-normal, fan-in: W ~ N(0, 2 / fan_in); pooled over 50 seeds per layer
    for layer, fan_in in ((0, 2), (1, 32), (2, 32)):
        w = torch.cat([[m for m in models.create("demo", (2,), 3, seed=s).modules()
                        if isinstance(m, nn.Linear)][layer].weight.double().reshape(-1)
                       for s in range(50)])
        n = w.numel()
        assert abs(float(w.mean())) < 4 * math.sqrt(2 / fan_in / n)
        assert float(w.var()) == pytest.approx(2 / fan_in, rel=4 * math.sqrt(2 / n))
        kurtosis = float(((w - w.mean()) ** 4).mean() / w.var() ** 2)
        assert kurtosis == pytest.approx(3.0, abs=0.3)  # normal, not uniform (1.8)


def test_h_term_is_traceless_for_the_bias_free_relu_demo():
    """Each logit of a bias-free ReLU net is linear in any one layer's weights, so the
    diagonal blocks of every logit Hessian vanish: Tr(H-term) = 0 and Tr(Hessian) = Tr(G),
    measured on the full d = D subspace."""
    ds = data.load("circles", num_samples=40, seed=0)
    net = models.create("demo", (2,), 3, seed=1).double()
    eye = torch.eye(1184, dtype=torch.float64)
    res = gz.subspace_curvature(net, ds.data, eye, scale=2.0)
    h, g, full = (res.stats(t) for t in ("h_term", "g_term", "hessian"))
    assert h.frobenius > 1e-3  # the H-term itself is far from zero ...
    assert abs(h.trace) < 1e-12 * h.frobenius * math.sqrt(1184)  # ... but traceless
    assert full.trace == pytest.approx(g.trace, rel=1e-12)


def test_scale_equals_temperature_on_circles():
    """kappa at scale alpha equals kappa at T = alpha^-L (L = 3) with the same basis."""
    ds = data.load("circles", num_samples=60, seed=0)
    net = models.create("demo", (2,), 3, seed=2).double()
    basis = gz.random_basis(1184, 8, seed=0)
    for alpha in (0.3, 3.0):
        by_scale = gz.subspace_curvature(net, ds.data, basis, scale=alpha)
        by_temp = gz.subspace_curvature(net, ds.data, basis, temperature=alpha ** -3)
        for term in ("hessian", "g_term", "h_term"):
            assert by_scale.stats(term).positive_curvature == pytest.approx(
                by_temp.stats(term).positive_curvature, abs=1e-10)
