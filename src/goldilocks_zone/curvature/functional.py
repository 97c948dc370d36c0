r"""The one functional view of a user's model: parameters → logits.

:class:`FunctionalModel` evaluates :math:`z = f(x;\, s\,\theta) / T` (scale ``s``, temperature
``T``) for a parameter dict :math:`\theta`, and is the only place in the package that calls
``torch.func.functional_call``. It treats the user's ``nn.Module`` as read-only:

- **parameters** are passed as a dict of tensors; with ``trainable_only=True`` (default) only
  the parameters with ``requires_grad`` are differentiated (they fix the dimension ``D`` and the
  row order of a basis: ``model.parameters()`` order, frozen ones skipped); frozen parameters
  are passed as constants, scaled like the rest;
- **tied / shared weights** (``self.b = self.a``, or ``dec.weight = emb.weight``): each unique
  parameter appears once (as in ``model.parameters()``) and is fed to every module slot that
  holds it, so gradients flow through all uses and the module is never left with a tensor in
  place of its ``Parameter``;
- **buffers** are copied (BatchNorm running statistics are never written back);
- **outputs**: a tensor; a tuple/list → its first tensor; a mapping → its ``"logits"`` entry;
  an object with a ``.logits`` tensor (HuggingFace ``ModelOutput``); or ``output(out)`` when
  the user passes an ``output=`` callable;
- **inputs**: a tensor (``model(x)``), a tuple of tensors (``model(*x)``) or a dict of tensors
  (``model(**x)``);
- **mode**: eval by default; ``train_mode=True`` uses batch statistics (see :meth:`mode`).
  Inside :meth:`mode` attention runs on the exact "math" kernel of
  ``scaled_dot_product_attention`` and ``nn.MultiheadAttention``'s inference fast path is
  off, because the fused kernels have no forward-mode derivative.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
#: What a model is called with: ``model(x)``, ``model(*x)`` or ``model(**x)``.
Inputs = Tensor | tuple[Tensor, ...] | dict[str, Tensor]

#: Chunk size used when ``batch_size=None`` (eval mode): large enough for efficient batched
#: kernels, small enough that the d tangent activations of a chunk stay near the CPU caches
#: (the passes are memory-bound beyond that). Measured on a 2-core CPU, d = 50, float64:
#: LeNet-300-100 Hessian 1.2-1.4 s per 2,000 samples at 250 vs 1.8-3.1 s at 1,000; LeNet-5
#: and the forward-mode G-term likewise fastest at 125-250.
DEFAULT_BATCH_SIZE = 256

__all__ = ["DEFAULT_BATCH_SIZE", "FunctionalModel", "Inputs", "Params", "UnsupportedModelError",
           "check_train_mode", "flatten", "flatten_rows", "model_params", "num_params",
           "unflatten"]


class UnsupportedModelError(TypeError):
    """The model uses an operation the engine cannot differentiate (named in the message)."""


def model_params(model: nn.Module, *, trainable_only: bool = False) -> Params:
    """The model's unique parameters as detached tensors, in ``model.parameters()`` order
    (tied parameters once); with ``trainable_only`` only those with ``requires_grad``."""
    return {name: p.detach() for name, p in model.named_parameters()
            if p.requires_grad or not trainable_only}


def num_params(params: Params) -> int:
    return sum(p.numel() for p in params.values())


def flatten(tensors: Params) -> Tensor:
    """Concatenate a parameter-shaped dict into one vector (dict order)."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def flatten_rows(tensors: Params) -> Tensor:
    """``{name: (m, *shape)} -> (m, D)``: a batch of parameter-shaped dicts as rows."""
    first = next(iter(tensors.values()))
    return torch.cat([t.reshape(first.shape[0], -1) for t in tensors.values()], dim=1)


def unflatten(vector: Tensor, like: Params) -> Params:
    """Split a flat vector (D,) — or a matrix (D, m) — into parameter-shaped pieces.

    For a matrix the column index becomes the *leading* dimension of every piece:
    ``(D, m) -> {name: (m, *shape)}``.
    """
    total = num_params(like)
    if vector.shape[0] != total:
        raise ValueError(f"expected {total} entries (one per parameter), got "
                         f"{vector.shape[0]}")
    blocks = vector.split([p.numel() for p in like.values()])
    if vector.ndim == 1:
        return {name: b.reshape(p.shape) for (name, p), b in zip(like.items(), blocks)}
    return {name: b.T.reshape(vector.shape[1], *p.shape)
            for (name, p), b in zip(like.items(), blocks)}


