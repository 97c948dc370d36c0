r"""The one data pass: every accepted data format → validated ``(inputs, targets)`` chunks,
and the standard per-chunk statistics accumulated in one place.

Accepted ``data``:

- an ``(inputs, targets)`` pair: ``inputs`` a tensor, a tuple of tensors (the model is called
  as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``); ``targets`` integer class
  indices (S,) of any integer dtype (cast to int64);
- a dict batch ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``: the model is
  called with the non-label entries as keyword arguments;
- an iterable of such batches (a ``DataLoader``, a list);
- a ``torch.utils.data.Dataset`` passed directly (a ``TensorDataset`` is used as its tensors;
  any other map-style dataset is read through a ``DataLoader`` with the default collation);
- an object with ``.inputs`` and ``.targets`` tensors (the package's ``data`` datasets).

In **eval mode** every batch is re-chunked to ``batch_size`` samples (memory only: the result
does not depend on it). In **train mode** batches are used exactly as given, never re-chunked,
because BatchNorm's batch statistics depend on the batch: the curvature is then that of the
sample-weighted mean of the per-batch losses, and ``batch_size`` is ignored.

Every batch is validated before the heavy work on it (the first one also with a forward pass
on two samples): errors are ``ValueError``/``TypeError`` naming the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp

from goldilocks_zone.curvature.functional import (
    DEFAULT_BATCH_SIZE,
    FunctionalModel,
    Inputs,
    UnsupportedModelError,
)

#: The key holding the class indices in a dict batch (the HuggingFace convention).
LABEL_KEY = "labels"

Batch = tuple[Inputs, Tensor]
#: What ``data`` may be (the start of the TypeError for anything else).
_FORMATS = (f"data must be a tuple (inputs, targets) of tensors, a dict batch with {LABEL_KEY!r}"
            ", a Dataset, or an iterable of such tuples/dicts; got")

__all__ = ["LABEL_KEY", "BatchStatistics", "chunks", "count_samples", "map_inputs",
           "num_samples_of", "take_samples"]


# ----------------------------------------------------------------------------- formats


def _tensors(inputs: Inputs) -> list[Tensor]:
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def _is_inputs(obj: Any) -> bool:
    if not isinstance(obj, (Tensor, Mapping, tuple, list)):
        return False
    parts = _tensors(obj)
    return bool(parts) and all(isinstance(t, Tensor) for t in parts)


def _is_pair(obj: Any) -> bool:
    return (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], Tensor)
            and _is_inputs(obj[0]))


def _is_dict_batch(obj: Any) -> bool:
    return isinstance(obj, Mapping) and LABEL_KEY in obj


def _split(batch: Any) -> Batch:
    """One batch in any accepted form → ``(inputs, targets)``."""
    if _is_dict_batch(batch):
        rest = {k: v for k, v in batch.items() if k != LABEL_KEY}
        if not rest or not all(isinstance(v, Tensor) for v in rest.values()):
            raise TypeError("a dict batch needs tensor inputs beside its 'labels' entry, got "
                            f"keys {sorted(map(str, batch))}")
        return rest, batch[LABEL_KEY]
    if _is_pair(batch):
        x, y = batch
        return (tuple(x) if isinstance(x, (tuple, list)) else x), y
    if isinstance(batch, Mapping):
        raise TypeError(f"a dict batch must hold the class indices under {LABEL_KEY!r}; got "
                        f"keys {sorted(map(str, batch))}")
    raise TypeError(f"{_FORMATS} a batch of type {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def _source_batches(data: Any, size: int) -> Iterator[Batch]:
    """The batches of ``data`` as given, each as ``(inputs, targets)``."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

    if _is_pair(data) or _is_dict_batch(data):
        yield _split(data)
        return
    if isinstance(getattr(data, "inputs", None), Tensor) and isinstance(
            getattr(data, "targets", None), Tensor):
        yield data.inputs, data.targets
        return
    if isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise TypeError("a TensorDataset needs inputs and targets tensors, got "
                            f"{len(data.tensors)} tensor(s)")
        *xs, y = data.tensors
        yield (xs[0] if len(xs) == 1 else tuple(xs)), y
        return
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=size, shuffle=False)
    if isinstance(data, (Tensor, Mapping, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{_FORMATS} {type(data).__name__}")
    for batch in data:
        yield _split(batch)


def map_inputs(fn: Callable[[Tensor], Tensor], inputs: Inputs) -> Inputs:
    """Apply ``fn`` to every tensor of ``inputs`` (a tensor, a tuple or a dict of tensors),
    keeping the structure: e.g. a slice, an index or a dtype/device cast of a batch."""
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(fn(t) for t in inputs)
    return fn(inputs)


def _slice(inputs: Inputs, sl: slice) -> Inputs:
    return map_inputs(lambda t: t[sl], inputs)


def _concat(parts: list[Inputs]) -> Inputs:
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))
    return torch.cat(parts)


