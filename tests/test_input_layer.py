"""The input-layer shortcut of the Hessian pass (curvature/input_layer.py): when it is taken,
when it is refused, and that it is exact (dense float64 oracle, and the pass without it)."""

import pytest
import torch
from curvature_oracle import assert_state_equal, dense_hessian_any, model_state
from torch import nn

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.curvature import subspace
from goldilocks_zone.curvature.functional import FunctionalModel
from goldilocks_zone.curvature.input_layer import InputLayer, find_input_layer

TOL = 1e-10


@pytest.fixture(autouse=True)
def generic_pass(monkeypatch):
    """The shortcut belongs to the generic (forward-over-reverse) pass; the plain ReLU MLPs
    used here would otherwise take the fused ReLU-network pass (test_relu_network.py)."""
    monkeypatch.setattr(subspace, "find_relu_network", lambda *a: None)


class Tokens(nn.Module):
    """A Linear applied to every token of (B, T, in) inputs, then mean-pooled."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.proj(x)).mean(dim=1))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.a(torch.relu(self.a(x))))


class Embedded(nn.Module):
    """The first Linear sees a learned offset of the data: its input depends on a parameter."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(12))
        self.a = nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.a(x + self.offset)))


class MyLinear(nn.Linear):
    pass


class ReadsWeight(nn.Module):
    """The first layer's weight is also read directly (a tied decoder written with
    F.linear): one module slot, two uses."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        back = torch.nn.functional.linear(h, self.a.weight.T)  # (B, 12)
        return self.head(torch.tanh(h + back[:, :8]))


def _mlp(bias: bool = True, norm: bool = False) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(12, 9, bias=bias)]
    layers += [nn.BatchNorm1d(9)] if norm else []
    layers += [nn.ReLU(), nn.Linear(9, 7, bias=bias), nn.ReLU(), nn.Linear(7, 4, bias=bias)]
    return nn.Sequential(*layers)


def _data(shape=(3, 4), n=21, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g, dtype=torch.float64),
            torch.randint(0, k, (n,), generator=g))


def _found(model, x, dim, **kw):
    ev = FunctionalModel(model, **kw)
    with ev.mode():
        return find_input_layer(ev, x, dim)


def _without_shortcut(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(subspace, "find_input_layer", lambda *a: None)
        return subspace_curvature(*args, **kwargs)


@pytest.mark.parametrize("case", ["mlp", "bias-free", "batchnorm-train", "frozen-bias",
                                  "tokens", "frozen-first-layer"])
def test_shortcut_is_taken_and_exact(case, monkeypatch):
    torch.manual_seed(0)
    x, y = _data()
    train, layer_name = False, "1"
    if case == "mlp":
        model = _mlp()
    elif case == "bias-free":
        model = _mlp(bias=False)
    elif case == "batchnorm-train":
        model, train = _mlp(norm=True), True
    elif case == "frozen-bias":
        model = _mlp()
        model[1].bias.requires_grad_(False)
    elif case == "tokens":
        model, layer_name = Tokens(), "proj"
        x, y = _data(shape=(5, 12), k=3)
    else:  # frozen first layer: the second Linear sees constants only and is taken instead
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 9),
                              nn.ReLU(), nn.Linear(9, 4))
        model[1].requires_grad_(False)
        layer_name = "3"
    model = model.double()
    before = model_state(model)
    num = sum(p.numel() for p in model.parameters() if p.requires_grad)
    basis = random_basis(num, 6, seed=3)
    layer = _found(model, x, 6, train_mode=train)
    assert layer is not None and layer.module is dict(model.named_modules())[layer_name]
    assert (layer.bias is None) == (case in ("bias-free", "frozen-bias"))
    batch = None if train else 8  # train mode: the batch as given (BatchNorm statistics)
    splits = []
    original = InputLayer.split
    monkeypatch.setattr(InputLayer, "split",
                        lambda self, *a: splits.append(self.weight) or original(self, *a))
    res = subspace_curvature(model, (x, y), basis, batch_size=batch, train_mode=train)
    assert splits == [layer.weight] * (1 if train else 3)  # taken on every chunk
    assert res.method == "input-layer"
    oracle = dense_hessian_any(model, x, y, basis, train=train)
    assert float((res.hessian - oracle).norm() / oracle.norm()) < TOL
    # the same numbers as the pass without the shortcut, for every term, at any scale / T
    kw = dict(scale=1.2, temperature=0.8, train_mode=train, verify_split=True,
              batch_size=batch)
    res = subspace_curvature(model, (x, y), basis, **kw)
    plain = _without_shortcut(monkeypatch, model, (x, y), basis, **kw)
    assert plain.method == "generic"
    for term in ("hessian", "g_term", "h_term"):
        diff = (res.matrix(term) - plain.matrix(term)).norm()
        assert diff <= 1e-12 * plain.matrix(term).norm()
    assert torch.allclose(res.projected_gradient, plain.projected_gradient, rtol=1e-12,
                          atol=1e-15)
    assert res.split_residual < 1e-12 and res.loss == pytest.approx(plain.loss, rel=1e-14)
    assert_state_equal(before, model_state(model))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("case", ["dim-too-large", "tied", "called-twice", "input-depends",
                                  "subclass", "conv-first", "weight-read-elsewhere",
                                  "user-hook"])
def test_shortcut_is_refused_where_it_would_be_wrong_or_slow(case):
    x, _ = _data(shape=(12,))
    dim = 6
    if case == "dim-too-large":
        model, dim = _mlp(), 12
        x, _ = _data()
    elif case == "tied":
        model = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                              nn.Linear(12, 3))
        model[2].weight = model[0].weight
        model[0].weight.requires_grad_(True)
        model[4].requires_grad_(False)
    elif case == "called-twice":
        model = Twice()
        model.head.requires_grad_(False)
    elif case == "input-depends":
        model = Embedded()
        model.head.requires_grad_(False)
    elif case == "subclass":
        model = nn.Sequential(MyLinear(12, 5), nn.ReLU(), MyLinear(5, 3))
    elif case == "weight-read-elsewhere":
        model = ReadsWeight()
        model.head.requires_grad_(False)
    elif case == "user-hook":
        model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
        model[0].register_forward_hook(lambda m, a, out: 2 * out)
    else:
        model = nn.Sequential(nn.Unflatten(1, (1, 3, 4)), nn.Conv2d(1, 2, 2), nn.Flatten(),
                              nn.ReLU(), nn.Linear(12, 3))
    model = model.double()
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    assert _found(model, x, dim) is None
    assert hooks == [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]


@pytest.mark.parametrize("make", [Twice, ReadsWeight])
def test_refused_models_stay_exact(make):
    """Where the shortcut is refused, the plain pass still matches the oracle."""
    x, _ = _data(shape=(12,))
    model = make().double()
    y = torch.randint(0, 3, (x.shape[0],))
    num = sum(p.numel() for p in model.parameters())
    basis = random_basis(num, 5, seed=1)
    res = subspace_curvature(model, (x, y), basis, batch_size=7)
    oracle = dense_hessian_any(model, x, y, basis)
    assert float((res.hessian - oracle).norm() / oracle.norm()) < TOL


def test_hooks_are_removed_when_the_pass_fails():
    model = _mlp().double()
    x, y = _data()
    basis = random_basis(sum(p.numel() for p in model.parameters()), 4, seed=0)
    bad = y.clone()
    bad[-1] = 99  # found on the last chunk only, after the shortcut was installed
    with pytest.raises(ValueError):
        subspace_curvature(model, (x, bad), basis, batch_size=5)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_float32_shortcut_agrees_with_float64():
    model = _mlp().double()
    x, y = _data()
    basis = random_basis(sum(p.numel() for p in model.parameters()), 6, seed=2)
    exact = subspace_curvature(model, (x, y), basis).hessian
    m32 = _mlp().float()
    m32.load_state_dict(model.state_dict())
    res = subspace_curvature(m32, (x.float(), y), basis.float()).hessian
    assert float((res - exact).norm() / exact.norm()) < 1e-5


def test_module_tracking_hooks_see_a_normal_graph():
    """FlopCounterMode tracks modules with backward hooks on their outputs; the replaced
    output must carry a grad_fn, and the shortcut must cost fewer FLOPs than the plain pass."""
    from torch.utils.flop_counter import FlopCounterMode

    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=g)
    basis = random_basis(sum(p.numel() for p in model.parameters()), 8, seed=0)
    with FlopCounterMode(display=False) as fast:
        subspace_curvature(model, (x, y), basis, terms=("hessian",))
    with FlopCounterMode(display=False) as slow:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(subspace, "find_input_layer", lambda *a: None)
            subspace_curvature(model, (x, y), basis, terms=("hessian",))
    assert fast.get_total_flops() < 0.8 * slow.get_total_flops()


def test_in_place_activation_after_the_input_layer():
    """nn.ReLU(inplace=True) right after the shortcut's layer writes into the layer's
    replaced output: it must be a fresh tensor, not the pass' leaf or a view of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 9), nn.ReLU(inplace=True), nn.Linear(9, 7),
                          nn.Tanh(), nn.Linear(7, 4)).double()
    x, y = _data(shape=(12,))
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=2)
    assert _found(model, x, 5) is not None
    res = subspace_curvature(model, (x, y), basis, batch_size=8)
    oracle = dense_hessian_any(model, x, y, basis)
    assert float((res.hessian - oracle).norm() / oracle.norm()) < TOL
