"""The model registry: ``create(name, in_shape, num_classes, ...)`` and ``names()``.

``create`` also builds a user's model from a ``"package.module:factory"`` spec (see
:func:`create`); ``load_model`` is the command line's name for it.
"""

from __future__ import annotations

import inspect
import pkgutil
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
           activation: str | None = None, bias: bool | None = None, init: str | None = None,
           seed: int | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` — or a user's ``"package.module:factory"`` — for
    inputs ``(N, *in_shape)`` and ``num_classes`` logits.

    Args:
        name: one of :func:`names` (``demo``, ``lenet-300-100``, ``lenet-5``, ``small-cnn``,
            ``mlp``), or ``"package.module:factory"`` (resolved with
            :func:`pkgutil.resolve_name`; ``factory`` may be a dotted attribute path). A
            factory is called with ``in_shape=`` (or its synonym ``input_shape=``) and
            ``num_classes=`` for each of those parameter names it accepts, plus ``**kwargs``,
            and must return an ``nn.Module``.
        in_shape: shape of one input without the batch dimension: ``(2,)``, ``(784,)``,
            ``(1, 28, 28)``, ``(3, 32, 32)``. MLPs flatten internally, so image shapes are fine.
        num_classes: K, the number of logits.
        activation: ``relu`` (default), ``leaky-relu``, ``tanh``, ``sigmoid`` or ``identity``
            (registry models only; with a factory only the defaults are accepted, likewise
            for ``bias`` and ``init``).
        bias: give weight layers biases (initialised to zero; default False, as in P1's
            models).
        init: ``kaiming`` (default; N(0, 2/fan_in), P1), ``xavier`` (N(0, 2/(fan_in+fan_out)),
            P3), ``kaiming-uniform`` or ``xavier-uniform`` (same variances).
        seed: fixes the initial weights. Registry models draw from a private generator; a
            factory is called under ``torch.manual_seed(seed)`` inside
            :func:`torch.random.fork_rng`, so the same seed gives the same factory model and
            the caller's global random state is left as it was. ``seed=None``: registry models
            draw one seed from the global state; factories use the global state as it is.
        **kwargs: architecture options (``widths=`` for ``mlp``, ``channels=`` for
            ``small-cnn``), or extra keyword arguments of a factory.

    Returns:
        registry models: a plain float32 ``nn.Sequential`` on the CPU (call ``.to(dtype)`` as
        needed); factories: whatever module the factory returns.

    Raises:
        ValueError: unknown name (the message lists the known ones), a spec that cannot be
            imported, or registry-only options given with a factory.
    """
    if isinstance(name, str) and ":" in name:
        # the registry defaults (which callers such as experiment configs pass explicitly)
        # are harmless; anything else would be silently ignored, so it is refused
        given = [k for k, v, default in (("activation", activation, "relu"),
                                         ("bias", bias, False), ("init", init, "kaiming"))
                 if v is not None and v != default]
        if given:
            raise ValueError(f"{', '.join(given)} apply to registry models only; a factory "
                             f"({name!r}) builds its model itself (leave them at their "
                             "defaults)")
        return _from_factory(name, in_shape, num_classes, seed=seed, **kwargs)
    try:
        spec = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}, or "
                         "package.module:factory") from None
    activation = "relu" if activation is None else activation
    init = "kaiming" if init is None else init
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


def resolve_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by ``"package.module:factory"`` (imported, not called).

    Raises ValueError naming the spec when it cannot be imported or is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model {spec!r}: expected package.module:factory")
    try:
        factory = pkgutil.resolve_name(spec)
    except ImportError as exc:
        raise ValueError(f"model {spec!r}: cannot import {module_name!r} ({exc})") from None
    except (AttributeError, ValueError):
        raise ValueError(f"model {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    return factory


def _from_factory(spec: str, in_shape, num_classes: int, *, seed: int | None,
                  **kwargs) -> nn.Module:
    factory = resolve_factory(spec)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    call_kwargs = dict(kwargs)
    shape_name = next((n for n in ("in_shape", "input_shape") if n in params), None)
    if shape_name is not None:
        call_kwargs[shape_name] = _normalise_shape(in_shape)
    if "num_classes" in params:
        call_kwargs["num_classes"] = int(num_classes)
    if seed is None:
        model = factory(**call_kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = factory(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {spec!r}: the factory returned {type(model).__name__}, not a "
                         "torch.nn.Module")
    return model


def load_model(spec: str, in_shape: tuple[int, ...] | int, num_classes: int, *,
               activation: str | None = None, init: str | None = None,
               seed: int | None = 0, **kwargs) -> nn.Module:
    """The command line's entry point: :func:`create` with ``seed=0`` by default."""
    return create(spec, in_shape, num_classes, activation=activation, init=init, seed=seed,
                  **kwargs)
