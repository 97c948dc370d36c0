"""What the diagnosis is given: data in the formats users have (all handled by
:func:`first_samples`), dtype/device names, and the two parameter selections it needs
(trainable parameters for the basis, weight matrices for the scale axis)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from goldilocks_zone.curvature.batches import check_positive_int, take_samples
from goldilocks_zone.curvature.functional import Inputs
from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.training.subspace import check_samples

#: "everything" for loaders that do not know their length.
MAX_TAKE = 2**62

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


def first_samples(data: Any, n: int | None, *, seed: int = 0) -> tuple[Inputs, Tensor]:
    """``n`` samples of ``data`` as one ``(inputs, targets)`` pair (inputs: a tensor, a tuple
    or a dict of tensors, as the model takes them).

    Which samples are taken:

    * ``(inputs, targets)`` tensors, an object with ``.inputs`` and ``.targets`` (the
      package's :class:`goldilocks_zone.data.Dataset`), a ``TensorDataset`` or any map-style
      ``Dataset``: a random subsample of ``n``, drawn from ``seed``;
    * any other format the engine accepts (a ``DataLoader`` or other
      iterable of pairs or of HuggingFace-style dict batches with ``"labels"``): the first
      ``n`` samples in the order the data gives them (a loader's own shuffling applies).

    ``n=None`` takes everything. The format rules and their errors are the engine's
    (:func:`goldilocks_zone.curvature.batches.take_samples`).
    """
    check_positive_int("num_samples", n, none="or None")
    tensors = None
    if isinstance(getattr(data, "inputs", None), Tensor) and isinstance(
            getattr(data, "targets", None), Tensor):
        tensors = (data.inputs, data.targets)
    elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        tensors = tuple(data.tensors)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        tensors = (data[0], data[1])
    if tensors is None:
        if (n is not None and isinstance(data, torch.utils.data.Dataset)
                and not isinstance(data, torch.utils.data.IterableDataset)
                and hasattr(data, "__len__") and len(data) > n):
            gen = torch_generator(int(seed))  # a random subset, as for tensors
            data = torch.utils.data.Subset(data, torch.randperm(len(data), generator=gen)[:n])
        return take_samples(data, n or MAX_TAKE)
    inputs, targets = tensors
    check_samples(inputs, targets, empty="data is empty: no samples to diagnose")
    if n is None or inputs.shape[0] <= n:
        return inputs, targets
    gen = torch_generator(int(seed))
    idx = torch.randperm(inputs.shape[0], generator=gen)[:n]
    return inputs[idx.to(inputs.device)], targets[idx.to(targets.device)]


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
