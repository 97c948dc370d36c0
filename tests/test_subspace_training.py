"""Training on random hyperplanes / hyperspheres: confinement, chain rule, no mutation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from goldilocks_zone.training.subspace import (
    ParameterLayout,
    Surface,
    evaluate,
    flatten_parameters,
    split_holdout,
    train_on_surface,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add contention on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed: int = 0, dtype=torch.float64, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), act(), nn.Linear(16, 3)).to(dtype)


def _blobs(n: int = 240, seed: int = 0, dtype=torch.float64):
    """Three well separated Gaussian blobs in 2-D (linearly separable)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], dtype=dtype)
    y = torch.arange(n) % 3
    x = centres[y] + 0.3 * torch.randn(n, 2, generator=g, dtype=dtype)
    perm = torch.randperm(n, generator=g)
    return x[perm], y[perm]


def _orthonormal(D: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=dtype))
    return q


def test_layout_round_trip_and_functional_call_matches_model():
    model = _mlp()
    layout = ParameterLayout.of(model)
    theta = flatten_parameters(model)
    assert layout.num_params == theta.numel() == sum(p.numel() for p in model.parameters())
    params = layout.to_dict(theta)
    assert list(params) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert torch.equal(params[name], p.detach())
    assert torch.equal(layout.flatten(params), theta)
    x, _ = _blobs(10)
    assert torch.allclose(functional_call(model, params, (x,)), model(x))
    with pytest.raises(ValueError, match="length"):
        layout.to_dict(theta[:-1])


def test_surface_points_hyperplane_sphere_full():
    D, d = 30, 4
    g = torch.Generator().manual_seed(1)
    anchor = torch.randn(D, generator=g, dtype=torch.float64)
    R = _orthonormal(D, d, 2)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    plane = Surface(anchor, R)
    assert plane.kind == "hyperplane" and plane.dim == d
    assert torch.equal(plane.point(torch.zeros(d, dtype=torch.float64)), anchor)
    # affine: θ(u) − P = R u, and θ(a u) − P = a (θ(u) − P)
    assert torch.allclose(plane.point(u) - anchor, R @ u)
    assert torch.allclose(plane.point(2.5 * u) - anchor, 2.5 * (plane.point(u) - anchor))
    sphere = Surface(anchor, R, radius=7.0)
    assert sphere.kind == "sphere"
    for scale in (0.0, 1.0, 100.0):
        assert math.isclose(float(sphere.point(scale * u).norm()), 7.0, rel_tol=1e-12)
    assert torch.allclose(sphere.point(torch.zeros(d, dtype=torch.float64)),
                          7.0 * anchor / anchor.norm())
    full = Surface(anchor)
    assert full.kind == "full" and full.dim == D
    assert torch.equal(full.point(anchor), 2 * anchor)


@pytest.mark.parametrize("kwargs, match", [
    ({"basis": torch.zeros(5, 2, dtype=torch.float64)}, "shape"),
    ({"basis": torch.zeros(30, 0, dtype=torch.float64)}, "at least one column"),
    ({"radius": -1.0}, "positive"),
    ({"radius": float("inf")}, "positive"),
])
def test_surface_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Surface(torch.ones(30, dtype=torch.float64), **kwargs)


def test_evaluate_is_a_sample_mean_independent_of_chunking():
    model = _mlp()
    x, y = _blobs(101)
    theta = flatten_parameters(model)
    with torch.no_grad():
        logits = model(x)
    ref_loss = float(F.cross_entropy(logits, y))
    ref_acc = float((logits.argmax(1) == y).double().mean())
    for chunk in (7, 50, 1000):  # 101 = 14*7 + 3: uneven last chunk
        loss, acc = evaluate(model, theta, (x, y), batch_size=chunk)
        assert math.isclose(loss, ref_loss, rel_tol=1e-12)
        assert math.isclose(acc, ref_acc)


