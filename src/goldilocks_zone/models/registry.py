"""The model registry: ``create(name, in_shape, num_classes, ...)`` and ``names()``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from goldilocks_zone.models import architectures
from goldilocks_zone.models.init import INIT_SCHEMES, initialise, make_generator


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: ``build(in_shape, num_classes, activation=, bias=, **kw)``."""

    name: str
    build: Callable[..., nn.Module]
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, build: Callable[..., nn.Module], summary: str) -> None:
    """Add an architecture under ``name`` (its builder must accept ``activation`` and ``bias``)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelSpec(name, build, summary)


register("demo", architectures.demo,
         "P1's demo net (Circles): bias-free MLP in-32-32-K, ReLU, Kaiming-normal")
register("lenet-300-100", architectures.lenet_300_100, "MLP 784-300-100-K (FashionMNIST, P1)")
register("lenet-5", architectures.lenet_5, "LeNet-5 with average pooling (CIFAR-10, P1)")
register("small-cnn", architectures.small_cnn, "3 conv stages 16-32-32 + linear readout (P2)")
register("mlp", architectures.mlp, "fully-connected net, kwarg widths=(...) (P3)")


def names() -> list[str]:
    """Registered model names."""
    return list(_REGISTRY)


def _normalise_shape(in_shape) -> tuple[int, ...]:
    if isinstance(in_shape, int):
        in_shape = (in_shape,)
    try:
        shape = tuple(int(s) for s in in_shape)
    except TypeError:
        raise TypeError(f"in_shape must be a tuple of ints such as (784,) or (3, 32, 32), "
                        f"got {in_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"in_shape must be non-empty with positive sizes, got {in_shape!r}")
    return shape


def create(name: str, in_shape: tuple[int, ...] | int, num_classes: int, *,
           activation: str = "relu", bias: bool = False, init: str = "kaiming",
           seed: int | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` for inputs ``(N, *in_shape)`` and ``num_classes``
    logits, initialised with ``init`` from a private generator seeded by ``seed``.

    Args:
        name: one of :func:`names` (``demo``, ``lenet-300-100``, ``lenet-5``, ``small-cnn``,
            ``mlp``).
        in_shape: shape of one input without the batch dimension: ``(2,)``, ``(784,)``,
            ``(1, 28, 28)``, ``(3, 32, 32)``. MLPs flatten internally, so image shapes are fine.
        num_classes: K, the number of logits.
        activation: ``relu``, ``leaky-relu``, ``tanh``, ``sigmoid`` or ``identity``.
        bias: give weight layers biases (initialised to zero). P1's models have none.
        init: ``kaiming`` (N(0, 2/fan_in), P1), ``xavier`` (N(0, 2/(fan_in+fan_out)), P3),
            ``kaiming-uniform`` or ``xavier-uniform`` (same variances).
        seed: fixes the initial weights. Building never advances torch's global random state,
            except that ``seed=None`` draws one seed from it (so ``torch.manual_seed`` works).
        **kwargs: architecture options (``widths=`` for ``mlp``, ``channels=`` for
            ``small-cnn``).

    Returns:
        a plain float32 ``nn.Sequential`` on the CPU (call ``.to(dtype)`` as needed).
    """
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}") from None
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INIT_SCHEMES)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    shape = _normalise_shape(in_shape)
    allowed = [p for p in inspect.signature(spec.build).parameters
               if p not in ("in_shape", "num_classes", "activation", "bias")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"model {name!r} got unexpected options {unknown}; it accepts "
                        f"{allowed or 'no options'}")
    generator = make_generator(seed)
    with torch.device("meta"):  # no allocation and no random draws while building
        model = spec.build(shape, int(num_classes), activation=activation, bias=bool(bias),
                           **kwargs)
    model = model.to_empty(device="cpu").to(torch.get_default_dtype())
    return initialise(model, init, generator)
