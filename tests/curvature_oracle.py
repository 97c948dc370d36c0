"""Dense float64 plain-autograd references for the curvature core, and the small models the
fast paths are checked on (the shared list of problem settings)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def as_dict(model: nn.Module, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = vector[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return out


def _logits(model, theta, x, temperature):
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return functional_call(model, as_dict(model, theta), (x,)) / temperature
    finally:
        for m, t in was:
            m.training = t


def dense_subspace_hessian(model, x, y, basis, *, scale=1.0, temperature=1.0):
    """Hessian of u -> L(scale*theta + R u) by torch.autograd.functional.hessian."""
    theta = flat_params(model) * scale

    def loss(u):
        return F.cross_entropy(_logits(model, theta + basis @ u, x, temperature), y)

    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype)
    return torch.autograd.functional.hessian(loss, u0)


def dense_subspace_gradient(model, x, y, basis, *, scale=1.0, temperature=1.0):
    theta = flat_params(model) * scale
    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype, requires_grad=True)
    loss = F.cross_entropy(_logits(model, theta + basis @ u0, x, temperature), y)
    return torch.autograd.grad(loss, u0)[0]


def finite_difference_hessian(model, x, y, basis, *, scale=1.0, temperature=1.0, eps=1e-5):
    """Central differences of the autograd gradient in u (an independent check of the oracle)."""
    theta = flat_params(model) * scale
    d = basis.shape[1]

    def grad(u):
        u = u.clone().requires_grad_(True)
        loss = F.cross_entropy(_logits(model, theta + basis @ u, x, temperature), y)
        return torch.autograd.grad(loss, u)[0]

    cols = []
    for j in range(d):
        e = torch.zeros(d, dtype=basis.dtype)
        e[j] = eps
        cols.append((grad(e) - grad(-e)) / (2 * eps))
    return torch.stack(cols, 1)


def dense_projected_jacobians(model, x, basis, *, scale=1.0, temperature=1.0):
    """(S, K, d) = J_s R / T from torch.autograd.functional.jacobian (plain autograd)."""
    theta = flat_params(model) * scale
    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype)
    jac = torch.autograd.functional.jacobian(
        lambda u: _logits(model, theta + basis @ u, x, temperature), u0)
    return jac  # (S, K, d)


def explicit_g_term(model, x, y, basis, *, scale=1.0, temperature=1.0):
    """(1/S) sum_s (J_s R/T)^T (diag p_s - p_s p_s^T) (J_s R/T) from per-sample Jacobians."""
    jac = dense_projected_jacobians(model, x, basis, scale=scale, temperature=temperature)
    theta = flat_params(model) * scale
    p = torch.softmax(_logits(model, theta, x, temperature), -1)
    m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ski,skl,slj->ij", jac, m, jac) / x.shape[0]


def direct_h_term(model, x, y, basis, *, scale=1.0, temperature=1.0):
    """Hessian in u of (1/S) sum_s stopgrad(p_s - y_s) . z_s(u)."""
    theta = flat_params(model) * scale
    with torch.no_grad():
        p = torch.softmax(_logits(model, theta, x, temperature), -1)
        c = (p - F.one_hot(y, p.shape[1]).to(p.dtype)) / x.shape[0]

    def phi(u):
        return (c * _logits(model, theta + basis @ u, x, temperature)).sum()

    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype)
    return torch.autograd.functional.hessian(phi, u0)


def dense_full_hessian(model, x, y, *, scale=1.0, temperature=1.0):
    theta = flat_params(model) * scale
    return torch.autograd.functional.hessian(
        lambda t: F.cross_entropy(_logits(model, t, x, temperature), y), theta)


# ------------------------------------------------------------------ the shared problem list


class SmallCNN(nn.Module):
    """Conv -> ReLU -> AvgPool -> Conv -> ReLU -> AvgPool -> Linear, with biases."""

    def __init__(self, classes=4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(3, 4, 2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(4, classes))

    def forward(self, x):
        return self.body(x)


def make_case(name: str, seed: int = 0):
    """(model, inputs, targets) in float64 for a named small setting."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "relu-mlp":  # bias-free, homogeneous of degree 3
        model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 7, bias=False),
                              nn.ReLU(), nn.Linear(7, 4, bias=False))
        x = torch.randn(23, 6, generator=g)
    elif name == "tanh-mlp-bias":
        model = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 3))
        x = torch.randn(19, 5, generator=g)
    elif name == "cnn-avgpool":
        model = SmallCNN(classes=4)
        x = torch.randn(13, 1, 10, 10, generator=g)
    elif name == "layernorm-mlp":
        model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3))
        x = torch.randn(17, 5, generator=g)
    else:
        raise KeyError(name)
    model = model.double()
    with torch.no_grad():
        k = model(x[:1].double()).shape[1]
    y = torch.randint(0, k, (x.shape[0],), generator=g)
    return model, x.double(), y


CASES = ["relu-mlp", "tanh-mlp-bias", "cnn-avgpool", "layernorm-mlp"]


# ------------------------------------------------- any model: tied weights, outputs, inputs


def model_state(model: nn.Module):
    """Everything a call must leave unchanged: values of the state_dict, parameter objects
    and types, requires_grad flags, train/eval flags and BatchNorm tracking flags."""
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    params = [(name, id(p), type(p), p.requires_grad)
              for name, p in model.named_parameters(remove_duplicate=False)]
    flags = [(name, m.training, getattr(m, "track_running_stats", None))
             for name, m in model.named_modules(remove_duplicate=False)]
    return state, params, flags


def assert_state_equal(before, after) -> None:
    assert before[0].keys() == after[0].keys()
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), f"{k} changed"
    assert before[1] == after[1]
    assert before[2] == after[2]


def _call(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def plain_logits(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out["logits"]
    if hasattr(out, "logits"):
        return out.logits
    return out[0]


def dense_hessian_any(model, inputs, y, basis, *, train=False, trainable_only=True,
                      output=plain_logits):
    """Hessian of u -> CE(model at theta + R u) by plain reverse-over-reverse autograd on a
    deep copy whose parameters are replaced by plain tensors in every slot that holds them
    (independent of torch.func.functional_call)."""
    import copy

    from torch.nn.attention import SDPBackend, sdpa_kernel

    m = copy.deepcopy(model).train(train)
    unique = [(n, p) for n, p in m.named_parameters() if p.requires_grad or not trainable_only]
    slots: dict[int, list] = {id(p): [] for _, p in unique}
    for mod in m.modules():
        for attr, p in list(mod._parameters.items()):
            if p is not None and id(p) in slots:
                slots[id(p)].append((mod, attr))
    theta = torch.cat([p.detach().reshape(-1) for _, p in unique])
    keys = [id(p) for _, p in unique]
    shapes = [p.shape for _, p in unique]

    def loss(u):
        vec = theta + basis @ u
        offset = 0
        for key, shape in zip(keys, shapes):
            n = shape.numel()
            t = vec[offset:offset + n].view(shape)
            offset += n
            for mod, attr in slots[key]:
                mod._parameters.pop(attr, None)
                setattr(mod, attr, t)
        return F.cross_entropy(output(_call(m, inputs)), y.long())

    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype)
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(loss, u0)
