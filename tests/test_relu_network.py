"""The fused pass for feed-forward ReLU networks (curvature/relu_network.py): when it is taken,
when it is refused, and that it is exact (dense float64 oracle, and the generic pass)."""

import pytest
import torch
from curvature_oracle import (
    assert_state_equal,
    dense_subspace_gradient,
    dense_subspace_hessian,
    direct_h_term,
    explicit_g_term,
    model_state,
)
from torch import nn

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.curvature import subspace
from goldilocks_zone.curvature.functional import FunctionalModel
from goldilocks_zone.curvature.relu_network import Conv, Dense, Fixed, Relu, find_relu_network

TOL = 1e-10


def rel(a, b):
    return float((a - b).norm() / b.norm())


def _data(shape=(12,), n=23, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g, dtype=dtype),
            torch.randint(0, k, (n,), generator=g))


def _basis(model, d=6, seed=1):
    return random_basis(sum(p.numel() for p in model.parameters()), d, seed=seed,
                        dtype=next(model.parameters()).dtype)


def _generic(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(subspace, "find_relu_network", lambda *a: None)
        return subspace_curvature(*args, **kwargs)


def _no_second_order_pass(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a ReLU network must not run the forward-over-reverse pass")
    monkeypatch.setattr(subspace, "_chunk_pass", refuse)
    monkeypatch.setattr(subspace, "_forward_pass", refuse)


def _model(case):
    torch.manual_seed(0)
    if case == "bias-free":
        return nn.Sequential(nn.Linear(12, 9, bias=False), nn.ReLU(),
                             nn.Linear(9, 7, bias=False), nn.ReLU(),
                             nn.Linear(7, 4, bias=False)), (12,)
    if case == "bias":
        return nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(),
                             nn.Linear(7, 4)), (12,)
    if case == "flatten-dropout-nested":
        return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 9), nn.ReLU(inplace=True)),
                             nn.Dropout(0.3), nn.Identity(), nn.Linear(9, 8, bias=False),
                             nn.ReLU(), nn.Flatten(), nn.Linear(8, 4)), (3, 4)
    if case == "relu-on-logits":  # a ReLU after the last layer, and doubled ReLUs
        return nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.ReLU(), nn.Linear(9, 4),
                             nn.ReLU()), (12,)
    if case == "one-layer":  # softmax regression: logits linear in θ, H-term exactly 0
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), (2, 6)
    if case == "conv-bias":  # padding, stride, average pooling, Flatten then Linear
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Conv2d(4, 5, 3, stride=2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 4)), (2, 10, 10)
    if case == "conv-bias-free":  # dilation, 'same' padding, rectangular stride and kernel
        return nn.Sequential(nn.Conv2d(2, 3, 3, dilation=2, padding=2, bias=False), nn.ReLU(),
                             nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
                             nn.ReLU(),
                             nn.AvgPool2d(2, stride=1), nn.Conv2d(4, 3, 1, bias=False),
                             nn.Flatten(), nn.Linear(3 * 3 * 6, 4, bias=False)), (2, 7, 8)
    if case == "conv-same-relu-after-pool":  # a ReLU after a pooling, a conv as last layer
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.AvgPool2d(2, padding=1),
                             nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(3, 4, 3, padding="valid"),
                             nn.ReLU(), nn.Conv2d(4, 4, 2, stride=2), nn.Flatten()), (1, 8, 8)
    if case == "conv1d-flatten2":  # Flatten(2) turns a 2-D map into a sequence for Conv1d
        return nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(2),
                             nn.Conv1d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AvgPool1d(2), nn.Flatten(), nn.Linear(16, 4)), (2, 5, 5)
    if case == "maxpool":  # max pooling gathers the tangents at the primal's argmax
        return nn.Sequential(nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), nn.ReLU(),
                             nn.Conv2d(4, 5, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1,
                                                                         padding=1),
                             nn.Flatten(), nn.Linear(5 * 3 * 3, 4)), (2, 8, 8)
    if case == "conv3d":
        return nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.Conv3d(2, 2, 2, padding=1),
                             nn.ReLU(), nn.AvgPool3d(2), nn.Flatten(), nn.Linear(16, 4)
                             ), (1, 4, 4, 4)
    if case in ("lenet-5", "lenet-5-bias", "small-cnn", "small-cnn-bias"):
        from goldilocks_zone.models import create

        shape = (1, 16, 16) if case.startswith("lenet") else (3, 8, 8)
        kw = {} if case.startswith("lenet") else {"channels": (4, 6)}
        return create(case.removesuffix("-bias"), shape, 4, bias=case.endswith("-bias"),
                      seed=0, **kw), shape
    raise KeyError(case)