def test_one_sgd_step_is_the_projected_gradient():
    """Chain rule: ∇_u L(P + R u)|_{u=0} = Rᵀ ∇_θ L(P), so one plain SGD step gives u = −η Rᵀ∇L."""
    model = _mlp()
    x, y = _blobs(60)
    layout = ParameterLayout.of(model)
    anchor = flatten_parameters(model)
    R = _orthonormal(anchor.numel(), 5, 3)
    theta = anchor.clone().requires_grad_(True)
    loss = F.cross_entropy(functional_call(model, layout.to_dict(theta), (x,)), y)
    (grad,) = torch.autograd.grad(loss, theta)
    lr = 0.1
    result = train_on_surface(model, (x, y), Surface(anchor, R), steps=1, lr=lr,
                              optimizer="sgd", momentum=0.0)
    assert torch.allclose(result.coordinates, -lr * R.T @ grad, atol=1e-14)
    assert math.isclose(result.history.train_loss[0], loss.item(), rel_tol=1e-12)


def test_training_stays_on_the_surface_and_leaves_the_model_alone():
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = _blobs()
    anchor = flatten_parameters(model)
    R = _orthonormal(anchor.numel(), 6, 4)
    plane = train_on_surface(model, (x, y), Surface(anchor, R), steps=40, lr=0.05,
                             batch_size=32, seed=0)
    # θ − P lies in span(R): its component orthogonal to the columns of R vanishes
    delta = plane.parameters - anchor
    assert float(delta.norm()) > 1e-3
    assert float((delta - R @ (R.T @ delta)).norm()) < 1e-12 * float(delta.norm()) + 1e-14
    assert torch.allclose(R.T @ delta, plane.coordinates)
    sphere = train_on_surface(model, (x, y), Surface(anchor, R, radius=3.0), steps=40, lr=0.05)
    assert math.isclose(float(sphere.parameters.norm()), 3.0, rel_tol=1e-12)
    assert sphere.history.radius == pytest.approx(3.0, rel=1e-12)
    # on the sphere, θ lies in span{P, R}
    span, _ = torch.linalg.qr(torch.cat([anchor[:, None], R], dim=1))
    resid = sphere.parameters - span @ (span.T @ sphere.parameters)
    assert float(resid.norm()) < 1e-10
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), f"model parameter {n} was modified"
        assert p.grad is None


def test_full_space_learns_and_one_direction_learns_less():
    model = _mlp(seed=1)
    x, y = _blobs(300, seed=1)
    train, held = split_holdout(x, y, 100)
    anchor = flatten_parameters(model)
    full = train_on_surface(model, train, Surface(anchor), steps=150, lr=0.05,
                            eval_data=held, eval_every=10)
    assert full.finite and full.steps_taken == 150
    assert full.final_eval_accuracy >= 0.95
    assert full.history.train_loss[-1] < 0.5 * full.history.train_loss[0]
    assert list(full.history.step) == list(range(0, 151, 10))
    steps = full.history.steps_to_reach(0.9)
    assert steps is not None and 0 < steps <= 150
    assert full.history.accuracy_at(steps) >= 0.9
    line = train_on_surface(model, train, Surface(anchor, _orthonormal(anchor.numel(), 1, 0)),
                            steps=150, lr=0.05, eval_data=held)
    assert line.final_train_loss > full.final_train_loss


def test_minibatches_are_seeded():
    model = _mlp()
    x, y = _blobs()
    anchor = flatten_parameters(model)
    R = _orthonormal(anchor.numel(), 3, 0)
    runs = [train_on_surface(model, (x, y), Surface(anchor, R), steps=10, lr=0.1,
                             batch_size=16, seed=s).coordinates for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_non_finite_loss_stops_training_cleanly():
    model = _mlp(act=nn.ReLU)
    x, y = _blobs(30)
    anchor = flatten_parameters(model) * 1e300  # two layers: logits overflow to ±inf
    result = train_on_surface(model, (x, y), Surface(anchor, _orthonormal(anchor.numel(), 2, 0)),
                              steps=5, lr=0.1)
    assert not result.finite
    assert result.steps_taken == 0
    assert torch.isfinite(result.coordinates).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"lr": 0.0}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"steps": -1}, "steps"),
])
def test_train_rejects_bad_input(kwargs, match):
    model = _mlp()
    x, y = _blobs(20)
    args = {"steps": 1, "lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        train_on_surface(model, (x, y), Surface(flatten_parameters(model)), **args)
    with pytest.raises(ValueError, match="parameters"):
        train_on_surface(model, (x, y), Surface(torch.zeros(3, dtype=torch.float64)),
                         steps=1, lr=0.1)
