"""Model registry: shapes, parameter counts, homogeneity, initialisation statistics, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from goldilocks_zone import models

# (name, in_shape, K, kwargs, bias-free parameter count, homogeneity degree L)
CASES = [
    ("demo", (2,), 3, {}, 2 * 32 + 32 * 32 + 32 * 3, 3),
    ("lenet-300-100", (784,), 10, {}, 266_200, 3),
    ("lenet-300-100", (1, 28, 28), 10, {}, 266_200, 3),
    # 3·6·25 + 6·16·25 + 400·120 + 120·84 + 84·10
    ("lenet-5", (3, 32, 32), 10, {}, 61_770, 5),
    ("lenet-5", (1, 32, 32), 10, {}, 61_470, 5),
    # 28 → 24 → 12 → 8 → 4: 16·4·4 = 256 features
    ("lenet-5", (1, 28, 28), 10, {}, 150 + 2400 + 256 * 120 + 120 * 84 + 840, 5),
    ("small-cnn", (3, 32, 32), 10, {}, 432 + 4608 + 9216 + 512 * 10, 4),
    ("small-cnn", (1, 28, 28), 10, {}, 144 + 4608 + 9216 + 288 * 10, 4),
    ("mlp", (784,), 10, {"widths": (64, 32, 16)}, 784 * 64 + 64 * 32 + 32 * 16 + 16 * 10, 4),
    ("mlp", (2,), 3, {"widths": ()}, 6, 1),
]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_contract():
    assert set(models.names()) >= {"demo", "lenet-300-100", "lenet-5", "small-cnn", "mlp"}


@pytest.mark.parametrize("name,shape,k,kw,count,degree", CASES)
def test_parameter_counts_shapes_and_degree(name, shape, k, kw, count, degree):
    model = models.create(name, shape, k, seed=0, **kw)
    assert _count(model) == count
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, k)
    h = models.homogeneity(model)
    assert h.is_homogeneous and h.degree == degree, h.reason


def test_bias_parameter_count():
    model = models.create("lenet-300-100", (784,), 10, bias=True, seed=0)
    assert _count(model) == 266_200 + 300 + 100 + 10
    assert all(torch.all(m.bias == 0) for m in model if isinstance(m, nn.Linear))
    model = models.create("lenet-5", (3, 32, 32), 10, bias=True, seed=0)
    assert _count(model) == 61_770 + 6 + 16 + 120 + 84 + 10


@pytest.mark.parametrize("name,shape,k,kw,count,degree", CASES)
@pytest.mark.parametrize("activation", ["relu", "leaky-relu", "identity"])
def test_homogeneous_models_scale_as_alpha_to_the_L(name, shape, k, kw, count, degree,
                                                    activation):
    """f(x; αθ) = α^L f(x; θ) numerically, evaluated functionally (model untouched)."""
    model = models.create(name, shape, k, activation=activation, seed=1, **kw).double()
    h = models.homogeneity(model)
    assert h.is_homogeneous and h.degree == degree
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    base = model(x)
    for alpha in (0.3, 2.5):
        scaled = {n: alpha * p for n, p in params.items()}
        out = functional_call(model, scaled, (x,))
        torch.testing.assert_close(out, alpha**degree * base, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation,bias,fragment", [
    ("tanh", False, "Tanh"), ("sigmoid", False, "Sigmoid"), ("relu", True, "bias"),
])
def test_not_homogeneous_and_numerically_so(activation, bias, fragment):
    model = models.create("demo", (2,), 3, activation=activation, bias=bias, seed=0).double()
    if bias:  # zero biases would hide the effect; give them values
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.bias.normal_(generator=torch.Generator().manual_seed(3))
    h = models.homogeneity(model)
    assert not h.is_homogeneous and h.degree is None and fragment in h.reason
    x = torch.randn(16, 2, dtype=torch.float64)
    scaled = {n: 2.0 * p for n, p in model.named_parameters()}
    assert not torch.allclose(functional_call(model, scaled, (x,)), 2.0**3 * model(x))


def test_homogeneity_of_other_structures():
    assert models.homogeneity(nn.Sequential(nn.Linear(3, 4, bias=False), nn.MaxPool1d(1),
                                            nn.Linear(4, 2, bias=False))).degree == 2
    assert not models.homogeneity(nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4)))
    assert not models.homogeneity(nn.Sequential(nn.Linear(3, 4, bias=False), nn.GELU()))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3, bias=False)

        def forward(self, x):
            return self.lin(x) ** 2

    h = models.homogeneity(Custom())
    assert not h.is_homogeneous and "unknown module" in h.reason
    block = Custom()
    block.positive_homogeneity_degree = 2
    assert models.homogeneity(nn.Sequential(block, nn.Linear(3, 1, bias=False))).degree == 3


@pytest.mark.parametrize("init", ["kaiming", "xavier", "kaiming-uniform", "xavier-uniform"])
def test_init_variances(init):
    model = models.create("lenet-300-100", (784,), 10, init=init, seed=0)
    for layer in (m for m in model if isinstance(m, nn.Linear)):
        fan_out, fan_in = layer.weight.shape
        expected = 2.0 / fan_in if init.startswith("kaiming") else 2.0 / (fan_in + fan_out)
        w = layer.weight.double()
        n = w.numel()
        # sample variance has relative std sqrt(2/n) (normal) or sqrt(0.8/n) (uniform)
        assert abs(w.var().item() / expected - 1) < 5 * math.sqrt(2.0 / n)
        assert abs(w.mean().item()) < 5 * math.sqrt(expected / n)
        if init.endswith("uniform"):
            assert w.abs().max().item() <= math.sqrt(3 * expected) * (1 + 1e-6)
    conv = models.create("lenet-5", (3, 32, 32), 10, init=init, seed=0)[3]  # Conv(6, 16, 5)
    fan_in, fan_out = 6 * 25, 16 * 25
    expected = 2.0 / fan_in if init.startswith("kaiming") else 2.0 / (fan_in + fan_out)
    assert abs(conv.weight.double().var().item() / expected - 1) < 5 * math.sqrt(2.0 / 2400)


def test_seeds_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state().clone()
    a = models.create("lenet-5", (1, 28, 28), 10, seed=7)
    b = models.create("lenet-5", (1, 28, 28), 10, seed=7)
    c = models.create("lenet-5", (1, 28, 28), 10, seed=8)
    assert torch.equal(state, torch.get_rng_state())
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    torch.manual_seed(123)
    d = models.create("demo", (2,), 3)
    torch.manual_seed(123)
    e = models.create("demo", (2,), 3)
    assert all(torch.equal(p, q) for p, q in zip(d.parameters(), e.parameters()))


def test_models_are_trainable_plain_modules():
    model = models.create("small-cnn", (3, 16, 16), 4, seed=0, channels=(4, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters())


def test_errors():
    with pytest.raises(ValueError, match="known models: demo"):
        models.create("resnet", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="unknown activation"):
        models.create("demo", (2,), 3, activation="swish")
    with pytest.raises(ValueError, match="unknown init"):
        models.create("demo", (2,), 3, init="orthogonal")
    with pytest.raises(ValueError, match=r"in_shape=\(C, H, W\)"):
        models.create("lenet-5", (784,), 10)
    with pytest.raises(TypeError, match="widths"):
        models.create("mlp", (2,), 3, width=4)
    with pytest.raises(TypeError, match="no options"):
        models.create("demo", (2,), 3, widths=(4,))


def test_seed_gives_same_model_in_float32_and_float64():
    a = models.create("small-cnn", (3, 32, 32), 10, seed=3)
    torch.set_default_dtype(torch.float64)
    try:
        b = models.create("small-cnn", (3, 32, 32), 10, seed=3)
    finally:
        torch.set_default_dtype(torch.float32)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert pb.dtype == torch.float64
        torch.testing.assert_close(pa, pb.float(), rtol=0, atol=0)


def test_example_resnet18_is_a_user_factory(monkeypatch):
    """The diagnosis guide's ResNet-18 (examples/models) loads as ``module:factory``."""
    from pathlib import Path

    import torch

    from goldilocks_zone import models as registry

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    net = registry.create("examples.models.resnet18_cifar:resnet18", (3, 32, 32), 10, seed=0)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
