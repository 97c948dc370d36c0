r"""Functional probing shared by P2's experiments (``logit-clustering``, ``simplex``,
``hessian-spectrum``): per-sample logit Jacobians, accuracy/loss at a parameter dict, and the
train/probe data split. Their training loop is
:func:`goldilocks_zone.training.minibatch.sgd_trajectory`."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from goldilocks_zone.curvature.functional import FunctionalModel
from goldilocks_zone.curvature.functional import model_params as engine_params

Params = dict[str, Tensor]


def model_params(model: nn.Module) -> Params:
    """Fresh detached copies of the model's parameters (the model itself is never changed)."""
    return {n: p.clone() for n, p in engine_params(model).items()}


def per_sample_jacobians(model: nn.Module, params: Params, inputs: Tensor, *,
                         chunk_size: int = 16, train_mode: bool = False) -> Iterator[Tensor]:
    r"""Per-sample logit Jacobians :math:`J_\mu = \partial z(x_\mu)/\partial\theta`, yielded in
    chunks of shape (B, K, D) (``parameters_to_vector`` order), by
    ``vmap(jacrev(f))`` over the samples of each chunk (eval mode unless ``train_mode``; the
    model's flags are restored)."""
    fm = FunctionalModel(model, params=params, train_mode=train_mode)

    def logits(p: Params, x: Tensor) -> Tensor:
        return fm.logits(p, x[None])[0]

    jac_fn = vmap(jacrev(logits), in_dims=(None, 0))
    for start in range(0, inputs.shape[0], chunk_size):
        with fm.mode():
            jac = jac_fn(fm.params, inputs[start:start + chunk_size])
        b = inputs[start:start + chunk_size].shape[0]
        k = next(iter(jac.values())).shape[1]
        yield torch.cat([j.reshape(b, k, -1) for j in jac.values()], dim=2)


def logits_at(model: nn.Module, params: Params, inputs: Tensor) -> Tensor:
    """Logits of ``model`` at ``params`` (eval mode, no graph; the model is not touched)."""
    fm = FunctionalModel(model, params=params)
    with torch.no_grad(), fm.mode():
        return fm(inputs)


def accuracy_and_loss(model: nn.Module, params: Params, inputs: Tensor, targets: Tensor
                      ) -> tuple[float, float]:
    """Accuracy and mean cross-entropy at ``params`` (eval mode)."""
    z = logits_at(model, params, inputs)
    return (float((z.argmax(-1) == targets).double().mean()),
            float(nn.functional.cross_entropy(z, targets)))


def load_split(dataset: str, *, train_samples: int, probe_samples: int, data_seed: int,
               dtype: torch.dtype):
    """Training subset (``train_samples``, at most the split's size) and a class-balanced
    probe subset of ``probe_samples`` drawn from it."""
    from goldilocks_zone import data as data_lib

    full = data_lib.load(dataset, split="train", seed=data_seed)
    n_train = min(train_samples, len(full))
    train = data_lib.subsample(full, n_train, seed=data_seed)
    probe = data_lib.subsample(train, min(probe_samples, n_train), seed=data_seed + 1,
                               balanced=True)
    return train.to(dtype=dtype), probe.to(dtype=dtype)


