"""Is a network positively homogeneous in its parameters, and of which degree?

A network is positively homogeneous of degree L when f(x; αθ) = α^L f(x; θ) for every α > 0.
A chain of modules has this property when each module with parameters is a bias-free linear
map of its input (Linear, Conv: degree 1 in its weight, degree 1 in its input) and each module
without parameters is positively homogeneous of degree 1 in its input (ReLU, LeakyReLU,
Identity, Flatten, average and max pooling, dropout, padding with zeros). L is then the number
of weight layers. Max pooling qualifies because max(αx) = α max(x) for α > 0.

The check is structural and conservative: it follows ``nn.Sequential`` containers (whose
forward pass is a known chain) and answers "not homogeneous" — with the reason — for biases,
saturating or smooth activations (tanh, sigmoid, GELU, ...), normalisation layers, and any
module whose forward pass it cannot read. A custom block may declare itself by setting an
integer attribute ``positive_homogeneity_degree`` (its degree in its own parameters, assuming
it is positively homogeneous of degree 1 in its input).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# Parameter-free modules that are positively homogeneous of degree 1 in their input.
_PASS_THROUGH = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
)
# Weight layers: degree 1 in their weight and (without bias) linear in their input.
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                  nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class Homogeneity:
    """Result of :func:`homogeneity`.

    ``degree`` is L in f(x; αθ) = α^L f(x; θ) when ``is_homogeneous``, else ``None``;
    ``reason`` says why, naming the offending module when there is one.
    """

    is_homogeneous: bool
    degree: int | None
    reason: str

    def __bool__(self) -> bool:
        return self.is_homogeneous


class _NotHomogeneous(Exception):
    pass


def _degree(module: nn.Module, path: str) -> int:
    where = f"'{path}' ({type(module).__name__})" if path else type(module).__name__
    declared = getattr(module, "positive_homogeneity_degree", None)
    if declared is not None:
        if not isinstance(declared, int) or declared < 0:
            raise _NotHomogeneous(f"{where} declares an invalid degree {declared!r}")
        return declared
    if isinstance(module, _WEIGHT_LAYERS):
        if module.bias is not None:
            raise _NotHomogeneous(f"{where} has a bias; biases break homogeneity")
        return 1
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        if any(True for _ in module.parameters(recurse=False)):
            raise _NotHomogeneous(f"{where} holds parameters outside its layers")
        return sum(_degree(child, f"{path}.{name}" if path else name)
                   for name, child in module.named_children())
    if isinstance(module, _PASS_THROUGH):
        if any(True for _ in module.parameters()):
            raise _NotHomogeneous(f"{where} has parameters")
        return 0
    if isinstance(module, (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Hardtanh,
                           nn.ReLU6, nn.Mish, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid,
                           nn.Softsign, nn.LogSigmoid, nn.PReLU)):
        raise _NotHomogeneous(f"{where} is not positively homogeneous")
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        raise _NotHomogeneous(f"{where} is a normalisation layer (scale-invariant input, "
                              f"affine output)")
    raise _NotHomogeneous(f"cannot verify {where}: unknown module type (set "
                          f"`positive_homogeneity_degree` on it if you know its degree)")


def homogeneity(model: nn.Module) -> Homogeneity:
    """Whether ``model`` is positively homogeneous in its parameters, and its degree L.

    >>> homogeneity(create("lenet-300-100", (784,), 10))
    Homogeneity(is_homogeneous=True, degree=3, reason='3 bias-free weight layers ...')
    """
    try:
        degree = _degree(model, "")
    except _NotHomogeneous as exc:
        return Homogeneity(False, None, str(exc))
    return Homogeneity(True, degree, f"{degree} bias-free weight layers joined by positively "
                                     f"homogeneous modules: f(x; αθ) = α^{degree} f(x; θ)")
