r"""Training confined to a random affine hyperplane or to a hypersphere of fixed radius (P3).

Fort & Scherlis train only the ``d`` coordinates ``u`` of a point on a random affine
hyperplane through a starting point ``P``:

.. math::  \theta(u) = P + R u, \qquad R \in \mathbb{R}^{D \times d}, u \in \mathbb{R}^d,

and, to separate the effect of the radius from the effect of the direction, on a hypersphere of
fixed radius ``r``. Here the sphere is reached by radial projection of the hyperplane point,

.. math::  \theta(u) = r\, \frac{P + R\,u}{\lVert P + R\,u \rVert},

which keeps ``‖θ‖ = r`` exactly and confines θ to a ``d``-dimensional sphere inside the
``(d + 1)``-dimensional linear span of ``P`` and the columns of ``R`` (the same ``d`` trainable
numbers as the hyperplane; ``u = 0`` is the point ``r P / ‖P‖``). ``basis=None`` means the full
space (``R = I``, ``u ∈ R^D``): the unconstrained reference.

Everything is functional: the model is never modified. A :class:`ParameterLayout` maps a
flattened parameter vector (order of ``torch.nn.utils.parameters_to_vector(model.parameters())``)
to the ``dict[str, Tensor]`` that the engine's ``FunctionalModel`` evaluates (eval mode,
buffers copied: BatchNorm statistics never change). Only ``u`` is optimised
(:func:`train_on_surface`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from goldilocks_zone.curvature.functional import (
    FunctionalModel,
    Params,
    flatten,
    model_params,
    num_params,
    unflatten,
)
from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.training.gradient_descent import evaluate as full_batch_evaluation
from goldilocks_zone.training.minibatch import epoch_batches

__all__ = [
    "ParameterLayout",
    "Surface",
    "TrainingHistory",
    "SubspaceTrainingResult",
    "evaluate",
    "flatten_parameters",
    "split_holdout",
    "train_on_surface",
]

OPTIMIZERS = ("adam", "sgd")

# Evaluation chunk: large enough to amortise the per-call overhead of functional_call, small
# enough that the activations of a LeNet-sized model stay well under a gigabyte.
DEFAULT_EVAL_BATCH = 2048


# --------------------------------------------------------------------------- parameter layout


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of a model's trainable parameters in ``model.parameters()`` order.

    ``to_dict(theta)`` cuts a flat vector ``theta`` (D,) into views with those shapes, ready for
    :class:`~goldilocks_zone.curvature.functional.FunctionalModel`; ``flatten(params)`` is its
    inverse (both are the engine's ``unflatten`` / ``flatten``).
    """

    like: Params

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        like = model_params(model, trainable_only=True)
        if not like:
            raise ValueError("the model has no parameters to train")
        return cls(like)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.like)

    @property
    def num_params(self) -> int:
        return num_params(self.like)

    def to_dict(self, theta: Tensor) -> Params:
        if theta.ndim != 1 or theta.numel() != self.num_params:
            raise ValueError(f"expected a flat parameter vector of length {self.num_params}, "
                             f"got shape {tuple(theta.shape)}")
        return unflatten(theta, self.like)

    def flatten(self, params: Params) -> Tensor:
        missing = [n for n in self.like if n not in params]
        if missing:
            raise KeyError(f"parameter(s) missing from the dict: {', '.join(missing)}")
        return flatten({n: params[n] for n in self.like})


def flatten_parameters(model: nn.Module) -> Tensor:
    """θ (D,): a detached copy of the model's trainable parameters, ``model.parameters()``
    order."""
    return flatten(model_params(model, trainable_only=True)).clone()


# --------------------------------------------------------------------------- surfaces


