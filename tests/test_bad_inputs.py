"""Every bad input gets a typed error (ValueError/TypeError) that names the problem, raised
before the first curvature pass: the model is never evaluated on more than the 2-sample
validation probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from goldilocks_zone import (
    hessian_vector_product,
    hutchinson_trace,
    loss_gradient,
    random_basis,
    subspace_curvature,
    subspace_g_term,
)
from goldilocks_zone.curvature.batches import num_samples_of
from goldilocks_zone.curvature.functional import FunctionalModel, UnsupportedModelError

S, K, D_IN = 8, 3, 4


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 5), nn.Tanh(), nn.Linear(5, K)).double()


D = D_IN * 5 + 5 + 5 * K + K
X = torch.randn(S, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
Y = torch.arange(S) % K
BASIS = random_basis(D, 2, seed=0)


def with_nan():
    x = X.clone()
    x[5, 1] = float("nan")
    return x


def with_inf():
    x = X.clone()
    x[6, 0] = float("inf")
    return x


class NoForwardMode(torch.autograd.Function):
    """An operation with a reverse-mode rule and no forward-mode rule (like a fused kernel)."""

    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0].cos()


class FusedAttentionLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return NoForwardMode.apply(self.net(x))


class DictNoLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return {"scores": self.net(x)}


bn = nn.Sequential(nn.Linear(D_IN, 5), nn.BatchNorm1d(5), nn.Linear(5, K)).double()
dropout = nn.Sequential(nn.Linear(D_IN, 5), nn.Dropout(0.3), nn.Linear(5, K)).double()


def one_shot():
    yield X, Y


CASES = {  # name: (call(model), error type, message fragment)
    "float labels": (lambda m: subspace_curvature(m, (X, Y.double()), BASIS), ValueError,
                     "integer class indices"),
    "bool labels": (lambda m: subspace_curvature(m, (X, Y > 0), BASIS), ValueError,
                    "integer class indices"),
    "2-D labels": (lambda m: subspace_curvature(m, (X, Y[:, None]), BASIS), ValueError, "1-D"),
    "labels out of range": (lambda m: subspace_curvature(m, (X, Y + 1), BASIS), ValueError,
                            r"targets must lie in \[0, 3\)"),
    "negative labels": (lambda m: subspace_g_term(m, (X, Y - 1), BASIS), ValueError,
                        r"targets must lie in \[0, 3\)"),
    "output not (batch, classes)": (
        lambda m: subspace_curvature(nn.Sequential(m, nn.Flatten(0)), (X, Y), BASIS),
        ValueError, r"\(batch, classes\)"),
    "NaN inputs": (lambda m: subspace_curvature(m, (with_nan(), Y), BASIS), ValueError, "NaN"),
    "inf inputs": (lambda m: hessian_vector_product(m, (with_inf(), Y), BASIS[:, 0]),
                   ValueError, "inf"),
    "basis with 0 columns": (lambda m: subspace_curvature(m, (X, Y), BASIS[:, :0]), ValueError,
                             "0 columns"),
    "basis with wrong rows": (lambda m: subspace_curvature(m, (X, Y), BASIS[1:]), ValueError,
                              f"model has {D} parameters"),
    "basis of wrong dtype": (lambda m: subspace_curvature(m, (X, Y), BASIS.float()),
                             ValueError, "dtype"),
    "basis on wrong device": (lambda m: subspace_curvature(m, (X, Y), BASIS.to("meta")),
                              ValueError, "meta"),
    "basis not a tensor": (lambda m: subspace_curvature(m, (X, Y), BASIS.numpy()), TypeError,
                           "random_basis"),
    "1-D basis": (lambda m: subspace_curvature(m, (X, Y), BASIS[:, 0]), ValueError, "2-D"),
    "gradient basis with wrong rows": (
        lambda m: loss_gradient(m, (X, Y), basis=BASIS[1:]), ValueError, "rows"),
    "inputs of wrong dtype": (lambda m: subspace_curvature(m, (X.float(), Y), BASIS),
                              ValueError, "inputs have dtype"),
    "sample counts disagree": (lambda m: subspace_curvature(m, (X, Y[:-1]), BASIS),
                               ValueError, "disagree"),
    "dict batch without labels": (lambda m: subspace_curvature(m, [{"x": X}], BASIS),
                                  TypeError, "labels"),
    "batch of an unknown type": (lambda m: subspace_curvature(m, ["abc"], BASIS), TypeError,
                                 "tuple"),
    "a bare tensor as data": (lambda m: subspace_curvature(m, X, BASIS), TypeError, "tuple"),
    "TensorDataset without targets": (
        lambda m: subspace_curvature(m, TensorDataset(X), BASIS), TypeError, "targets"),
    "empty data": (lambda m: subspace_curvature(m, (X[:0], Y[:0]), BASIS), ValueError,
                   "empty"),
    "temperature 0": (lambda m: subspace_curvature(m, (X, Y), BASIS, temperature=0.0),
                      ValueError, "temperature"),
    "params with a wrong name": (
        lambda m: subspace_curvature(m, (X, Y), BASIS, params={"w": X}), ValueError,
        "parameter names"),
    "1-sample train-mode batch": (
        lambda m: subspace_curvature(bn, [(X[:1], Y[:1])], random_basis(53, 2),
                                     train_mode=True), ValueError, "1 sample"),
    "dropout in train mode": (
        lambda m: subspace_curvature(dropout, (X, Y), BASIS, train_mode=True), ValueError,
        "dropout"),
    "output without logits": (lambda m: subspace_curvature(DictNoLogits(), (X, Y), BASIS),
                              TypeError, "output="),
    "no forward-mode derivative": (
        lambda m: subspace_curvature(FusedAttentionLike(), (X, Y), BASIS),
        UnsupportedModelError, "attn_implementation='eager'"),
    "one-shot iterator for a multi-pass estimator": (
        lambda m: hutchinson_trace(m, one_shot(), num_probes=2), TypeError, "one-shot"),
    "vectors of wrong length": (
        lambda m: hessian_vector_product(m, (X, Y), torch.ones(D + 1)), ValueError,
        f"D = {D}"),
    "unknown estimator option": (
        lambda m: hutchinson_trace(m, (X, Y), num_probes=2, tempreature=2.0), TypeError,
        "tempreature"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_before_the_heavy_pass(name, monkeypatch):
    call, error, fragment = CASES[name]
    heavy = []  # evaluations on more than the 2-sample probe
    original = FunctionalModel.raw

    def counting(self, params, inputs):
        if num_samples_of(inputs) > 2:
            heavy.append(num_samples_of(inputs))
        return original(self, params, inputs)

    monkeypatch.setattr(FunctionalModel, "raw", counting)
    with pytest.raises(error, match=fragment) as info:
        call(mlp())
    assert issubclass(info.type, (ValueError, TypeError))
    assert heavy == [], f"the model was evaluated on a full chunk before the error: {heavy}"


def test_untouched_after_refusal():
    model = bn.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        subspace_curvature(model, [(X[:4], Y[:4]), (X[:1], Y[:1])], random_basis(53, 2),
                           train_mode=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model[1].track_running_stats
