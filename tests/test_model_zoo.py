"""The engine on real PyTorch code: a zoo of architectures, output conventions, batch formats
and data containers, each checked against a dense float64 autograd oracle (≤ 1e-10) with the
model's full state compared before and after."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from curvature_oracle import assert_state_equal, dense_hessian_any, model_state
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.curvature.batches import take_samples

TOL = 1e-10
S, K = 8, 3


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def trainable(model, only=True):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not only)


def check(model, data, inputs, y, *, dim=3, train=False, output=None, trainable_only=True,
          oracle_output=None, **kw):
    """Engine vs oracle, and the model untouched."""
    before = model_state(model)
    basis = random_basis(trainable(model, trainable_only), dim, seed=1)
    res = subspace_curvature(model, data, basis, train_mode=train, output=output,
                             trainable_only=trainable_only, **kw)
    after = model_state(model)
    assert_state_equal(before, after)
    extra = {} if oracle_output is None else {"output": oracle_output}
    ref = dense_hessian_any(model, inputs, y, basis, train=train,
                            trainable_only=trainable_only, **extra)
    assert rel(res.hessian, ref) < TOL
    return res


def mlp(d_in=5, k=K):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 6), nn.Tanh(), nn.Linear(6, k)).double()


def xy(d_in=5, n=S):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.arange(n) % K


# ---------------------------------------------------------------------------- models


class SharedModule(nn.Module):
    """``self.b = self.a`` (a module registered twice) and ``dec.weight = emb.weight``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(5, 5, bias=False)
        self.a = nn.Linear(5, 5)
        self.b = self.a
        self.dec = nn.Linear(5, 5)
        self.dec.weight = self.emb.weight
        self.head = nn.Linear(5, K)

    def forward(self, x):
        h = torch.tanh(self.emb(x))
        h = torch.tanh(self.b(torch.tanh(self.a(h))))
        return self.head(torch.tanh(self.dec(h)))


def test_tied_weights_exact_and_model_intact():
    torch.manual_seed(0)
    model = SharedModule().double()
    x, y = xy()
    assert trainable(model) == 25 + 30 + 5 + 18  # unique parameters only
    check(model, (x, y), x, y)
    assert isinstance(model.dec.weight, nn.Parameter) and model.dec.weight is model.emb.weight
    assert model.b is model.a and isinstance(model.a.weight, nn.Parameter)


@dataclass
class FakeModelOutput:  # HuggingFace-style: an object with .logits
    logits: torch.Tensor
    hidden: torch.Tensor


class Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net, self.kind = mlp(), kind

    def forward(self, x):
        z = self.net(x)
        return {"tuple": lambda: (z, z.sum()), "list": lambda: [z.sum(), z],
                "dict": lambda: {"hidden": x, "logits": z},
                "object": lambda: FakeModelOutput(z, x),
                "scores": lambda: {"scores": z}}[self.kind]()


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_output_rule(kind):
    x, y = xy()
    check(Wrapped(kind), (x, y), x, y)


def test_output_callable():
    x, y = xy()
    pick = lambda out: out["scores"]  # noqa: E731
    check(Wrapped("scores"), (x, y), x, y, output=pick, oracle_output=pick)
    # a list whose first tensor is not the logits: the rule picks the scalar, output= fixes it
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        subspace_curvature(Wrapped("list"), (x, y), random_basis(trainable(mlp()), 2))
    check(Wrapped("list"), (x, y), x, y, output=lambda o: o[1], oracle_output=lambda o: o[1])