@dataclass(frozen=True)
class Surface:
    """Where training is confined: θ(u) = P + R u, optionally projected to ‖θ‖ = ``radius``.

    ``anchor`` P (D,); ``basis`` R (D, d) or ``None`` for the full space (R = I, d = D);
    ``radius`` r > 0 for the hypersphere θ(u) = r (P + R u)/‖P + R u‖, or ``None``.
    """

    anchor: Tensor
    basis: Tensor | None = None
    radius: float | None = None

    def __post_init__(self) -> None:
        if self.anchor.ndim != 1:
            raise ValueError(f"anchor must be a flat vector (D,), got shape "
                             f"{tuple(self.anchor.shape)}")
        if self.basis is not None:
            if self.basis.ndim != 2 or self.basis.shape[0] != self.anchor.numel():
                raise ValueError(f"basis must have shape (D, d) = ({self.anchor.numel()}, d), "
                                 f"got {tuple(self.basis.shape)}")
            if self.basis.shape[1] < 1:
                raise ValueError("basis must have at least one column")
        if self.radius is not None and not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"radius must be a positive finite number, got {self.radius}")
        if self.radius is not None and float(self.anchor.norm()) == 0.0 and self.basis is None:
            raise ValueError("a sphere needs a nonzero anchor or a basis")

    @property
    def dim(self) -> int:
        """Number of trainable coordinates d."""
        return self.anchor.numel() if self.basis is None else int(self.basis.shape[1])

    @property
    def kind(self) -> str:
        if self.radius is not None:
            return "sphere"
        return "full" if self.basis is None else "hyperplane"

    def point(self, u: Tensor) -> Tensor:
        """θ(u) (D,) for coordinates ``u`` (d,)."""
        theta = self.anchor + (u if self.basis is None else self.basis @ u)
        if self.radius is not None:
            theta = theta * (self.radius / theta.norm().clamp_min(torch.finfo(theta.dtype).tiny))
        return theta


# --------------------------------------------------------------------------- evaluation


def check_samples(inputs: Tensor, targets: Tensor, *, empty: str = "no samples") -> None:
    """ValueError unless ``inputs`` and ``targets`` hold the same number of samples, at least
    one (``empty`` is the message for none)."""
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets disagree on the number of samples: "
                         f"{inputs.shape[0]} vs {targets.shape[0]}")
    if inputs.shape[0] == 0:
        raise ValueError(empty)


