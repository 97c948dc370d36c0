r"""An exact fused pass for feed-forward ReLU networks: the Gauss-Newton split written out.

For an ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers (``Flatten``, ``Identity`` and
dropout, the identity in eval mode, may sit between them) the layers are
:math:`z_l = W_l x_{l-1} + b_l`, :math:`x_l = \mathrm{relu}(z_l)` (or :math:`x_l = z_l`
without a ReLU) and the logits are :math:`z = x_L / T`. ReLU is piecewise linear, so its
second derivative vanishes wherever it is differentiable (autograd's convention too), and the
second derivative of the loss along two basis columns :math:`r_u, r_v` has exactly two parts:

.. math::
   r_u^\top \nabla^2 L\, r_v =
   \underbrace{(\dot z^u)^\top (\mathrm{diag}\,p - p p^\top)\, \dot z^v}_{\text{G-term}}
   + \underbrace{\sum_l g_l^\top \big(V_l^u \dot x_{l-1}^v + V_l^v \dot x_{l-1}^u\big)}
     _{\text{H-term}},

where :math:`V_l^u` is the weight block of :math:`r_u`, :math:`\dot x_{l-1}^v` the forward
tangent of layer l's input along :math:`r_v`, :math:`\dot z^u` the logit tangent and
:math:`g_l = \partial \ell / \partial z_l` the back-propagated residual :math:`(p - y)/T`
(one vector per sample, not per direction). The H-term is the curvature of the logits
(:math:`\sum_k (p - y)_k \nabla^2 z_k`, SCIENCE.md §1): for a ReLU network it is the bilinear
coupling of each weight with its layer's input, nothing else.

So no second-order (forward-over-reverse) pass is needed. Per chunk of B samples:

- forward tangents of all d columns, one batched product per layer
  ``(d, B, in) @ (d, in, out)`` for :math:`V_l x_{l-1}` plus one ``(d·B, in) @ (in, out)``
  for :math:`W_l \dot x_{l-1}` added in place, and the ReLU mask applied in place;
- the G-term from the logit tangents (as the generic pass);
- for each layer whose input has a tangent: :math:`E_l^v = \sum_s g_{l,s} (\dot x_{l-1,s}^v)^\top`
  (d, out, in) by one batched product, and :math:`C_l = V_l E_l^\top` (d × d) by one matrix
  product; the H-term is :math:`\sum_l C_l + C_l^\top`.

No parameter-shaped gradient tangents, no element-wise fills or sums from autograd's formulas:
on LeNet-300-100 the pass performs about three quarters of the FLOPs of the generic pass,
nearly all of them in large matrix products. It is exact — the same numbers as the generic
pass up to round-off, checked against the dense float64 oracle in the tests.

Used when the model is exactly such a chain (plain ``nn.Sequential`` / ``nn.Linear`` /
``nn.ReLU`` types, no hooks on any module, every weight and bias differentiated and held by
one layer only, no ``output=`` adapter) and the inputs are a tensor; anything else takes the
generic pass. Global module hooks (``register_module_forward_hook``) are not called by it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from goldilocks_zone.curvature.functional import FunctionalModel, Inputs, Params

__all__ = ["ReluNetwork", "find_relu_network"]

#: Modules that are the identity on the engine's (B, features) tensors: dropout is the identity
#: in eval mode, and in train mode the engine refuses dropout with p > 0 before any pass.
_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
             nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass(frozen=True)
class Dense:
    """One ``Linear`` layer of the chain, by parameter name, and whether a ReLU follows it."""

    weight: str
    bias: str | None
    relu: bool


@dataclass(frozen=True)
class ReluNetwork:
    """A feed-forward ReLU network: ``flatten`` the input if the chain starts with
    ``nn.Flatten``, then the :class:`Dense` layers in order."""

    layers: tuple[Dense, ...]
    flatten: bool

    def forward(self, ev: FunctionalModel, x: Tensor, directions: Params, keep: bool):
        r"""Logits (B, K), logit tangents (d, B, K) along the d columns of ``directions``
        (name → (d, *shape)), and — when ``keep`` — what :meth:`h_term` needs (each layer's
        output mask and input tangent; the weights are ``ev.params``)."""
        h = x.reshape(x.shape[0], -1) if self.flatten else x
        tangent: Tensor | None = None  # (d, B, width) tangent of the current activation
        saved = []
        for layer in self.layers:
            w, v = ev.params[layer.weight], directions[layer.weight]  # (out, in), (d, out, in)
            d, out, width = v.shape
            z = torch.nn.functional.linear(h, w, ev.params[layer.bias] if layer.bias else None)
            pushed = h.expand(d, *h.shape)
            if layer.bias:  # V_l x + v_b: the bias direction broadcast over the samples
                z_t = torch.baddbmm(directions[layer.bias][:, None, :], pushed,
                                    v.transpose(1, 2))
            else:
                z_t = torch.bmm(pushed, v.transpose(1, 2))
            if tangent is not None:  # + W_l x'_{l-1}, accumulated in place
                z_t.view(-1, out).addmm_(tangent.reshape(-1, width), w.T)
            mask = None
            if layer.relu:
                mask = z > 0
                z = torch.relu(z)
                z_t.mul_(mask)
            if keep:
                saved.append((mask, tangent))
            h, tangent = z, z_t
        t = ev.temperature
        return h / t, tangent / t, saved

    def h_term(self, ev: FunctionalModel, directions: Params, saved, residual: Tensor
               ) -> Tensor:
        r"""The chunk's summed H-term (d, d) float64 from :meth:`forward`'s ``saved`` and the
        residual :math:`p - y` (B, K) of the logits: :math:`\sum_l C_l + C_l^\top` with
        :math:`C_l[u, v] = \langle V_l^u, \sum_s g_{l,s} (\dot x^v_{l-1,s})^\top\rangle`."""
        g = residual / ev.temperature  # ∂ℓ/∂x_L
        total = None
        for layer, (mask, tangent) in zip(reversed(self.layers), reversed(saved)):
            if mask is not None:
                g = g * mask  # ∂ℓ/∂z_l
            if tangent is not None:  # the layer's input depends on the parameters
                v = directions[layer.weight]
                d = v.shape[0]
                e = torch.matmul(g.T, tangent)  # (out, B) @ (d, B, in) -> (d, out, in)
                c = (v.reshape(d, -1) @ e.reshape(d, -1).T).to(torch.float64)
                total = c if total is None else total + c
                g = g @ ev.params[layer.weight]  # ∂ℓ/∂x_{l-1}
        if total is None:  # one layer: the logits are linear in the parameters
            d = next(iter(directions.values())).shape[0]
            return residual.new_zeros(d, d, dtype=torch.float64)
        return total + total.T


def _chain(module: nn.Module) -> list[nn.Module] | None:
    """The leaf modules of a (nested) plain ``nn.Sequential`` in call order, or None."""
    if type(module) is not nn.Sequential:
        return None
    out = []
    for m in module:
        if type(m) is nn.Sequential:
            inner = _chain(m)
            if inner is None:
                return None
            out += inner
        else:
            out.append(m)
    return out


def find_relu_network(ev: FunctionalModel, x: Inputs) -> ReluNetwork | None:
    """The model as a :class:`ReluNetwork` when the fused pass is exact for it and these
    inputs (see the module docstring), else None."""
    if ev.output is not None or not isinstance(x, Tensor) or x.ndim < 2:
        return None
    modules = _chain(ev.model)
    if not modules or any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                          or m._backward_pre_hooks for m in ev.model.modules()):
        return None
    names = {id(m): n for n, m in ev.model.named_modules()}
    slots = Counter(name for _, name in ev._param_slots)
    canonical = {id(p): n for n, p in ev.model.named_parameters()}
    layers: list[Dense] = []
    flatten = False
    for m in modules:
        if type(m) is nn.Linear:
            params = [p for p in (m.weight, m.bias) if p is not None]
            if not all(canonical[id(p)] in ev.params and slots[canonical[id(p)]] == 1
                       for p in params):
                return None  # a frozen or shared parameter: the generic pass
            prefix = names[id(m)]
            layers.append(Dense(f"{prefix}.weight",
                                f"{prefix}.bias" if m.bias is not None else None, False))
        elif type(m) is nn.ReLU:
            if not layers:
                return None  # a ReLU of the data itself
            layers[-1] = Dense(layers[-1].weight, layers[-1].bias, True)
        elif type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1:
            flatten = flatten or not layers  # on (B, features) it is the identity
        elif not isinstance(m, _IDENTITY):
            return None
    if not layers or len(ev.params) != sum(1 + (d.bias is not None) for d in layers):
        return None
    in_features = ev.params[layers[0].weight].shape[1]
    width = x[0].numel() if flatten else x.shape[-1]
    if (x.ndim > 2 and not flatten) or width != in_features:
        return None
    return ReluNetwork(tuple(layers), flatten)