CONV_CASES = ["conv-bias", "conv-bias-free", "conv-same-relu-after-pool", "conv1d-flatten2",
              "maxpool", "conv3d", "lenet-5", "lenet-5-bias", "small-cnn", "small-cnn-bias"]
CASES = ["bias-free", "bias", "flatten-dropout-nested", "relu-on-logits", "one-layer",
         *CONV_CASES]


@pytest.mark.parametrize("case", CASES)
def test_fused_pass_is_taken_and_matches_the_dense_oracle(case, monkeypatch):
    model, shape = _model(case)
    model = model.double()
    x, y = _data(shape)
    basis = _basis(model)
    before = model_state(model)
    kw = dict(temperature=0.7, scale=1.3)
    with monkeypatch.context() as m:
        _no_second_order_pass(m)
        res = subspace_curvature(model, (x, y), basis, batch_size=8, **kw)
    assert res.method == "fused"
    hess = dense_subspace_hessian(model, x, y, basis, **kw)
    g = explicit_g_term(model, x, y, basis, **kw)
    assert rel(res.hessian, hess) < TOL
    assert rel(res.g_term, g) < TOL
    assert rel(res.projected_gradient, dense_subspace_gradient(model, x, y, basis, **kw)) < TOL
    if case == "one-layer":
        assert float(res.h_term.abs().max()) == 0.0
        assert float(direct_h_term(model, x, y, basis, **kw).abs().max()) < 1e-14
    else:
        assert rel(res.h_term, direct_h_term(model, x, y, basis, **kw)) < TOL
    for term in ("hessian", "g_term", "h_term"):
        assert torch.equal(res.matrix(term), res.matrix(term).T)
    assert_state_equal(before, model_state(model))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("terms", [("hessian",), ("g_term",), ("h_term",)])
def test_fused_and_generic_pass_agree_for_every_term(case, terms, monkeypatch):
    model, shape = _model(case)
    model = model.double()
    x, y = _data(shape, n=40, seed=2)
    basis = _basis(model, d=5, seed=4)
    kw = dict(temperature=1.6, scale=0.8, batch_size=16, terms=terms)
    fused = subspace_curvature(model, (x, y), basis, **kw)
    plain = _generic(monkeypatch, model, (x, y), basis, **kw)
    assert fused.terms == plain.terms == terms
    assert fused.method == "fused" and plain.method != "fused"
    for term in terms:
        diff = (fused.matrix(term) - plain.matrix(term)).norm()
        assert diff <= 1e-12 * plain.matrix(term).norm() + 1e-15  # one-layer: H-term ≈ 0
    assert torch.allclose(fused.projected_gradient, plain.projected_gradient, rtol=1e-12,
                          atol=1e-16)
    assert fused.loss == pytest.approx(plain.loss, rel=1e-14)
    assert fused.accuracy == plain.accuracy


