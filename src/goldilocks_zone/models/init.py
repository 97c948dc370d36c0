r"""Seeded weight initialisation that never touches torch's global random state.

Every scheme draws from an explicit :class:`torch.Generator`. For a weight with fan-in
n_in and fan-out n_out (a convolution has n_in = C_in k_h k_w, n_out = C_out k_h k_w):

- ``"kaiming"`` (P1): W ~ N(0, 2 / n_in) (normal, fan-in mode, gain √2), whatever the
  activation;
- ``"kaiming-uniform"``: U(-a, a) with a = √(6 / n_in) (same variance);
- ``"xavier"`` (P3, Glorot normal): W ~ N(0, 2 / (n_in + n_out));
- ``"xavier-uniform"`` (Glorot uniform): U(-a, a) with a = √(6 / (n_in + n_out)) (same
  variance).

Samples are drawn in float64 and rounded to the parameter dtype, so a seed gives the same
model in float32 and float64 up to rounding. Biases, when a model has them, start at zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from goldilocks_zone.curvature.random import torch_generator

INIT_SCHEMES = ("kaiming", "kaiming-uniform", "xavier", "xavier-uniform")

# Largest seed drawn from the global generator when the caller passes ``seed=None``.
_MAX_SEED = 2**62


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``.

    ``seed=None`` draws one seed from torch's global generator, so ``torch.manual_seed`` still
    makes unseeded models reproducible (this is the only case that advances the global state).
    """
    if seed is None:
        seed = int(torch.randint(0, _MAX_SEED, (1,)).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return torch_generator(seed)


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in, *kernel) weight."""
    if weight.dim() < 2:
        raise ValueError(f"fan-in/fan-out need a weight with >= 2 dims, "
                         f"got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def weight_std(weight: Tensor, scheme: str) -> float:
    """Standard deviation that ``scheme`` gives the entries of ``weight``."""
    fan_in, fan_out = fans(weight)
    if scheme in ("kaiming", "kaiming-uniform"):
        return math.sqrt(2.0 / fan_in)
    if scheme in ("xavier", "xavier-uniform"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    raise ValueError(f"unknown init {scheme!r}; known: {', '.join(INIT_SCHEMES)}")


@torch.no_grad()
def initialise(model: nn.Module, scheme: str, generator: torch.Generator) -> nn.Module:
    """Fill every parameter of ``model`` in place (weights by ``scheme``, biases with zeros).

    Called by :func:`goldilocks_zone.models.create` on a freshly built model, never on a user's
    model. Parameters are visited in ``model.named_parameters()`` order, so a seed fixes the
    whole model. Raises for parameters it does not know how to fill (so nothing is left as
    uninitialised memory); an unknown ``scheme`` raises in :func:`weight_std`.
    """
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if pname == "weight" and param.dim() >= 2:
                std = weight_std(param, scheme)
                if scheme.endswith("uniform"):
                    bound = math.sqrt(3.0) * std
                    sample = torch.rand(param.shape, generator=generator, dtype=torch.float64)
                    param.copy_((2.0 * sample - 1.0) * bound)
                else:
                    sample = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                    param.copy_(sample * std)
            elif pname == "bias":
                param.zero_()
            else:
                raise ValueError(f"do not know how to initialise parameter "
                                 f"{module_name + '.' if module_name else ''}{pname}")
    return model