def evaluate(model: nn.Module, theta: Tensor, data: tuple[Tensor, Tensor], *,
             layout: ParameterLayout | None = None,
             batch_size: int = DEFAULT_EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) at flat parameters ``theta``
    on ``data``.

    Sums per-sample losses and correct predictions over chunks of ``batch_size`` samples and
    divides by the number of samples S. Returns ``(loss, accuracy)``; the loss is ``nan`` when
    non-finite logits occur. The model (and its BatchNorm statistics) is not touched.
    """
    inputs, targets = data
    check_samples(inputs, targets)
    layout = layout or ParameterLayout.of(model)
    ev = full_batch_evaluation(model, layout.to_dict(theta.to(dtype=inputs.dtype)), data,
                               batch_size=batch_size)
    return (ev.loss if math.isfinite(ev.loss) else float("nan")), ev.accuracy


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingHistory:
    """Logged every ``eval_every`` steps (and at steps 0 and the last): arrays of equal length."""

    step: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    eval_loss: np.ndarray
    eval_accuracy: np.ndarray
    radius: np.ndarray  # ‖θ‖ at the logged steps

    def steps_to_reach(self, accuracy: float, *, on: str = "train") -> int | None:
        """First logged step whose ``on`` accuracy ("train" or "eval") is ≥ ``accuracy``."""
        values = self.train_accuracy if on == "train" else self.eval_accuracy
        hits = np.flatnonzero(np.nan_to_num(values, nan=-1.0) >= accuracy)
        return int(self.step[hits[0]]) if hits.size else None

    def accuracy_at(self, step: int, *, on: str = "train") -> float:
        """Accuracy at the last logged step ≤ ``step``."""
        values = self.train_accuracy if on == "train" else self.eval_accuracy
        idx = np.searchsorted(self.step, step, side="right") - 1
        if idx < 0:
            raise ValueError(f"no logged step at or before {step}")
        return float(values[idx])


@dataclass(frozen=True)
class SubspaceTrainingResult:
    """Outcome of :func:`train_on_surface`.

    ``coordinates`` u (d,) and ``parameters`` θ(u) (D,) at the end; ``history`` the logged
    curve; ``final_*`` the metrics of the end point on the training data (all samples) and the
    evaluation data (``nan`` without it); ``finite`` is False when the loss became non-finite
    (training then stops at the last point with finite coordinates; its loss may be ``nan``).
    """

    kind: str
    dim: int
    coordinates: Tensor
    parameters: Tensor
    history: TrainingHistory
    final_train_loss: float
    final_train_accuracy: float
    final_eval_loss: float
    final_eval_accuracy: float
    finite: bool
    steps_taken: int


def train_on_surface(model: nn.Module, data: tuple[Tensor, Tensor], surface: Surface, *,
                     steps: int, lr: float, optimizer: str = "adam", momentum: float = 0.9,
                     batch_size: int | None = None, seed: int | None = 0,
                     eval_data: tuple[Tensor, Tensor] | None = None,
                     eval_every: int | None = None,
                     eval_batch_size: int = DEFAULT_EVAL_BATCH) -> SubspaceTrainingResult:
    """Minimise the mean cross-entropy over ``u`` only, with θ = ``surface.point(u)``.

    Starts at u = 0. Each step draws a minibatch of ``batch_size`` samples (reshuffled every
    epoch with a generator seeded by ``seed``; ``None`` = full batch), computes
    L_B(u) = (1/|B|) Σ_{s∈B} CE(f(x_s; θ(u)), y_s) through
    ``functional_call(model, layout.to_dict(θ(u)), x)`` and takes an Adam or SGD(+momentum)
    step on u. Every ``eval_every`` steps (default: ``max(1, steps // 20)``) the full training
    set and ``eval_data`` are evaluated in chunks. The model's own parameters are not touched.
    """
    inputs, targets = data
    check_samples(inputs, targets)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
    layout = ParameterLayout.of(model)
    if surface.anchor.numel() != layout.num_params:
        raise ValueError(f"surface lives in R^{surface.anchor.numel()} but the model has "
                         f"{layout.num_params} parameters")
    dtype, device = inputs.dtype, inputs.device
    like = {"dtype": dtype, "device": device}
    surface = Surface(surface.anchor.detach().to(**like),
                      None if surface.basis is None else surface.basis.detach().to(**like),
                      surface.radius)
    eval_every = max(1, steps // 20) if eval_every is None else eval_every
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")

    u = torch.zeros(surface.dim, dtype=dtype, device=device, requires_grad=True)
    opt = (torch.optim.Adam([u], lr=lr) if optimizer == "adam"
           else torch.optim.SGD([u], lr=lr, momentum=momentum))
    full_batch = batch_size is None or batch_size >= inputs.shape[0]
    batches = epoch_batches(inputs.shape[0], None if full_batch else batch_size,
                            torch_generator(0 if seed is None else int(seed)))

    log: dict[str, list[float]] = {k: [] for k in ("step", "train_loss", "train_accuracy",
                                                   "eval_loss", "eval_accuracy", "radius")}

    def record(step: int) -> None:
        theta = surface.point(u.detach())
        tr_loss, tr_acc = evaluate(model, theta, data, layout=layout, batch_size=eval_batch_size)
        ev_loss, ev_acc = (math.nan, math.nan) if eval_data is None else evaluate(
            model, theta, eval_data, layout=layout, batch_size=eval_batch_size)
        for key, value in zip(log, (step, tr_loss, tr_acc, ev_loss, ev_acc,
                                    float(theta.norm()))):
            log[key].append(value)

    record(0)
    finite, taken = True, 0
    fm = FunctionalModel(model, params=layout.to_dict(surface.anchor))
    for step in range(1, steps + 1):
        idx = next(batches).to(device)
        theta = surface.point(u)
        with fm.mode():
            logits = fm.logits(layout.to_dict(theta), inputs[idx])
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not (torch.isfinite(loss) and torch.isfinite(u.grad).all()):
            finite = False
            break
        before = u.detach().clone()
        opt.step()
        if not torch.isfinite(u.detach()).all():
            with torch.no_grad():
                u.copy_(before)
            finite = False
            break
        taken = step
        if step % eval_every == 0 or step == steps:
            record(step)
    if log["step"][-1] != taken:
        record(taken)

    history = TrainingHistory(step=np.asarray(log["step"], dtype=int), **{
        k: np.asarray(v, dtype=float) for k, v in log.items() if k != "step"})
    return SubspaceTrainingResult(
        kind=surface.kind, dim=surface.dim, coordinates=u.detach().clone(),
        parameters=surface.point(u.detach()).detach(),
        history=history, final_train_loss=float(history.train_loss[-1]),
        final_train_accuracy=float(history.train_accuracy[-1]),
        final_eval_loss=float(history.eval_loss[-1]),
        final_eval_accuracy=float(history.eval_accuracy[-1]), finite=finite, steps_taken=taken,
    )


def split_holdout(inputs: Tensor, targets: Tensor, num_eval: int
                  ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split an already shuffled data set into (train, held-out) with the last ``num_eval``
    samples held out."""
    n = inputs.shape[0]
    if not 0 <= num_eval < n:
        raise ValueError(f"cannot hold out {num_eval} of {n} samples")
    cut = n - num_eval
    return (inputs[:cut], targets[:cut]), (inputs[cut:], targets[cut:])
