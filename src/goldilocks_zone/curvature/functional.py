"""Functional evaluation of a user's model: parameters as dicts, scale, temperature, data.

Everything here treats the user's ``nn.Module`` as read-only: parameters are passed to
``torch.func.functional_call`` as a dict, buffers are copied, and the train/eval flags that an
evaluation needs are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]

#: Chunk size used when ``batch_size=None``: large enough for efficient batched kernels,
#: small enough that tangent activations of d = 50 directions fit in a laptop's memory.
DEFAULT_BATCH_SIZE = 1024


def model_params(model: nn.Module) -> Params:
    """The model's parameters as a dict of detached tensors, in ``model.parameters()`` order."""
    return {name: p.detach() for name, p in model.named_parameters()}


def num_params(params: Params) -> int:
    return sum(p.numel() for p in params.values())


def flatten(tensors: Params) -> Tensor:
    """Concatenate a parameter-shaped dict into one vector (``parameters_to_vector`` order)."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Split a flat vector (D,) — or a matrix (D, m) — into parameter-shaped pieces.

    For a matrix the column index becomes the *leading* dimension of every piece:
    ``(D, m) -> {name: (m, *shape)}``.
    """
    out: Params = {}
    offset = 0
    for name, p in like.items():
        n = p.numel()
        block = vector[offset:offset + n]
        if vector.ndim == 1:
            out[name] = block.reshape(p.shape)
        else:
            out[name] = block.T.reshape(vector.shape[1], *p.shape)
        offset += n
    return out


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Temporarily put every submodule in train (``True``) or eval mode, then restore each
    submodule's own flag, so the caller's model leaves exactly as it came.

    In train mode BatchNorm layers normalise with the batch statistics of each chunk and do
    not update their running statistics (``track_running_stats`` is switched off meanwhile).
    """
    flags = [(m, m.training) for m in model.modules()]
    norms = [(m, m.track_running_stats) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _ in flags:
            m.training = train
        if train:
            for m, _ in norms:
                m.track_running_stats = False
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for m, flag in norms:
            m.track_running_stats = flag


_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout)


def check_train_mode(model: nn.Module) -> None:
    """Train-mode curvature is well defined only without stochastic layers."""
    bad = [name for name, m in model.named_modules()
           if isinstance(m, _STOCHASTIC) and getattr(m, "p", 0) > 0]
    if bad:
        raise ValueError(
            "train_mode=True is not well defined for models with dropout (random masks make "
            f"the Hessian random): {', '.join(bad)}. Use train_mode=False (eval mode)."
        )


@dataclass
class Evaluator:
    """A model evaluated functionally at ``scale * params`` with logits divided by
    ``temperature``: ``z = f(x; scale * theta) / T``."""

    model: nn.Module
    params: Params  # already scaled
    buffers: dict[str, Tensor]
    temperature: float

    def logits(self, params: Params, x: Tensor) -> Tensor:
        out = functional_call(self.model, (params, self.buffers), (x,))
        return out / self.temperature


def check_params(model: nn.Module, params: Params) -> None:
    """``params`` must have exactly the model's parameter names and shapes."""
    base = model_params(model)
    missing, extra = set(base) - set(params), set(params) - set(base)
    if missing or extra:
        raise ValueError(f"params must have exactly the model's parameter names; missing "
                         f"{sorted(missing)}, unexpected {sorted(extra)}")
    for name, p in base.items():
        if params[name].shape != p.shape:
            raise ValueError(f"params[{name!r}] has shape {tuple(params[name].shape)}, the "
                             f"model's has {tuple(p.shape)}")