#: The dropout layers: random in train mode, the identity in eval mode.
DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                  nn.FeatureAlphaDropout)


def check_train_mode(model: nn.Module) -> None:
    """Train-mode curvature is well defined only without stochastic layers."""
    bad = [name for name, m in model.named_modules()
           if isinstance(m, DROPOUT_LAYERS) and getattr(m, "p", 0) > 0]
    if bad:
        raise ValueError(
            "train_mode=True is not well defined for models with dropout (random masks make "
            f"the Hessian random): {', '.join(bad)}. Use train_mode=False (eval mode)."
        )


@contextlib.contextmanager
def _exact_attention() -> Iterator[None]:
    """Math kernel for ``scaled_dot_product_attention``, no MultiheadAttention fast path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def _slots(model: nn.Module, kind: str) -> list[tuple[str, Tensor]]:
    """Every (module, attribute) slot holding a parameter (``kind="_parameters"``) or buffer,
    once per slot even when a module is registered under several names."""
    out = []
    for prefix, module in model.named_modules():
        for attr, value in getattr(module, kind).items():
            if value is not None:
                out.append((f"{prefix}.{attr}" if prefix else attr, value))
    return out


def _extract_logits(out: Any) -> Tensor:
    """The output rule: tensor; first tensor of a tuple/list; ``"logits"`` of a mapping;
    ``.logits`` of an object."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), Tensor):
            return out["logits"]
        raise TypeError(f"the model returned a mapping without a 'logits' tensor (keys: "
                        f"{sorted(map(str, out))}); pass output=lambda out: out[<key>]")
    if isinstance(getattr(out, "logits", None), Tensor):
        return out.logits
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"cannot find logits in the model's output of type {type(out).__name__}; "
                    "return a tensor, a tuple whose first tensor is the logits, a dict with "
                    "'logits', an object with .logits, or pass output=<callable>")