def test_verify_split_uses_the_independent_generic_pass(monkeypatch):
    model, shape = _model("bias")
    model = model.double()
    x, y = _data(shape)
    calls = []
    original = subspace._chunk_pass
    monkeypatch.setattr(subspace, "_chunk_pass",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    res = subspace_curvature(model, (x, y), _basis(model), verify_split=True)
    assert calls and res.split_residual < 1e-12 and res.method != "fused"


def test_float32_fused_pass_matches_float64():
    model, shape = _model("bias")
    m32 = model.float()
    m64 = _model("bias")[0].double()
    x, y = _data(shape, n=200, seed=3)
    basis = _basis(m64, d=8)
    ref = subspace_curvature(m64, (x, y), basis)
    res = subspace_curvature(m32, (x.float(), y), basis.float(), batch_size=64)
    assert res.hessian.dtype == torch.float64
    for term in ("hessian", "g_term", "h_term"):
        assert rel(res.matrix(term), ref.matrix(term)) < 1e-5


def test_recognised_chain():
    model = _model("flatten-dropout-nested")[0].double()
    x, _ = _data((3, 4))
    net = find_relu_network(FunctionalModel(model), x)
    assert net is not None
    assert net.steps == (Fixed("flatten", 0, (1, 2)), Dense("1.0.weight", "1.0.bias", True),
                         Dense("4.weight", None, True), Dense("7.weight", "7.bias", False))
    assert net.layers == net.steps[1:]


def test_recognised_convolutional_chain():
    model = _model("conv1d-flatten2")[0].double()
    x, _ = _data((2, 5, 5))
    net = find_relu_network(FunctionalModel(model), x)
    assert net is not None
    assert net.steps == (
        Conv("0.weight", "0.bias", True, 2, (1, 1), (0, 0), (1, 1)),
        Fixed("flatten", 0, (2, 3)),
        Conv("3.weight", "3.bias", True, 1, (2,), (1,), (1,)),
        Fixed("avg_pool", 1, ((2,), (2,), (0,), False, True)),
        Fixed("flatten", 0, (1, 2)), Dense("7.weight", "7.bias", False))
    model = _model("conv-same-relu-after-pool")[0].double()
    steps = find_relu_network(FunctionalModel(model), _data((1, 8, 8))[0]).steps
    assert steps[0] == Conv("0.weight", "0.bias", False, 2, (1, 1), (1, 1), (1, 1))
    assert steps[2] == Relu()  # after the pooling: a step of its own
    for case in ("lenet-5", "small-cnn-bias"):
        model, shape = _model(case)
        net = find_relu_network(FunctionalModel(model), _data(shape, dtype=torch.float32)[0])
        assert net is not None and all(layer.relu for layer in net.layers[:-1])


@pytest.mark.parametrize("flatten", [nn.Flatten(0), nn.Flatten(-4)])
def test_flatten_of_the_batch_axis_is_refused(flatten):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), flatten).double()
    assert find_relu_network(FunctionalModel(model), _data((2, 6, 6))[0]) is None


def test_lenet5_input_shape_that_does_not_fit_is_refused():
    model = _model("lenet-5")[0].double()  # built for 1×16×16
    assert find_relu_network(FunctionalModel(model), _data((1, 20, 20))[0]) is None
    assert find_relu_network(FunctionalModel(model), _data((1, 16, 16))[0]) is not None


def test_float32_convolutional_pass_matches_float64():
    m64 = _model("conv-bias")[0].double()
    m32 = _model("conv-bias")[0].float()
    x, y = _data((2, 10, 10), n=100, seed=3)
    basis = _basis(m64, d=8)
    ref = subspace_curvature(m64, (x, y), basis)
    res = subspace_curvature(m32, (x.float(), y), basis.float(), batch_size=32)
    for term in ("hessian", "g_term", "h_term"):
        assert rel(res.matrix(term), ref.matrix(term)) < 1e-5


class MyLinear(nn.Linear):
    pass