class Encoder(nn.Module):
    """A small transformer classifier: nn.TransformerEncoderLayer (fast path / sdpa inside)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        self.head = nn.Linear(4, K)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


def test_transformer_encoder_eval_and_train():
    """Eval mode would take the fused inference fast path and train mode the fused sdpa
    kernel, neither of which has forward-mode derivatives: the engine runs attention on the
    exact math kernel, and the result matches reverse-over-reverse autograd."""
    model = Encoder().double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    y = torch.arange(6) % K
    check(model, (x, y), x, y, dim=2)
    check(model, (x, y), x, y, dim=2, train=True)
    assert torch.backends.mha.get_fastpath_enabled()  # the global switch is restored


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.head = nn.Linear(4, 12), nn.Linear(4, K)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.head(F.scaled_dot_product_attention(q, k, v).mean(1))


def test_scaled_dot_product_attention_model():
    model = Attention().double()
    x = torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % K
    check(model, (x, y), x, y, dim=2)


def test_hessian_oracle_agrees_with_finite_differences_on_layernorm():
    """The oracle itself (reverse-over-reverse) against central differences of the gradient,
    on the LayerNorm model."""
    model = Encoder().double().eval()
    x = torch.randn(4, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.arange(4) % K
    basis = random_basis(trainable(model), 2, seed=0)
    ref = dense_hessian_any(model, x, y, basis)
    from goldilocks_zone import loss_gradient

    eps = 1e-5
    fd = []
    for j in range(2):
        theta = {n: p.detach() for n, p in model.named_parameters()}
        shift = {n: v.reshape(p.shape) for (n, p), v in zip(
            theta.items(), torch.split(basis[:, j] * eps, [p.numel() for p in theta.values()]))}
        plus = loss_gradient(model, (x, y), basis=basis,
                             params={n: theta[n] + shift[n] for n in theta})
        minus = loss_gradient(model, (x, y), basis=basis,
                              params={n: theta[n] - shift[n] for n in theta})
        fd.append((plus - minus) / (2 * eps))
    assert rel(torch.stack(fd, 1), ref) < 1e-6


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, K)).double()


def test_batchnorm_eval_and_train_single_batch():
    model = bn_model()
    model[1].running_mean.uniform_(-0.5, 0.5)  # non-trivial running statistics
    x, y = xy()
    check(model, (x, y), x, y)
    # train mode: the batch as given; batch_size does not re-chunk it
    results = [check(model, (x, y), x, y, train=True, batch_size=bs) for bs in (None, 3, 5)]
    for r in results[1:]:
        assert torch.equal(r.hessian, results[0].hessian)


def test_batchnorm_train_per_batch_loss_with_a_loader():
    """Train mode over a loader: the sample-weighted mean of the per-batch Hessians."""
    model = bn_model()
    x, y = xy(n=10)
    loader = DataLoader(TensorDataset(x, y), batch_size=6)  # batches of 6 and 4
    basis = random_basis(trainable(model), 3, seed=1)
    res = subspace_curvature(model, loader, basis, train_mode=True)
    ref = (6 * dense_hessian_any(model, x[:6], y[:6], basis, train=True)
           + 4 * dense_hessian_any(model, x[6:], y[6:], basis, train=True)) / 10
    assert rel(res.hessian, ref) < TOL


def test_frozen_layers():
    model = mlp()
    model[0].requires_grad_(False)
    x, y = xy()
    res = check(model, (x, y), x, y)
    assert res.hessian.shape == (3, 3)
    check(model, (x, y), x, y, trainable_only=False)
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad


# ---------------------------------------------------------------------------- data


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_integer_labels(dtype):
    model = mlp()
    x, y = xy()
    check(model, (x, y.to(dtype)), x, y)


class TokenModel(nn.Module):
    """Called as model(input_ids=..., attention_mask=...) (a dict batch)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(7, 4), nn.Linear(4, K)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.emb(input_ids)) * attention_mask[..., None]
        return {"logits": self.head(h.sum(1) / attention_mask.sum(1, keepdim=True))}


class TokenDataset(Dataset):
    def __init__(self, ids, mask, labels):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


def tokens():
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 7, (S, 5), generator=g)
    mask = torch.ones(S, 5, dtype=torch.float64)
    mask[::2, 3:] = 0
    return ids, mask, torch.arange(S) % K


def test_dict_batches():
    model = TokenModel().double()
    ids, mask, y = tokens()
    inputs = {"input_ids": ids, "attention_mask": mask}
    single = check(model, {**inputs, "labels": y}, inputs, y)
    loader = DataLoader(TokenDataset(ids, mask, y), batch_size=3)
    via_loader = check(model, loader, inputs, y)
    via_dataset = check(model, TokenDataset(ids, mask, y), inputs, y)
    assert rel(via_loader.hessian, single.hessian) < TOL
    assert rel(via_dataset.hessian, single.hessian) < TOL
    x, yy = take_samples(loader, 4)
    assert torch.equal(x["input_ids"], ids[:4]) and torch.equal(yy, y[:4])


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(5, 4), nn.Linear(2, 4)
        self.head = nn.Linear(4, K)

    def forward(self, x1, x2):
        return self.head(torch.tanh(self.a(x1) + self.b(x2)))


def test_tuple_inputs():
    model = TwoInputs().double()
    x1, y = xy()
    x2 = torch.randn(S, 2, dtype=torch.float64)
    check(model, ((x1, x2), y), (x1, x2), y)
    res = check(model, TensorDataset(x1, x2, y), (x1, x2), y)  # TensorDataset: last = targets
    assert res.num_samples == S


def test_dataset_containers():
    from goldilocks_zone.data.dataset import Dataset as OwnDataset

    model = mlp()
    x, y = xy()
    ref = check(model, (x, y), x, y)
    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=3),
                 [(x[:5], y[:5]), (x[5:], y[5:])]):
        r = check(model, data, x, y)
        assert rel(r.hessian, ref.hessian) < TOL and r.num_samples == S
    own = OwnDataset(name="toy", split="train", inputs=x, targets=y, num_classes=K,
                     source="test")
    r = check(model, own, x, y)
    assert math.isclose(r.loss, ref.loss, rel_tol=1e-12)


def test_docs_example_runs(capsys):
    """The runnable example of docs/engine.md's "Your own model" section."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "engine.md").read_text()
    section = text[text.index("## Your own model"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    exec(compile(code, "engine.md", "exec"), {})
    samples, curvature = capsys.readouterr().out.split()
    assert int(samples) == 32 and math.isfinite(float(curvature))
