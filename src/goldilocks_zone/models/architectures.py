"""The networks measured by the three papers, as plain ``nn.Sequential`` models.

All models take a batch of inputs of shape ``(N, *in_shape)`` and return logits ``(N, K)``.
Fully-connected models start with ``nn.Flatten`` so they accept image-shaped inputs
(``(1, 28, 28)``) as well as flat ones (``(784,)``). Convolutional models need
``in_shape = (C, H, W)``.

Every builder constructs its layers on the ``meta`` device (no memory, no random draws); the
factory :func:`goldilocks_zone.models.create` then materialises and initialises them with a
private generator, so building a model never advances torch's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,  # negative slope 0.01
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
_ACTIVATION_ALIASES = {"leaky_relu": "leaky-relu", "leakyrelu": "leaky-relu", "linear": "identity",
                       "none": "identity"}


def activation_factory(name: str) -> Callable[[], nn.Module]:
    """The activation module class for ``name`` (relu, leaky-relu, tanh, sigmoid, identity)."""
    key = name.lower()
    key = _ACTIVATION_ALIASES.get(key, key)
    try:
        return ACTIVATIONS[key]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def _image_shape(name: str, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"model {name!r} is convolutional and needs in_shape=(C, H, W), "
                         f"got {in_shape}; use an MLP ('mlp', 'lenet-300-100') for flat inputs")
    return in_shape  # type: ignore[return-value]


def mlp(in_shape: tuple[int, ...], num_classes: int, *, activation: str, bias: bool,
        widths: Sequence[int] = (100, 100)) -> nn.Sequential:
    """Flatten → [Linear(·, w) → act] for each w in ``widths`` → Linear(·, K).

    ``len(widths) + 1`` weight layers; ``widths=()`` gives a linear (softmax-regression) model.
    """
    act = activation_factory(activation)
    widths = tuple(int(w) for w in widths)
    if any(w <= 0 for w in widths):
        raise ValueError(f"widths must be positive, got {widths}")
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(in_shape)
    for width in widths:
        layers += [nn.Linear(fan_in, width, bias=bias), act()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes, bias=bias))
    return nn.Sequential(*layers)


def demo(in_shape: tuple[int, ...], num_classes: int, *, activation: str,
         bias: bool) -> nn.Sequential:
    """P1's demo model: Linear(in, 32) → act → Linear(32, 32) → act → Linear(32, K) (L = 3).

    As in the paper (on the 2-D ``circles`` data, K = 3): no biases, ReLU and Kaiming-normal
    weights, the defaults of :func:`goldilocks_zone.models.create`; D = 2·32 + 32·32 + 32·3 =
    1,184 parameters.
    """
    return mlp(in_shape, num_classes, activation=activation, bias=bias, widths=(32, 32))


def lenet_300_100(in_shape: tuple[int, ...], num_classes: int, *, activation: str,
                  bias: bool) -> nn.Sequential:
    """LeNet-300-100: Linear(784, 300) → act → Linear(300, 100) → act → Linear(100, K) (L = 3).

    266,200 parameters without biases on 28×28 inputs and K = 10.
    """
    return mlp(in_shape, num_classes, activation=activation, bias=bias, widths=(300, 100))


def lenet_5(in_shape: tuple[int, ...], num_classes: int, *, activation: str,
            bias: bool) -> nn.Sequential:
    """LeNet-5 (L = 5 weight layers), no padding:

    Conv(C, 6, 5) → act → AvgPool(2) → Conv(6, 16, 5) → act → AvgPool(2) → Flatten →
    Linear(16·h·w, 120) → act → Linear(120, 84) → act → Linear(84, K).

    On 3×32×32 (CIFAR-10) the flattened map is 16×5×5 = 400; on 1×28×28 it is 16×4×4 = 256.
    Bias-free parameter counts (K = 10): 61,770 on 3×32×32, 61,470 on 1×32×32, 44,190 on 1×28×28.
    """
    c, h, w = _image_shape("lenet-5", in_shape)
    act = activation_factory(activation)
    h, w = (h - 4) // 2, (w - 4) // 2
    h, w = (h - 4) // 2, (w - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"lenet-5 needs inputs of at least 16×16 pixels, got {in_shape}")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, bias=bias), act(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, bias=bias), act(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * h * w, 120, bias=bias), act(),
        nn.Linear(120, 84, bias=bias), act(),
        nn.Linear(84, num_classes, bias=bias),
    )


def small_cnn(in_shape: tuple[int, ...], num_classes: int, *, activation: str, bias: bool,
              channels: Sequence[int] = (16, 32, 32)) -> nn.Sequential:
    """A small CNN in the style of P2's CIFAR-10 network (L = len(channels) + 1):

    for each c in ``channels`` (default 16, 32, 32): Conv(·, c, 3, padding=1) → act → AvgPool(2);
    then Flatten → Linear(c_last·h·w, K).

    Spatial size halves (rounding down) at each stage: 32 → 16 → 8 → 4 on CIFAR-10, giving a
    32·4·4 = 512-feature readout; 28 → 14 → 7 → 3 on 28×28 inputs. Average pooling keeps the
    bias-free ReLU version positively homogeneous. Bias-free parameter count on 3×32×32 with
    K = 10: 432 + 4,608 + 9,216 + 5,120 = 19,376.
    """
    c, h, w = _image_shape("small-cnn", in_shape)
    channels = tuple(int(ch) for ch in channels)
    if not channels or any(ch <= 0 for ch in channels):
        raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels}")
    act = activation_factory(activation)
    layers: list[nn.Module] = []
    for out_c in channels:
        if h < 2 or w < 2:
            raise ValueError(f"small-cnn with {len(channels)} stages needs larger inputs than "
                             f"{in_shape}")
        layers += [nn.Conv2d(c, out_c, 3, padding=1, bias=bias), act(), nn.AvgPool2d(2)]
        c, h, w = out_c, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=bias)]
    return nn.Sequential(*layers)