class Net(nn.Module):  # not an nn.Sequential: a forward the pass cannot see
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _refused(case):
    x, _ = _data()
    kw = {}
    if case == "tanh":
        model = nn.Sequential(nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3))
    elif case == "leaky-relu":
        model = nn.Sequential(nn.Linear(12, 5), nn.LeakyReLU(), nn.Linear(5, 3))
    elif case == "frozen-layer":
        model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
        model[0].bias.requires_grad_(False)
    elif case == "same-layer-twice":
        layer = nn.Linear(12, 12)
        model = nn.Sequential(layer, nn.ReLU(), layer, nn.ReLU(), nn.Linear(12, 3))
    elif case == "tied-weights":
        model = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                              nn.Linear(12, 3))
        model[2].weight = model[0].weight
    elif case == "subclass":
        model = nn.Sequential(MyLinear(12, 5), nn.ReLU(), MyLinear(5, 3))
    elif case == "hook":
        model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
        model[1].register_forward_hook(lambda m, a, out: 2 * out)
    elif case == "leading-relu":
        model = nn.Sequential(nn.ReLU(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    elif case == "not-sequential":
        model = Net()
    elif case == "output-adapter":
        model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
        kw = {"output": lambda out: 2 * out}
    elif case == "unflattened-images":  # Linear over the last axis of (B, 3, 4) inputs
        model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Flatten(),
                              nn.Linear(9, 3))
        x, _ = _data((3, 4))
    elif case in CONV_REFUSED:
        x, _ = _data((2, 6, 6))
        first = {"batch-norm": nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)),
                 "grouped-conv": nn.Conv2d(2, 4, 3, groups=2),
                 "reflect-padding": nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
                 "even-same-padding": nn.Conv2d(2, 4, 2, padding="same"),
                 "conv-transpose": nn.ConvTranspose2d(2, 4, 3),
                 "adaptive-pool": nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(),
                                                nn.AdaptiveAvgPool2d(2)),
                 "lp-pool": nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.LPPool2d(2, 2)),
                 "pool-over-channels": nn.Sequential(nn.Flatten(2), nn.Conv1d(2, 4, 3),
                                                     nn.ReLU(), nn.AvgPool2d(2)),
                 "frozen-conv-bias": nn.Conv2d(2, 4, 3)}[case]
        model = nn.Sequential(first, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
        with torch.no_grad():
            model(x.float())  # materialise the LazyLinear
        if case == "frozen-conv-bias":
            model[0].bias.requires_grad_(False)
    else:
        raise KeyError(case)
    return model.double(), x, kw


CONV_REFUSED = ["batch-norm", "grouped-conv", "reflect-padding", "even-same-padding",
                "conv-transpose", "adaptive-pool", "lp-pool", "pool-over-channels",
                "frozen-conv-bias"]
REFUSED = ["tanh", "leaky-relu", "frozen-layer", "same-layer-twice", "tied-weights",
           "subclass", "hook", "leading-relu", "not-sequential", "output-adapter",
           "unflattened-images", *CONV_REFUSED]


@pytest.mark.parametrize("case", REFUSED)
def test_refused_where_it_would_be_wrong_and_the_generic_pass_stays_exact(case, monkeypatch):
    model, x, kw = _refused(case)
    ev = FunctionalModel(model, **kw)
    assert find_relu_network(ev, x) is None
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(5))
    num = sum(p.numel() for p in model.parameters() if p.requires_grad)
    basis = random_basis(num, 4, seed=2)
    spied = []
    original = subspace._chunk_pass
    monkeypatch.setattr(subspace, "_chunk_pass",
                        lambda *a, **k: spied.append(1) or original(*a, **k))
    res = subspace_curvature(model, (x, y), basis, batch_size=10, **kw)
    assert spied, "the generic pass must run where the fused one is refused"
    assert res.method in ("generic", "input-layer")
    if case in ("frozen-layer", "output-adapter", "frozen-conv-bias"):
        return  # the flat-θ oracle does not model frozen parameters or output adapters
    hess = dense_subspace_hessian(model, x, y, basis)
    assert rel(res.hessian, hess) < TOL


def test_g_term_and_jacobians_use_the_fused_forward(monkeypatch):
    from curvature_oracle import dense_projected_jacobians

    from goldilocks_zone import projected_logit_jacobians, subspace_g_term
    from goldilocks_zone.curvature.relu_network import ReluNetwork

    model, shape = _model("flatten-dropout-nested")
    model = model.double()
    x, y = _data(shape)
    basis = _basis(model, d=4)
    calls = []
    original = ReluNetwork.forward
    monkeypatch.setattr(ReluNetwork, "forward",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    kw = dict(scale=1.1, temperature=0.9)
    g = subspace_g_term(model, (x, y), basis, batch_size=10, **kw)
    assert len(calls) == 3  # 23 samples in chunks of 10
    assert rel(g, explicit_g_term(model, x, y, basis, **kw)) < TOL
    pj = projected_logit_jacobians(model, (x, y), basis, batch_size=10, **kw)
    assert len(calls) == 6
    assert rel(pj.jacobians, dense_projected_jacobians(model, x, basis, **kw)) < TOL


@pytest.mark.parametrize("where", ["input", "model"])
def test_channels_last_models_and_inputs(where, monkeypatch):
    """A channels-last input or model (strided, not contiguous) gives the same numbers."""
    model, shape = _model("small-cnn-bias")  # 3 input channels: channels-last is strided
    model = model.double()
    x, y = _data(shape, n=20)
    basis = _basis(model, d=4)
    ref = subspace_curvature(model, (x, y), basis, batch_size=8)
    if where == "input":
        x = x.to(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.channels_last)
    assert not (x if where == "input" else next(model.parameters())).is_contiguous()
    res = subspace_curvature(model, (x, y), basis, batch_size=8)
    assert res.method == "fused"
    for term in ("hessian", "g_term", "h_term"):
        assert rel(res.matrix(term), ref.matrix(term)) < 1e-12
