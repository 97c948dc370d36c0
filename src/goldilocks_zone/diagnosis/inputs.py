"""What the diagnosis is given: data in the formats users have, dtype/device names, and the
two parameter selections it needs (trainable parameters for the basis, weight matrices for
the scale axis).

All data-format handling lives in :func:`first_samples`, one function, so that it can be
pointed at the engine's own sample helper once the engine accepts every format.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DTYPES", "first_samples", "parse_device", "parse_dtype", "scaled_parameter_names",
           "trainable_parameter_names"]

#: dtype names accepted on the command line.
DTYPES = {"float64": torch.float64, "float32": torch.float32}

#: Layers whose ``weight`` is scaled along the scale axis of a non-homogeneous model: the
#: linear maps (matrices and kernels), whose scale sets the size of the pre-activations.
WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d)


def parse_dtype(name: str) -> torch.dtype:
    """``"float64"``/``"float32"`` -> the torch dtype (ValueError naming the choices)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


def parse_device(name: str | None) -> torch.device:
    """A device name (``cpu``, ``cuda``, ``cuda:1``); ValueError when it is unavailable."""
    try:
        device = torch.device(name or "cpu")
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def _subsample(inputs: Tensor, targets: Tensor, n: int | None, seed: int
               ) -> tuple[Tensor, Tensor]:
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets disagree on the number of samples: "
                         f"{inputs.shape[0]} vs {targets.shape[0]}")
    if n is None or inputs.shape[0] <= n:
        return inputs, targets
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(inputs.shape[0], generator=gen)[:n]
    return inputs[idx.to(inputs.device)], targets[idx.to(targets.device)]


def _is_pair(obj: Any) -> bool:
    return (isinstance(obj, (tuple, list)) and len(obj) == 2
            and all(isinstance(t, Tensor) for t in obj))


def first_samples(data: Any, n: int | None, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` samples of ``data`` as one ``(inputs, targets)`` pair of tensors.

    Accepted formats, and which samples are taken:

    * ``(inputs, targets)`` tensors, or an object with ``.inputs`` and ``.targets`` (the
      package's :class:`goldilocks_zone.data.Dataset`): a random subsample of ``n``, drawn
      from ``seed``;
    * a map-style ``torch.utils.data.Dataset`` (``TensorDataset`` included) whose items are
      ``(input, target)`` pairs: ``n`` random indices drawn from ``seed``, items stacked;
    * any other iterable of ``(inputs, targets)`` batches (a ``DataLoader``): the first ``n``
      samples in the order the loader gives them (its own shuffling and seed apply).

    ``n=None`` takes everything. Raises TypeError for anything else (dict batches included,
    until the engine accepts them), ValueError for empty data.
    """
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"num_samples must be a positive integer or None, got {n!r}")
    if _is_pair(data):
        return _subsample(data[0], data[1], n, seed)
    if isinstance(getattr(data, "inputs", None), Tensor) and isinstance(
            getattr(data, "targets", None), Tensor):
        return _subsample(data.inputs, data.targets, n, seed)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__") and hasattr(
            data, "__getitem__"):
        size = len(data)
        if size == 0:
            raise ValueError("data is empty: the Dataset has no samples")
        if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
            return _subsample(data.tensors[0], data.tensors[1], n, seed)
        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(size, generator=gen) if n is not None and n < size \
            else torch.arange(size)
        items = [data[int(i)] for i in order[: n or size]]  # loading, not a hot path
        if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items[:1]):
            raise TypeError("a Dataset's items must be (input, target) pairs; got "
                            f"{type(items[0]).__name__}")
        xs = torch.stack([torch.as_tensor(it[0]) for it in items])
        ys = torch.as_tensor([int(it[1]) for it in items])
        return xs, ys
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor, dict)):
        xs_list: list[Tensor] = []
        ys_list: list[Tensor] = []
        count = 0
        for batch in data:
            if isinstance(batch, dict):
                raise TypeError("dict batches are not supported by diagnose yet; pass "
                                "(inputs, targets) pairs")
            if not _is_pair(batch):
                raise TypeError("data must yield (inputs, targets) pairs of tensors; got a "
                                f"batch of type {type(batch).__name__}")
            xs_list.append(batch[0])
            ys_list.append(batch[1])
            count += batch[0].shape[0]
            if n is not None and count >= n:
                break
        if not xs_list:
            raise ValueError("data is empty: the loader yielded no batches")
        xs, ys = torch.cat(xs_list), torch.cat(ys_list)
        return (xs[:n], ys[:n]) if n is not None else (xs, ys)
    raise TypeError("data must be (inputs, targets) tensors, a goldilocks_zone.data Dataset, a "
                    "torch Dataset/TensorDataset of (input, target) pairs or a DataLoader of "
                    f"such batches; got {type(data).__name__}")


def trainable_parameter_names(model: nn.Module, trainable_only: bool) -> list[str]:
    """Names (``named_parameters`` order, tied weights once) of the parameters the random
    basis spans: those with ``requires_grad`` when ``trainable_only``, else all."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad or not trainable_only]


def scaled_parameter_names(model: nn.Module, homogeneous: bool) -> list[str]:
    """Parameters multiplied by α along the scale axis.

    Positively homogeneous models: all of them (then f(x; αθ) = α^L f(x; θ)). Other models:
    the ``weight`` of every Linear/Bilinear/Conv/ConvTranspose layer — the matrices and kernels
    whose scale sets the size of the pre-activations — while biases, normalisation affine
    parameters, embeddings and any other parameters keep their values.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    if homogeneous:
        return list(names.values())
    chosen = {id(m.weight) for m in model.modules()
              if isinstance(m, WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None),
                                                             nn.Parameter)}
    return [name for pid, name in names.items() if pid in chosen]