def make_evaluator(model: nn.Module, *, scale: float = 1.0, temperature: float = 1.0,
                   params: Params | None = None) -> Evaluator:
    """Validate scale/temperature/params and build the functional evaluator."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    s = float(scale)
    if not math.isfinite(s):
        raise ValueError(f"scale must be finite, got {scale!r}")
    base = model_params(model)
    if not base:
        raise ValueError("the model has no parameters")
    if params is not None:
        check_params(model, params)
        base = {name: params[name].detach() for name in base}
    dtypes = {p.dtype for p in base.values()}
    devices = {p.device for p in base.values()}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(f"all parameters must share one dtype and device, got {dtypes} "
                         f"on {devices}")
    scaled = {name: p * s for name, p in base.items()} if s != 1.0 else dict(base)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    return Evaluator(model=model, params=scaled, buffers=buffers, temperature=t)


Batch = tuple[Tensor, Tensor]


def iter_batches(data: Batch | Iterable[Batch], batch_size: int | None) -> Iterator[Batch]:
    """Yield ``(inputs, targets)`` chunks of at most ``batch_size`` samples.

    ``data`` is a tuple of two tensors or an iterable of such pairs (e.g. a DataLoader); each
    pair is re-chunked to ``batch_size``. ``batch_size=None`` uses DEFAULT_BATCH_SIZE.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    size = batch_size or DEFAULT_BATCH_SIZE
    if _is_pair(data):
        batches: Iterable = [data]
    else:
        batches = data
    for batch in batches:
        if not _is_pair(batch):
            raise TypeError("data must be a tuple (inputs, targets) of tensors or an iterable "
                            f"of such tuples; got a batch of type {type(batch).__name__}")
        x, y = batch
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs and targets disagree on the number of samples: "
                             f"{x.shape[0]} vs {y.shape[0]}")
        for start in range(0, x.shape[0], size):
            yield x[start:start + size], y[start:start + size]


def _is_pair(obj: object) -> bool:
    return (isinstance(obj, (tuple, list)) and len(obj) == 2
            and all(isinstance(t, Tensor) for t in obj))


def check_batch(x: Tensor, y: Tensor, logits: Tensor | None, evaluator: Evaluator, *,
                num_classes: int | None = None) -> None:
    """Check dtype/device of inputs, integer 1-D targets, the (batch, K) shape of ``logits``
    (when given) and targets in [0, K) (K from ``logits`` or ``num_classes``)."""
    p = next(iter(evaluator.params.values()))
    if x.device != p.device:
        raise ValueError(f"inputs are on {x.device} but the model's parameters are on "
                         f"{p.device}; move them with .to({str(p.device)!r})")
    if x.is_floating_point() and x.dtype != p.dtype:
        raise ValueError(f"inputs have dtype {x.dtype} but the model's parameters are "
                         f"{p.dtype}; convert one of them (e.g. inputs.to({p.dtype}))")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"targets must be a 1-D tensor of class indices, got shape "
                         f"{tuple(y.shape)}")
    k = num_classes
    if logits is not None:
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model must map a batch of inputs to logits of shape "
                             f"(batch, classes); for a batch of {x.shape[0]} it returned "
                             f"{tuple(logits.shape)}")
        k = logits.shape[1]
    if k is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"targets must lie in [0, {k}) for a model with {k} outputs; got "
                         f"values in [{int(y.min())}, {int(y.max())}]")


def check_first_batch(x: Tensor, y: Tensor, evaluator: Evaluator) -> int:
    """Validate the first chunk cheaply (a forward pass on two samples) before heavy work;
    return the number of classes K for checking the later chunks."""
    check_batch(x, y, None, evaluator)  # dtype/device first: the probe forward needs them
    logits = evaluator.logits(evaluator.params, x[:2])
    check_batch(x[:2], y[:2], logits, evaluator)
    check_batch(x, y, None, evaluator, num_classes=logits.shape[1])
    return logits.shape[1]


def check_basis(basis: Tensor, evaluator: Evaluator) -> None:
    p = next(iter(evaluator.params.values()))
    n = num_params(evaluator.params)
    if not isinstance(basis, Tensor) or basis.ndim != 2:
        raise ValueError("basis must be a 2-D tensor of shape (num_params, dim)")
    if basis.shape[0] != n:
        raise ValueError(f"basis has {basis.shape[0]} rows but the model has {n} parameters; "
                         f"build it with random_basis({n}, dim)")
    if basis.dtype != p.dtype:
        raise ValueError(f"basis has dtype {basis.dtype} but the model's parameters are "
                         f"{p.dtype}; use random_basis(..., dtype={p.dtype})")
    if basis.device != p.device:
        raise ValueError(f"basis is on {basis.device} but the model's parameters are on "
                         f"{p.device}; use random_basis(..., device={str(p.device)!r})")
