"""Helpers shared by experiment modules: dtype/device parsing, problem set-up, grids."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64,
           "float": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use 'float64' or 'float32'") from None


def torch_device(name: str | None) -> torch.device:
    device = torch.device(name or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


@dataclass
class Problem:
    """A model and the data it is measured on, ready for the curvature engine."""

    model: nn.Module
    inputs: Tensor
    targets: Tensor
    num_classes: int
    dataset: Any  # the object returned by goldilocks_zone.data.load (metadata, fingerprint)

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        return self.inputs, self.targets

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_problem(*, model: str, dataset: str, num_samples: int | None, seed: int,
                 dtype: str = "float64", device: str | None = "cpu", activation: str = "relu",
                 bias: bool = False, init: str = "kaiming", split: str = "train",
                 data_seed: int | None = 0, model_kwargs: dict | None = None) -> Problem:
    """Load ``dataset`` (subsampled to ``num_samples`` with ``data_seed``) and build ``model``
    with ``seed`` in ``dtype`` on ``device``."""
    from goldilocks_zone import data as data_lib
    from goldilocks_zone import models as model_lib

    ds = data_lib.load(dataset, split=split, num_samples=num_samples, seed=data_seed)
    dt, dev = torch_dtype(dtype), torch_device(device)
    net = model_lib.create(model, tuple(ds.input_shape), ds.num_classes, activation=activation,
                           bias=bias, init=init, seed=seed, **(model_kwargs or {}))
    net = net.to(dtype=dt, device=dev)
    return Problem(model=net, inputs=ds.inputs.to(dtype=dt, device=dev),
                   targets=ds.targets.to(device=dev), num_classes=ds.num_classes, dataset=ds)


def config_problem(config: Any, seed: int) -> Problem:
    """:func:`load_problem` from an experiment config's ``model``, ``dataset``, ``num_samples``,
    ``dtype``, ``device``, ``activation``, ``init`` and ``data_seed`` fields, the model built
    with ``seed``."""
    return load_problem(model=config.model, dataset=config.dataset,
                        num_samples=config.num_samples, seed=seed, dtype=config.dtype,
                        device=config.device, activation=config.activation, init=config.init,
                        data_seed=config.data_seed)


def log_grid(lo_exponent: float, hi_exponent: float, per_decade: int) -> tuple[float, ...]:
    """10**e for e from ``lo_exponent`` to ``hi_exponent`` inclusive, ``per_decade`` points
    per decade (4 gives P1's quarter-decade grid)."""
    n = int(round((hi_exponent - lo_exponent) * per_decade)) + 1
    return tuple(float(v) for v in np.logspace(lo_exponent, hi_exponent, n))


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` intra-op CPU threads (0: leave torch's setting), restoring
    the previous setting afterwards. Small networks run several times faster on one thread than on
    two competing ones, especially on a shared machine."""
    if count < 0:
        raise ValueError(f"threads must be >= 0, got {count}")
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


R = TypeVar("R")


def with_cpu_threads(run: Callable[[Any, Any], R]) -> Callable[[Any, Any], R]:
    """An experiment's ``run(config, ctx)`` made to run inside :func:`cpu_threads`
    ``(config.threads)``."""

    @functools.wraps(run)
    def threaded(config: Any, ctx: Any) -> R:
        with cpu_threads(config.threads):
            return run(config, ctx)

    return threaded
