r"""An exact shortcut for the Hessian pass: pull the basis through the input layer.

When an ``nn.Linear`` layer sees the data only (its input does not depend on any
differentiated parameter), its output :math:`z_1 = W a + b` is *linear* in its parameters
:math:`\theta_1 = (W, b)`. Writing the loss as :math:`L(\theta) = M(z_1(\theta_1),
\theta_{\text{rest}})`, the chain rule has no second-derivative term for a linear map, so

.. math:: R^\top \nabla^2 L\, R = \tilde R^\top \nabla^2 M\, \tilde R, \qquad
   \tilde r_j = (a R_{W,j}^\top + R_{b,j},\; R_{\text{rest},j}),

exactly. The pushed-forward directions :math:`a R_{W,j}^\top` of all d columns are one batched
matrix product ``(B, in) @ (d, in, out)``; the forward-over-reverse pass then differentiates with
respect to :math:`z_1` (B × out numbers per column) instead of :math:`W` (out × in), and never
forms the layer's weight-gradient tangents :math:`\dot\delta_j^\top a` — on LeNet-300-100 the
first layer holds 88 % of the parameters and this product about a third of the pass' FLOPs.
The layer's output is replaced by :math:`z_1` with a forward hook that lives only for the
duration of one engine call.

Used when it pays (``d < in_features``) and is exact: the layer is a plain ``nn.Linear``
without hooks of its own, called once per forward, its input independent of the
differentiated parameters, its weight differentiated, held by no other module slot and used
by nothing but the layer (one edge into it in the autograd graph; a differentiated bias
likewise).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from goldilocks_zone.curvature.functional import FunctionalModel, Inputs, Params

#: Key of the layer's output in the primal / direction dicts of the pass (not a parameter name:
#: parameter names never start with a NUL character).
OUTPUT_KEY = "\0input_layer_output"

__all__ = ["OUTPUT_KEY", "InputLayer", "find_input_layer"]


class _Captured(Exception):
    """Raised by the capture hook to stop a forward once the layer's input is known."""


@dataclass
class InputLayer:
    """A Linear layer fed by the data only (see the module docstring)."""

    module: nn.Linear
    weight: str
    bias: str | None  # the bias' name when it is differentiated, else None
    constant_bias: str | None  # the bias' name when it is a constant (frozen), else None
    _state: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Hooks on the layer for one engine call (removed after, whatever happens)."""
        state = self._state

        def pre(module, args):
            if state.get("capture"):
                state["input"] = args[0]
                raise _Captured
            state["calls"] = state.get("calls", 0) + 1

        def post(module, args, out):
            # a copy, not the leaf itself: module-tracking hooks (FlopCounterMode) need a
            # grad_fn, and an in-place activation next (nn.ReLU(inplace=True)) may not write
            # into a leaf or a view of one
            return state["output"].clone() if "output" in state else out

        handles = [self.module.register_forward_pre_hook(pre),
                   self.module.register_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            state.clear()

    def layer_input(self, ev: FunctionalModel, x: Inputs) -> Tensor:
        """The layer's input for a chunk (the forward stops at the layer)."""
        self._state["capture"] = True
        try:
            ev.logits(ev.params, x)
        except _Captured:
            return self._state.pop("input")
        finally:
            self._state.pop("capture", None)
        raise RuntimeError("the input layer was not called by the model's forward")

    def split(self, ev: FunctionalModel, x: Inputs, basis_dict: Params
              ) -> tuple[Callable[[Params], Tensor], Params, Params]:
        r"""``(logits_of, primal, directions)`` for the chunk: ``logits_of(primal)`` is the
        model with the layer's output given as ``primal[OUTPUT_KEY]``; ``directions`` holds the
        basis of the other parameters and the pushed-forward directions (d, ..., out)."""
        a = self.layer_input(ev, x).detach()
        weight = ev.params[self.weight]
        bias = (ev.params[self.bias] if self.bias else
                ev.constants[self.constant_bias] if self.constant_bias else None)
        rw = basis_dict[self.weight]  # (d, out, in)
        d, out, width = rw.shape
        flat = a.reshape(-1, width)
        # one batched product written straight in the (d, B, out) layout of the pass (a
        # (B, in) @ (in, d·out) product would need a transposing copy of its d·B·out result)
        pushed = torch.bmm(flat.expand(d, *flat.shape), rw.transpose(1, 2))
        if self.bias:
            pushed += basis_dict[self.bias][:, None, :]
        pushed = pushed.reshape(d, *a.shape[:-1], out)
        own = {self.weight, self.bias}
        primal = {k: v for k, v in ev.params.items() if k not in own}
        directions = {k: v for k, v in basis_dict.items() if k not in own}
        primal[OUTPUT_KEY] = torch.nn.functional.linear(a, weight, bias)
        directions[OUTPUT_KEY] = pushed
        fixed = {self.weight: weight, **({self.bias: bias} if self.bias else {})}
        state = self._state

        def logits_of(q: Params) -> Tensor:
            state["output"], state["calls"] = q[OUTPUT_KEY], 0
            try:
                z = ev.logits({**{k: v for k, v in q.items() if k != OUTPUT_KEY}, **fixed}, x)
            finally:
                del state["output"]
            if state["calls"] != 1:
                raise RuntimeError(f"the input layer was called {state['calls']} times in one "
                                   "forward; the shortcut needs exactly one call")
            return z

        return logits_of, primal, directions


