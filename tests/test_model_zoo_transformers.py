"""The engine on a HuggingFace model: a tiny ``BertForSequenceClassification`` built from a
``BertConfig`` (no download), with eager and sdpa attention, measured on a DataLoader of dict
batches and checked against the dense float64 oracle (reverse-over-reverse autograd, ≤ 1e-10)
and against second differences of the loss, with the model's full state unchanged.

Runs only where the optional ``transformers`` extra is installed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from curvature_oracle import assert_state_equal, dense_hessian_any, model_state
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from goldilocks_zone import random_basis, subspace_curvature

transformers = pytest.importorskip("transformers")

TOL = 1e-10
S, K, L, VOCAB = 8, 3, 7, 50


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def tiny_bert(impl: str):
    """2 layers, 2 heads, hidden 16 (5,891 parameters); dropout 0.1 as in BERT, left in train
    mode as a freshly built model is, so the engine's eval default is exercised."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=K,
        attn_implementation=impl)
    model = transformers.BertForSequenceClassification(config).double()
    assert model.config._attn_implementation == impl and model.training
    return model


class Tokens(Dataset):
    """Tokenized sentences as HuggingFace datasets yield them: one dict per sample."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (S, L), generator=g)
        self.mask = torch.ones(S, L, dtype=torch.long)
        self.mask[::2, 4:] = 0  # padded sentences
        self.labels = torch.arange(S) % K

    def __len__(self):
        return S

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


def loss_at(model, inputs, y, basis, u):
    """Cross-entropy of the (eval) model at theta + basis @ u, forward only."""
    theta = {n: p.detach() for n, p in model.named_parameters()}
    shift = torch.split(basis @ u, [p.numel() for p in theta.values()])
    params = {n: p + s.view(p.shape) for (n, p), s in zip(theta.items(), shift)}
    return F.cross_entropy(functional_call(model, params, kwargs=inputs).logits, y)


@pytest.fixture(scope="module")
def measured():
    data = Tokens()
    inputs = {"input_ids": data.ids, "attention_mask": data.mask}
    out = {}
    for impl in ("eager", "sdpa"):
        model = tiny_bert(impl)
        basis = random_basis(sum(p.numel() for p in model.parameters()), 3, seed=1)
        before = model_state(model)
        res = subspace_curvature(model, DataLoader(data, batch_size=3), basis)
        out[impl] = model, basis, before, res
    return data, inputs, out


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_matches_dense_oracle_and_model_intact(measured, impl):
    data, inputs, out = measured
    model, basis, before, res = out[impl]
    assert_state_equal(before, model_state(model))
    assert model.training and model.config._attn_implementation == impl
    assert res.num_samples == S and res.hessian.shape == (3, 3)
    ref = dense_hessian_any(model, inputs, data.labels, basis)
    assert rel(res.hessian, ref) < TOL


def test_bert_eager_and_sdpa_agree(measured):
    _, _, out = measured
    assert rel(out["sdpa"][3].hessian, out["eager"][3].hessian) < TOL


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_matches_second_differences_of_the_loss(measured, impl):
    """Independent of every autograd Hessian (torch.func.hessian is wrong for LayerNorm in
    torch 2.13): central second differences of the loss along basis columns 0 and 1."""
    data, inputs, out = measured
    model, basis, _, res = out[impl]
    m = copy.deepcopy(model).eval()
    h = 1e-3
    e0, e1 = (torch.eye(3, dtype=torch.float64)[j] * h for j in (0, 1))
    with torch.no_grad():
        f = lambda u: loss_at(m, inputs, data.labels, basis, u)  # noqa: E731
        f0 = f(torch.zeros(3, dtype=torch.float64))
        fd = torch.stack([
            (f(e0) - 2 * f0 + f(-e0)) / h**2,
            (f(e1) - 2 * f0 + f(-e1)) / h**2,
            (f(e0 + e1) - f(e0 - e1) - f(e1 - e0) + f(-e0 - e1)) / (4 * h**2),
        ])
    exact = torch.stack([res.hessian[0, 0], res.hessian[1, 1], res.hessian[0, 1]])
    assert rel(exact, fd) < 1e-6
    assert abs(float(f0) - res.loss) < 1e-12