def num_samples_of(inputs: Inputs) -> int:
    return _tensors(inputs)[0].shape[0]


# ----------------------------------------------------------------------------- validation


def _check_targets(y: Any) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"targets must be a tensor of integer class indices, got "
                        f"{type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {y.dtype} (soft "
                         "or float labels are not supported; convert indices with .long())")
    if y.ndim != 1:
        raise ValueError(f"targets must be a 1-D tensor of class indices, got shape "
                         f"{tuple(y.shape)}")
    return y.to(torch.int64)


def _check_inputs(x: Inputs, y: Tensor, fm: FunctionalModel) -> None:
    for t in _tensors(x):
        if t.ndim == 0 or t.shape[0] != y.shape[0]:
            shape = tuple(t.shape)
            raise ValueError(f"inputs and targets disagree on the number of samples: an input "
                             f"of shape {shape} vs {y.shape[0]} targets")
        if t.device != fm.device:
            raise ValueError(f"inputs are on {t.device} but the model's parameters are on "
                             f"{fm.device}; move them with .to({str(fm.device)!r})")
        if t.is_floating_point():
            if t.dtype != fm.dtype:
                raise ValueError(f"inputs have dtype {t.dtype} but the model's parameters are "
                                 f"{fm.dtype}; convert one of them (e.g. inputs.to({fm.dtype}))")
            if not bool(torch.isfinite(t).all()):
                raise ValueError("inputs contain NaN or inf values; clean or impute them "
                                 "before measuring")
    if y.device != fm.device:
        raise ValueError(f"targets are on {y.device} but the model's parameters are on "
                         f"{fm.device}; move them with .to({str(fm.device)!r})")


def _probe(fm: FunctionalModel, x: Inputs, forward_mode: bool) -> int:
    """A forward pass on two samples (and, for forward-mode users, one ``jvp``): the output
    rule and shape, and whether forward-mode AD is available; returns K."""
    x2 = _slice(x, slice(0, 2))
    b = num_samples_of(x2)
    z = fm.logits(fm.params, x2)
    if z.ndim != 2 or z.shape[0] != b:
        raise ValueError(f"the model must map a batch of inputs to logits of shape "
                         f"(batch, classes); for a batch of {b} it returned {tuple(z.shape)}"
                         " (pass output=<callable> to pick the logits)")
    if forward_mode:
        try:
            jvp(lambda p: fm.logits(p, x2), (fm.params,), (fm.params,))
        except NotImplementedError as err:
            raise UnsupportedModelError(
                f"the model uses an operation without forward-mode derivatives ({err}). For "
                "attention use an exact implementation: HuggingFace attn_implementation="
                "'eager', nn.MultiheadAttention with need_weights=True, or "
                "torch.nn.attention.sdpa_kernel(SDPBackend.MATH)") from None
    return int(z.shape[1])


# ----------------------------------------------------------------------------- the data pass