def find_input_layer(ev: FunctionalModel, x: Inputs, dim: int) -> InputLayer | None:
    """The largest plain ``nn.Linear`` for which the shortcut is exact and pays (``dim <
    in_features``), or None. One forward with autograd tells which layers see only the data;
    call inside ``ev.mode()``."""
    canonical = {id(p): n for n, p in ev.model.named_parameters()}
    slots = Counter(name for _, name in ev._param_slots)

    def usable(p: Tensor | None) -> bool:  # differentiated and held by one slot only
        return p is not None and canonical.get(id(p)) in ev.params and slots[canonical[id(p)]] == 1

    candidates = [m for m in dict.fromkeys(ev.model.modules())
                  if type(m) is nn.Linear and m.in_features > dim and usable(m.weight)
                  and (m.bias is None or usable(m.bias)
                       or canonical.get(id(m.bias)) not in ev.params)
                  and not m._forward_hooks and not m._forward_pre_hooks]  # no user hooks
    if not candidates:
        return None
    seen: dict[nn.Module, list[bool]] = {m: [] for m in candidates}

    def record(module, args, kwargs):
        ok = not kwargs and len(args) == 1 and isinstance(args[0], Tensor)
        seen[module].append(ok and not args[0].requires_grad)

    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in candidates]
    try:
        leaves = {k: v.detach().requires_grad_(True) for k, v in ev.params.items()}
        with torch.enable_grad():
            logits = ev.logits(leaves, x)
    finally:
        for h in handles:
            h.remove()
    # the layer's parameters must be used by nothing but the layer (e.g. not also read as
    # ``F.linear(h, self.fc1.weight)`` elsewhere): exactly one edge into each in the graph
    uses = _uses(logits, [leaves[canonical[id(p)]] for m in candidates
                          for p in (m.weight, m.bias) if usable(p)])
    fed_by_data = [m for m in candidates if seen[m] == [True]
                   and all(uses[id(leaves[canonical[id(p)]])] == 1
                           for p in (m.weight, m.bias) if usable(p))]
    if not fed_by_data:
        return None
    best = max(fed_by_data, key=lambda m: m.weight.numel())
    bias = canonical[id(best.bias)] if usable(best.bias) else None
    constant = (canonical[id(best.bias)] if best.bias is not None and bias is None
                else None)
    return InputLayer(best, canonical[id(best.weight)], bias, constant)


def _uses(out: Tensor, leaves: list[Tensor]) -> dict[int, int]:
    """How many edges of ``out``'s autograd graph end in each leaf (by ``id``)."""
    with torch.enable_grad():
        nodes = {leaf.view_as(leaf).grad_fn.next_functions[0][0]: id(leaf) for leaf in leaves}
    count = dict.fromkeys(nodes.values(), 0)
    seen, stack = set(), [out.grad_fn] if out.grad_fn is not None else []
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is None:
                continue
            if nxt in nodes:
                count[nodes[nxt]] += 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return count