class FunctionalModel:
    r"""A model evaluated functionally at ``scale * params`` with logits divided by
    ``temperature``: :math:`z = f(x;\, s\theta)/T`.

    Attributes:
        params: the differentiated parameters, already scaled (``dict`` in
            ``model.parameters()`` order; trainable ones only unless ``trainable_only=False``).
        constants: the frozen parameters (scaled), passed as constants.
        buffers: copies of the model's buffers.

    ``logits(params, inputs)`` evaluates the model at any parameter dict with the same names
    as :attr:`params`. Use it inside ``with fm.mode():``.
    """

    def __init__(self, model: nn.Module, *, scale: float = 1.0, temperature: float = 1.0,
                 params: Params | None = None, train_mode: bool = False,
                 trainable_only: bool = True,
                 output: Callable[[Any], Tensor] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        t = float(temperature)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a positive finite number, got "
                             f"{temperature!r}")
        s = float(scale)
        if not math.isfinite(s):
            raise ValueError(f"scale must be finite, got {scale!r}")
        if output is not None and not callable(output):
            raise TypeError("output must be a callable mapping the model's output to logits")
        if train_mode:
            check_train_mode(model)
        every = model_params(model)
        if not every:
            raise ValueError("the model has no parameters")
        wanted = [n for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
        if not wanted:
            raise ValueError("the model has no trainable parameters (all have "
                             "requires_grad=False); pass trainable_only=False to measure them")
        if params is not None:
            every = self._check_params(every, wanted, params)
        dtypes = {p.dtype for p in every.values()}
        devices = {p.device for p in every.values()}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"all parameters must share one dtype and device, got {dtypes} "
                             f"on {devices}; convert the model with .to(dtype, device)")
        scaled = {n: p * s if s != 1.0 else p for n, p in every.items()}
        self.model = model
        self.scale = s
        self.temperature = t
        self.train_mode = bool(train_mode)
        self.output = output
        self.params: Params = {n: scaled[n] for n in wanted}
        self.constants: Params = {n: p for n, p in scaled.items() if n not in self.params}
        self.buffers: dict[str, Tensor] = {n: b.detach().clone()
                                           for n, b in _slots(model, "_buffers")}
        canonical = {id(p): n for n, p in model.named_parameters()}
        self._param_slots = [(slot, canonical[id(p)]) for slot, p in _slots(model, "_parameters")]

    @staticmethod
    def _check_params(base: Params, wanted: list[str], params: Params) -> Params:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict name -> tensor, got {type(params).__name__}")
        missing = set(wanted) - set(params)
        extra = set(params) - set(base)
        if missing or extra:
            raise ValueError(f"params must have the model's parameter names (see "
                             f"model.named_parameters()); missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for name, p in params.items():
            if not isinstance(p, Tensor) or p.shape != base[name].shape:
                shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"params[{name!r}] has shape {shape}, the model's has "
                                 f"{tuple(base[name].shape)}")
        return {n: (params[n] if n in params else p).detach() for n, p in base.items()}

    # ------------------------------------------------------------------ properties

    @property
    def num_params(self) -> int:
        """D: the number of differentiated parameters (rows of a basis)."""
        return num_params(self.params)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    # ------------------------------------------------------------------ evaluation

    def raw(self, params: Params, inputs: Inputs) -> Tensor:
        """:math:`f(x; \\theta)` (no temperature) for a dict with the names of :attr:`params`."""
        merged = {**self.constants, **params}
        slots = {slot: merged[name] for slot, name in self._param_slots}
        slots.update(self.buffers)
        if isinstance(inputs, Mapping):
            args, kwargs = (), dict(inputs)
        elif isinstance(inputs, (tuple, list)):
            args, kwargs = tuple(inputs), None
        else:
            args, kwargs = (inputs,), None
        out = functional_call(self.model, slots, args, kwargs, tie_weights=False, strict=False)
        return self.output(out) if self.output is not None else _extract_logits(out)

    def logits(self, params: Params, inputs: Inputs) -> Tensor:
        """:math:`z = f(x; \\theta) / T` (B, K)."""
        return self.raw(params, inputs) / self.temperature

    def __call__(self, inputs: Inputs) -> Tensor:
        """Logits at :attr:`params`."""
        return self.logits(self.params, inputs)

    def at(self, params: Params) -> FunctionalModel:
        """The same model (buffers, constants, temperature, mode) at other parameters."""
        other = object.__new__(FunctionalModel)
        other.__dict__.update(self.__dict__)
        other.params = {n: params[n] for n in self.params}
        return other

    @contextlib.contextmanager
    def mode(self) -> Iterator[None]:
        """Put every submodule in train (``train_mode``) or eval mode, then restore each
        submodule's own flag, so the caller's model leaves exactly as it came.

        In train mode BatchNorm layers normalise with the statistics of each batch *as the
        caller gave it* and do not update their running statistics
        (``track_running_stats`` is off meanwhile and restored after).
        """
        model, train = self.model, self.train_mode
        flags = [(m, m.training) for m in model.modules()]
        norms = [(m, m.track_running_stats) for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            for m, _ in flags:
                m.training = train
            if train:
                for m, _ in norms:
                    m.track_running_stats = False
            with _exact_attention():
                yield
        finally:
            for m, flag in flags:
                m.training = flag
            for m, flag in norms:
                m.track_running_stats = flag


def check_basis(basis: Tensor, fm: FunctionalModel) -> None:
    """A basis (D, d): D = ``fm.num_params`` rows, d ≥ 1 columns, the model's dtype and
    device."""
    n = fm.num_params
    if not isinstance(basis, Tensor):
        raise TypeError(f"basis must be a tensor of shape ({n}, dim), got "
                        f"{type(basis).__name__}; build it with random_basis({n}, dim)")
    if basis.ndim != 2:
        raise ValueError(f"basis must be a 2-D tensor of shape (num_params, dim) = ({n}, dim), "
                         f"got shape {tuple(basis.shape)}")
    if basis.shape[1] == 0:
        raise ValueError("basis has 0 columns: the subspace dimension must be at least 1")
    if basis.shape[0] != n:
        raise ValueError(f"basis has {basis.shape[0]} rows but the model has {n} parameters "
                         f"(trainable ones, model.parameters() order); build it with "
                         f"random_basis({n}, dim)")
    if basis.dtype != fm.dtype:
        raise ValueError(f"basis has dtype {basis.dtype} but the model's parameters are "
                         f"{fm.dtype}; use random_basis(..., dtype={fm.dtype})")
    if basis.device != fm.device:
        raise ValueError(f"basis is on {basis.device} but the model's parameters are on "
                         f"{fm.device}; use random_basis(..., device={str(fm.device)!r})")

