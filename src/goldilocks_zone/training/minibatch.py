r"""Minibatch SGD on functional parameters (P2's training runs): the model is evaluated through
:class:`~goldilocks_zone.curvature.functional.FunctionalModel` and never changed; the
trajectory yields new parameter dicts."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad

from goldilocks_zone.curvature.functional import FunctionalModel, Params
from goldilocks_zone.curvature.random import torch_generator

__all__ = ["sgd_trajectory"]


def epoch_batches(num_samples: int, batch_size: int | None, generator: torch.Generator
                  ) -> Iterator[Tensor]:
    """Endless stream of index tensors: epochs reshuffled with ``generator``, cut into batches
    of ``batch_size`` (a last incomplete batch is dropped), or everything, unshuffled, when
    ``batch_size`` is ``None``."""
    if batch_size is None:
        everything = torch.arange(num_samples)
        while True:
            yield everything
    while True:
        order = torch.randperm(num_samples, generator=generator)
        for start in range(0, num_samples - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def sgd_trajectory(model: nn.Module, params: Params, inputs: Tensor, targets: Tensor, *,
                   steps: int, lr: float, batch_size: int, seed: int = 0,
                   yield_at: Sequence[int] = (), train_mode: bool = False
                   ) -> Iterator[tuple[int, Params]]:
    r"""Minibatch SGD :math:`\theta \leftarrow \theta - \eta \nabla_\theta \frac1B \sum_{b}
    \ell(x_b, y_b)` on functional parameters; batches drawn without replacement each epoch
    from ``seed``. Yields ``(step, params)`` at every step in ``yield_at`` (step 0 = the start)
    and always at the last step; the yielded dicts are new tensors, never the model's.
    Gradients are taken in eval mode (``train_mode=False``) or train mode (each minibatch's
    BatchNorm statistics); the model's flags and buffers are left as they were. Frozen
    parameters (``requires_grad=False``) are not updated."""
    if steps < 0 or batch_size < 1 or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0; got steps={steps}, "
                         f"batch_size={batch_size}, lr={lr}")
    fm = FunctionalModel(model, params=params, train_mode=train_mode)

    def loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(fm.logits(p, x), y)

    step_grad = grad(loss)
    n = inputs.shape[0]
    batches = epoch_batches(n, min(batch_size, n), torch_generator(int(seed)))
    wanted = set(int(s) for s in yield_at) | {steps}
    theta = {k: v.detach().clone() for k, v in fm.params.items()}
    for step in range(steps + 1):
        if step in wanted:
            yield step, {k: v.clone() for k, v in {**fm.constants, **theta}.items()}
        if step == steps:
            break
        idx = next(batches).to(inputs.device)
        with fm.mode():
            g = step_grad(theta, inputs[idx], targets[idx])
        theta = {k: theta[k] - lr * g[k] for k in theta}