def check_positive_int(name: str, value: Any, *, none: str | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive ``int`` (``bool`` is not); with
    ``none`` given, ``None`` is accepted too and ``none`` says what it means in the message
    (e.g. ``"or None"``)."""
    if value is None and none is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' ' + none if none else ''}, "
                         f"got {value!r}")


def chunks(data: Any, fm: FunctionalModel, batch_size: int | None = None, *,
           forward_mode: bool = True) -> Iterator[Batch]:
    """Validated ``(inputs, targets)`` chunks (targets int64) of ``data`` for ``fm``.

    Eval mode: each batch cut into chunks of ``batch_size`` (default ``DEFAULT_BATCH_SIZE``).
    Train mode: each batch exactly as given (at least 2 samples each). Each batch is checked
    (sample counts, dtype, device, finiteness, labels) before it is yielded; the first one
    also by a 2-sample probe of the model (output shape; forward-mode AD when
    ``forward_mode``). Raises ``ValueError("data is empty")`` after a pass with no sample.
    Iterate inside ``with fm.mode():``.
    """
    check_positive_int("batch_size", batch_size, none="or None")
    size = batch_size or DEFAULT_BATCH_SIZE
    k = None
    seen = 0
    for x, y in _source_batches(data, size):
        y = _check_targets(y)
        _check_inputs(x, y, fm)
        n = y.shape[0]
        if n == 0:
            continue
        if fm.train_mode and n < 2:
            raise ValueError("a batch of 1 sample in train mode: BatchNorm needs at least 2 "
                             "samples for its batch statistics; use batches of >= 2 samples "
                             "(train mode never re-chunks them) or train_mode=False")
        if k is None:
            k = _probe(fm, x, forward_mode)
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise ValueError(f"targets must lie in [0, {k}) for a model with {k} outputs; got "
                             f"values in [{int(y.min())}, {int(y.max())}]")
        step = n if fm.train_mode else size
        for start in range(0, n, step):
            sl = slice(start, start + step)
            yield _slice(x, sl), y[sl]
        seen += n
    if seen == 0:
        raise ValueError("data is empty: no samples to measure on")


def count_samples(data: Any) -> int:
    """The number of samples in any accepted ``data`` (one pass over a loader's batches)."""
    return sum(int(_check_targets(y).shape[0]) for _, y in _source_batches(data,
                                                                          DEFAULT_BATCH_SIZE))


def take_samples(data: Any, n: int) -> Batch:
    """The first ``n`` samples (or all, if fewer) of any accepted ``data`` as one
    ``(inputs, targets)`` pair."""
    check_positive_int("the number of samples", n)
    xs, ys, have = [], [], 0
    for x, y in _source_batches(data, n):
        take = min(n - have, _check_targets(y).shape[0])
        xs.append(_slice(x, slice(0, take)))
        ys.append(y[:take])
        have += take
        if have >= n:
            break
    if have == 0:
        raise ValueError("data is empty: no samples to take")
    return _concat(xs), torch.cat(ys).to(torch.int64)


# ----------------------------------------------------------------------------- statistics


class BatchStatistics:
    r"""Sums over samples of the standard statistics of logits ``z`` (B, K) and targets:
    cross-entropy, correct predictions, softmax outputs (for :math:`\bar p`), label counts
    (for q), prediction entropy and exactly-zero logits. Means are sums / S (samples, never
    batches). All sums in float64 on the CPU."""

    def __init__(self) -> None:
        self.num_samples = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.entropy_sum = 0.0
        self.zero_logits = 0
        self.num_logits = 0
        self.probs_sum: Tensor | None = None
        self.counts: Tensor | None = None

    def add(self, z: Tensor, y: Tensor) -> None:
        z = z.detach()
        k = z.shape[1]
        logp = torch.log_softmax(z, dim=-1)
        probs = logp.exp()
        self.loss_sum += float(-logp.gather(1, y[:, None]).sum(dtype=torch.float64))
        plogp = torch.where(probs > 0, probs * logp, torch.zeros_like(probs))
        self.entropy_sum += float(-plogp.sum(dtype=torch.float64))
        self.correct += int((z.argmax(-1) == y).sum())
        self.zero_logits += int((z == 0).sum())
        self.num_logits += z.numel()
        p_sum = probs.sum(0, dtype=torch.float64).cpu()
        c_sum = torch.bincount(y.cpu(), minlength=k).to(torch.float64)
        self.probs_sum = p_sum if self.probs_sum is None else self.probs_sum + p_sum
        self.counts = c_sum if self.counts is None else self.counts + c_sum
        self.num_samples += y.shape[0]

    def _mean(self, value):
        if self.num_samples == 0:
            raise ValueError("data is empty: no samples were accumulated")
        return value / self.num_samples

    @property
    def loss(self) -> float:
        return self._mean(self.loss_sum)

    @property
    def accuracy(self) -> float:
        return self._mean(self.correct)

    @property
    def mean_probs(self) -> Tensor:
        r""":math:`\bar p = \frac1S\sum_s p_s` (K,)."""
        return self._mean(self.probs_sum)

    @property
    def class_prior(self) -> Tensor:
        """q: label frequencies (K,)."""
        return self._mean(self.counts)

    @property
    def mean_entropy(self) -> float:
        return self._mean(self.entropy_sum)

    @property
    def zero_logit_fraction(self) -> float:
        return self.zero_logits / self.num_logits if self.num_logits else float("nan")
