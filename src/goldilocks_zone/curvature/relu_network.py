r"""An exact fused pass for feed-forward piecewise-linear networks: the Gauss-Newton split
written out.

For an ``nn.Sequential`` of affine layers (``Linear``, ``Conv1d``/``Conv2d``/``Conv3d``),
``ReLU`` and fixed maps that act on each sample alone (``AvgPool``, ``MaxPool``, ``Flatten``;
``Identity`` and dropout, the identity in eval mode, may sit anywhere) the layers are
:math:`z_l = W_l \star x_{l-1} + b_l` — :math:`\star` the matrix product or the convolution,
bilinear in :math:`(W_l, x_{l-1})` — followed by ReLUs and fixed maps :math:`x_l = P_l(z_l)`,
and the logits are :math:`z = x_L / T`. ReLU and max pooling are piecewise linear and average
pooling and flattening linear, so their second derivatives vanish wherever they are
differentiable (autograd's convention too), and the second derivative of the loss along two
basis columns :math:`r_u, r_v` has exactly two parts:

.. math::
   r_u^\top \nabla^2 L\, r_v =
   \underbrace{(\dot z^u)^\top (\mathrm{diag}\,p - p p^\top)\, \dot z^v}_{\text{G-term}}
   + \underbrace{\sum_l \big\langle g_l,\, V_l^u \star \dot x_{l-1}^v
     + V_l^v \star \dot x_{l-1}^u\big\rangle}_{\text{H-term}},

where :math:`V_l^u` is the weight block of :math:`r_u`, :math:`\dot x_{l-1}^v` the forward
tangent of layer l's input along :math:`r_v`, :math:`\dot z^u` the logit tangent and
:math:`g_l = \partial \ell / \partial z_l` the back-propagated residual :math:`(p - y)/T`
(one tensor per sample, not per direction): through an affine layer by the transposed map
(:math:`W_l^\top g_l`, or the convolution's input gradient), through a ReLU by its mask and
through a fixed map by its vector-Jacobian product at the primal input. The H-term is the
curvature of the logits (:math:`\sum_k (p - y)_k \nabla^2 z_k`, SCIENCE.md §1): for such a
network it is the bilinear coupling of each weight with its layer's input, nothing else.

So no second-order (forward-over-reverse) pass is needed. Per chunk of B samples:

- forward tangents of all d columns, :math:`\dot z_l^u = V_l^u \star x_{l-1} + v_{b,l}^u +
  W_l \star \dot x_{l-1}^u`. For a ``Linear`` layer one batched product
  ``(d, B, in) @ (d, in, out)`` for :math:`V_l x_{l-1}` plus one ``(d·B, in) @ (in, out)``
  for :math:`W_l \dot x_{l-1}` added in place; for a convolution one convolution of
  :math:`x_{l-1}` with the d weight blocks stacked as d·out output channels (the bias
  directions are its bias) plus one convolution of the d·B input tangents with :math:`W_l`.
  The ReLU mask is applied in place and a fixed map to the d·B tangents at once (max
  pooling gathers them at the primal's argmax);
- the G-term from the logit tangents (as the generic pass);
- for each layer whose input has a tangent: :math:`E_l^v = \partial \langle g_l, W \star
  \dot x^v_{l-1}\rangle / \partial W` — :math:`\sum_s g_{l,s} (\dot x_{l-1,s}^v)^\top` (d, out,
  in) by one batched product, or for a convolution one weight gradient whose input is the
  tangents with the d directions stacked as channels, :math:`(B, d\cdot C, \dots)`, which
  gives all d blocks :math:`E_l^v` (out, C, k…) at once — and :math:`C_l[u, v] = \langle
  V_l^u, E_l^v\rangle` (d × d) by one matrix product; the H-term is
  :math:`\sum_l C_l + C_l^\top`.

Tangents in the convolutional part are held batch-major, (B, d, C, …), the memory layout of
both the stacked-channel convolutions (B, d·C, …) and the d·B-sample ones (B·d, C, …); the
``Linear`` part holds them direction-major, (d, B, features), as its batched products want.
One transposition at the change (after the ``Flatten``) is the only copy.

No parameter-shaped gradient tangents, no element-wise fills or sums from autograd's formulas:
on LeNet-300-100 the pass performs about three quarters of the FLOPs of the generic pass,
nearly all of them in large matrix products. On LeNet-5 (1×28×28 inputs, d = 50, float64,
500 samples in chunks of 250, a 2-core CPU) the whole call takes about 2.7 s against 12 s
for the generic pass, nearly all of it in the three convolutions of the second layer
(:math:`V \star x`, :math:`W \star \dot x`, and the weight gradient for :math:`E`). It is
exact — the same numbers as the generic pass up to round-off, checked against the dense
float64 oracle in the tests.

Used when the model is exactly such a chain (plain ``nn.Sequential`` / ``nn.Linear`` /
``nn.Conv1d`` … / ``nn.ReLU`` / ``nn.AvgPool2d`` … types, no hooks on any module, every weight
and bias differentiated and held by one layer only, convolutions with ``groups=1`` and zero
padding, pooling on batched inputs, no ``output=`` adapter) and the inputs are a tensor;
anything else (e.g. ``BatchNorm``, grouped convolutions, a ReLU of the data) takes the generic
pass. Global module hooks (``register_module_forward_hook``) are not called by it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vjp
from torch.nn import grad as conv_grad

from goldilocks_zone.curvature.functional import DROPOUT_LAYERS, FunctionalModel, Inputs, Params

__all__ = ["Conv", "Dense", "Fixed", "Relu", "ReluNetwork", "find_relu_network"]

#: Modules that are the identity on the engine's tensors: dropout is the identity in eval
#: mode, and in train mode the engine refuses dropout with p > 0 before any pass.
_IDENTITY = (nn.Identity, *DROPOUT_LAYERS)

_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_WEIGHT = {1: conv_grad.conv1d_weight, 2: conv_grad.conv2d_weight,
                3: conv_grad.conv3d_weight}
_CONV_INPUT = {1: conv_grad.conv1d_input, 2: conv_grad.conv2d_input,
               3: conv_grad.conv3d_input}
_AVG_POOL = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
_MAX_POOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}


@dataclass(frozen=True)
class Dense:
    """One ``Linear`` layer of the chain, by parameter name, and whether a ReLU follows it."""

    weight: str
    bias: str | None
    relu: bool


@dataclass(frozen=True)
class Conv:
    """One convolution (``dim`` = 1, 2 or 3 spatial axes, ``groups=1``, zero padding given
    per axis), by parameter name, and whether a ReLU follows it."""

    weight: str
    bias: str | None
    relu: bool
    dim: int
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    def __call__(self, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return _CONV_FN[self.dim](x, w, b, self.stride, self.padding, self.dilation)


@dataclass(frozen=True)
class Relu:
    """A ReLU that does not directly follow an affine layer (e.g. after a pooling)."""


@dataclass(frozen=True)
class Fixed:
    """A fixed map of each sample: ``kind`` = ``"flatten"`` (``args`` = start, end axis of
    the batched tensor, start ≥ 1), ``"avg_pool"`` or ``"max_pool"`` (``args`` = the
    functional's arguments after the input), over ``dim`` spatial axes."""

    kind: str
    dim: int
    args: tuple

    def __call__(self, x: Tensor) -> Tensor:
        """The map of a batch (N, …), for max pooling with the argmax indices."""
        if self.kind == "flatten":
            return x.flatten(*self.args)
        if self.kind == "avg_pool":
            return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[self.dim - 1](x, *self.args)
        fn = (F.max_pool1d_with_indices, F.max_pool2d_with_indices,
              F.max_pool3d_with_indices)[self.dim - 1]
        return fn(x, *self.args, return_indices=True)

    def primal(self, x: Tensor) -> Tensor:
        return self(x)[0] if self.kind == "max_pool" else self(x)

    def tangent(self, t: Tensor, batch_major: bool, indices: Tensor | None) -> Tensor:
        """The map applied to tangents (B, d, …) (``batch_major``) or (d, B, …); max
        pooling gathers each tangent at the primal's argmax ``indices``."""
        a, b = t.shape[:2]
        if self.kind != "max_pool":
            out = self(t.reshape(a * b, *t.shape[2:]))
            return out.view(a, b, *out.shape[1:])
        k = self.dim
        flat = indices.flatten(-k).unsqueeze(1 if batch_major else 0)
        flat = flat.expand(a, b, *flat.shape[2:])
        return t.flatten(-k).gather(-1, flat).view(a, b, *indices.shape[1:])


Step = Dense | Conv | Relu | Fixed


def _layout(t: Tensor, batch_major: bool, want: bool) -> Tensor:
    """Tangents (B, d, …) ↔ (d, B, …), copied only when the layout changes."""
    return t if batch_major == want else t.transpose(0, 1).contiguous()


@dataclass(frozen=True)
class ReluNetwork:
    """A feed-forward piecewise-linear network: the :class:`Dense`, :class:`Conv`,
    :class:`Relu` and :class:`Fixed` steps in call order."""

    steps: tuple[Step, ...]

    @property
    def layers(self) -> tuple[Dense | Conv, ...]:
        """The affine layers, in order."""
        return tuple(s for s in self.steps if isinstance(s, (Dense, Conv)))

    def forward(self, ev: FunctionalModel, x: Tensor, directions: Params, keep: bool):
        r"""Logits (B, K), logit tangents (d, B, K) along the d columns of ``directions``
        (name → (d, *shape)), and — when ``keep`` — what :meth:`h_term` needs (per step: a
        layer's input tangent and shape, a ReLU mask, a fixed map's pullback; the weights are
        ``ev.params``)."""
        h = x
        tangent: Tensor | None = None  # the current activation's tangents, (d, B, …) or
        batch_major = False  # (B, d, …) when batch_major
        saved = []
        for step in self.steps:
            if isinstance(step, Dense):
                w, v = ev.params[step.weight], directions[step.weight]  # (out, in), (d, out, in)
                d, out, width = v.shape
                if tangent is not None:
                    tangent = _layout(tangent, batch_major, False)
                    batch_major = False
                z = F.linear(h, w, ev.params[step.bias] if step.bias else None)
                pushed = h.expand(d, *h.shape)
                if step.bias:  # V_l x + v_b: the bias direction broadcast over the samples
                    z_t = torch.baddbmm(directions[step.bias][:, None, :], pushed,
                                        v.transpose(1, 2))
                else:
                    z_t = torch.bmm(pushed, v.transpose(1, 2))
                if tangent is not None:  # + W_l x'_{l-1}, accumulated in place
                    z_t.view(-1, out).addmm_(tangent.reshape(-1, width), w.T)
                mask = None
                if step.relu:
                    mask = z > 0
                    z = torch.relu(z)
                    z_t.mul_(mask)
                if keep:
                    saved.append((mask, tangent))
                h, tangent = z, z_t
            elif isinstance(step, Conv):
                # (O, C, k…), (d, O, C, k…); contiguous, so that a channels-last model or input
                # gives the memory layout the views below assume
                w, v = ev.params[step.weight].contiguous(), directions[step.weight]
                h = h.contiguous()
                d, out = v.shape[:2]
                if tangent is not None:
                    tangent = _layout(tangent, batch_major, True)
                batch_major = True
                z = step(h, w, ev.params[step.bias] if step.bias else None)
                # V_l * x + v_b for all d blocks at once: the blocks as d·O output channels
                z_t = step(h, v.reshape(d * out, *v.shape[2:]),
                           directions[step.bias].reshape(-1) if step.bias else None)
                b = h.shape[0]
                z_t = z_t.contiguous().view(b, d, out, *z_t.shape[2:])
                if tangent is not None:  # + W_l * x'_{l-1}, the d·B tangents as one batch
                    z_t.view(b * d, *z_t.shape[2:]).add_(
                        step(tangent.view(b * d, *tangent.shape[2:]), w))
                mask = None
                if step.relu:
                    mask = z > 0
                    z = torch.relu(z)
                    z_t.mul_(mask[:, None])
                if keep:
                    saved.append((mask, tangent, h.shape))
                h, tangent = z, z_t
            elif isinstance(step, Relu):
                mask = h > 0
                h = torch.relu(h)
                tangent.mul_(mask[:, None] if batch_major else mask)
                if keep:
                    saved.append(mask)
            else:
                # the pullback only where the residual goes on to a layer with parameters
                # (max pooling returns its argmax indices beside the values: an aux output)
                pooled = step.kind == "max_pool"
                pull = indices = None
                if keep and tangent is not None:
                    z, pull, *aux = vjp(step, h, has_aux=pooled)
                    indices = aux[0] if pooled else None
                else:
                    z = step(h)
                    z, indices = z if pooled else (z, None)
                if tangent is not None:
                    tangent = step.tangent(tangent, batch_major, indices)
                if keep:
                    saved.append(pull)
                h = z
        t = ev.temperature
        return h / t, _layout(tangent, batch_major, False) / t, saved

    def h_term(self, ev: FunctionalModel, directions: Params, saved, residual: Tensor
               ) -> Tensor:
        r"""The chunk's summed H-term (d, d) float64 from :meth:`forward`'s ``saved`` and the
        residual :math:`p - y` (B, K) of the logits: :math:`\sum_l C_l + C_l^\top` with
        :math:`C_l[u, v] = \langle V_l^u, E_l^v\rangle`."""
        g = residual / ev.temperature  # ∂ℓ/∂x_L
        total = None
        for step, kept in zip(reversed(self.steps), reversed(saved)):
            if isinstance(step, Relu):
                g = g * kept
                continue
            if isinstance(step, Fixed):
                (g,) = kept(g)
                continue
            mask, tangent = kept[:2]
            if mask is not None:
                g = g * mask  # ∂ℓ/∂z_l
            if tangent is None:  # the layer's input does not depend on the parameters
                break
            v = directions[step.weight]
            d = v.shape[0]
            w = ev.params[step.weight]
            if isinstance(step, Dense):
                e = torch.matmul(g.T, tangent)  # (out, B) @ (d, B, in) -> (d, out, in)
                g_next = g @ w  # ∂ℓ/∂x_{l-1}
            else:
                # E^v for all v at once: the weight gradient with the d tangents as channels,
                # (O, d·C, k…) -> (d, O, C, k…)
                b = tangent.shape[0]
                e = _CONV_WEIGHT[step.dim](
                    tangent.view(b, -1, *tangent.shape[3:]), (w.shape[0], d * w.shape[1],
                                                              *w.shape[2:]),
                    g, step.stride, step.padding, step.dilation)
                e = e.view(w.shape[0], d, -1).transpose(0, 1)
                g_next = _CONV_INPUT[step.dim](kept[2], w, g, step.stride, step.padding,
                                               step.dilation)
            c = (v.reshape(d, -1) @ e.reshape(d, -1).T).to(torch.float64)
            total = c if total is None else total + c
            g = g_next
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


def _conv_padding(m: nn.Module, dim: int) -> tuple[int, ...] | None:
    """The zero padding per axis of a convolution, ``'same'`` only where it is symmetric."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0,) * dim
        total = [dil * (k - 1) for dil, k in zip(m.dilation, m.kernel_size)]
        if m.padding != "same" or any(t % 2 for t in total):
            return None
        return tuple(t // 2 for t in total)
    return tuple(m.padding)


def _step(m: nn.Module, prefix: str, shape: torch.Size) -> Step | None | bool:
    """The step for module ``m`` seeing batched inputs of ``shape``, True for the identity,
    None when unsupported. Parameters and ReLUs are checked by the caller."""
    kind = type(m)
    if kind is nn.Linear:
        if len(shape) != 2:
            return None
        return Dense(f"{prefix}.weight", f"{prefix}.bias" if m.bias is not None else None,
                     False)
    if kind in _CONV:
        dim = _CONV[kind]
        padding = _conv_padding(m, dim)
        if m.groups != 1 or m.padding_mode != "zeros" or padding is None \
                or len(shape) != dim + 2:
            return None
        return Conv(f"{prefix}.weight", f"{prefix}.bias" if m.bias is not None else None,
                    False, dim, tuple(m.stride), padding, tuple(m.dilation))
    if kind is nn.Flatten:
        start, end = m.start_dim % len(shape), m.end_dim % len(shape)
        if start < 1:
            return None  # the batch axis must stay
        if start > end:
            return None
        return True if start == end else Fixed("flatten", 0, (start, end))
    if kind in _AVG_POOL:
        dim = _AVG_POOL[kind]
        if len(shape) != dim + 2:
            return None
        args = (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
        return Fixed("avg_pool", dim, args if dim == 1 else (*args, m.divisor_override))
    if kind in _MAX_POOL:
        dim = _MAX_POOL[kind]
        if len(shape) != dim + 2 or m.return_indices:
            return None
        return Fixed("max_pool", dim, (m.kernel_size, m.stride, m.padding, m.dilation,
                                       m.ceil_mode))
    if kind in _IDENTITY:
        return True
    return None


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
    steps: list[Step] = []
    # the shapes, step by step, on one meta sample (no data, no FLOPs)
    h = torch.empty((1, *x.shape[1:]), dtype=x.dtype, device="meta")
    meta = {n: p.to("meta") for n, p in ev.params.items()}
    try:
        for m in modules:
            if type(m) is nn.ReLU:
                last = steps[-1] if steps else None
                if not any(isinstance(s, (Dense, Conv)) for s in steps):
                    return None  # a ReLU of the data itself
                if isinstance(last, (Dense, Conv)):
                    steps[-1] = replace(last, relu=True)
                elif not isinstance(last, Relu):  # relu(relu(x)) = relu(x)
                    steps.append(Relu())
                continue
            step = _step(m, names[id(m)], h.shape)
            if step is None:
                return None
            if step is True:
                continue
            if isinstance(step, (Dense, Conv)):
                params = [p for p in (m.weight, m.bias) if p is not None]
                if not all(canonical[id(p)] in ev.params and slots[canonical[id(p)]] == 1
                           for p in params):
                    return None  # a frozen or shared parameter: the generic pass
                if isinstance(step, Dense):
                    h = F.linear(h, meta[step.weight],
                                 meta[step.bias] if step.bias else None)
                else:
                    h = step(h, meta[step.weight], meta[step.bias] if step.bias else None)
            else:
                h = step.primal(h)
            steps.append(step)
    except RuntimeError:  # shapes that do not fit: let the generic pass report it
        return None
    net = ReluNetwork(tuple(steps))
    if not net.layers or h.ndim != 2 or \
            len(ev.params) != sum(1 + (s.bias is not None) for s in net.layers):
        return None
    return net
