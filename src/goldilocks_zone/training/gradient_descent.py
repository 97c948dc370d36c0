r"""Full-batch gradient descent on a functional parameter dict (P1 §5, SCIENCE.md §8).

The model is never modified: parameters live in a ``dict[str, Tensor]`` that is passed to
``torch.func.functional_call``; the loop returns new tensors. Everything is *full batch*:
the loss, its gradient and the diagnostics are means over all ``S`` samples, computed in
chunks of ``batch_size`` samples (memory does not grow with ``S``):

.. math::
   L(\theta) = -\frac1S \sum_s \log p_{s,y_s}, \qquad
   \nabla L(\theta) = \frac{1}{S T}\sum_s J_s^\top (p_s - y_s), \qquad
   \theta_{t+1} = \theta_t - \eta\,\nabla L(\theta_t).

:func:`evaluate` measures one parameter point; :func:`gradient_descent` runs the loop and
logs the quantities P1 §5 tracks. A run whose loss, gradient or parameters become non-finite
stops and is reported with ``diverged=True``; it never raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import vjp

from goldilocks_zone.curvature.batches import Batch, BatchStatistics, chunks, take_samples
from goldilocks_zone.curvature.functional import (
    FunctionalModel,
    flatten,
    model_params,
    unflatten,
)

Params = dict[str, Tensor]

__all__ = [
    "FullBatchEvaluation",
    "TrainingRun",
    "cosine",
    "evaluate",
    "gradient_descent",
    "initial_params",
]


@dataclass(frozen=True)
class FullBatchEvaluation:
    """Full-data quantities at one parameter point (means over samples, not batches).

    ``gradient`` is the flat :math:`\\nabla L` (D,) in the parameters' dtype (``None`` unless
    requested); ``mean_probs`` is :math:`\\bar p` (K,) float64; ``class_prior`` is :math:`q`
    (K,) float64; ``zero_logit_fraction`` counts logits that are exactly ``0.0`` (all K logits
    of a sample vanish when the last hidden layer of a bias-free ReLU net is dead).
    """

    loss: float
    accuracy: float
    num_samples: int
    mean_probs: Tensor
    class_prior: Tensor
    zero_logit_fraction: float
    mean_entropy: float
    gradient: Tensor | None = None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and (self.gradient is None
                                             or bool(torch.isfinite(self.gradient).all()))


def initial_params(model: nn.Module, *, scale: float = 1.0, dtype: torch.dtype | None = None
                   ) -> Params:
    """Fresh copies of the model's parameters multiplied by ``scale`` (optionally cast)."""
    s = float(scale)
    if not math.isfinite(s):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return {name: (p if dtype is None else p.to(dtype)) * s
            for name, p in model_params(model).items()}


def evaluate(model: nn.Module, params: Params, data: Batch | Iterable[Batch], *,
             temperature: float = 1.0, batch_size: int | None = None,
             with_gradient: bool = False, train_mode: bool = False) -> FullBatchEvaluation:
    """Loss, accuracy, :math:`\\bar p`, :math:`q`, zero-logit fraction, mean prediction entropy
    :math:`\\frac1S\\sum_s -\\sum_k p_{sk}\\log p_{sk}` and optionally the flat gradient, at
    ``params`` (a dict name -> tensor in ``model.named_parameters()`` order), over all samples
    of ``data`` (``(inputs, targets)`` or an iterable of such batches)."""
    fm = FunctionalModel(model, params=params, temperature=temperature, train_mode=train_mode)
    stats = BatchStatistics()
    grad: Tensor | None = None
    with fm.mode(), torch.no_grad():
        for x, y in chunks(data, fm, batch_size, forward_mode=False):
            if with_gradient:
                with torch.enable_grad():
                    z, pullback = vjp(lambda p, x=x: fm.logits(p, x), fm.params)
            else:
                z = fm(x)
            stats.add(z, y)
            if with_gradient:
                probs = torch.softmax(z, -1)
                dz = (probs - torch.nn.functional.one_hot(y, z.shape[1]).to(probs.dtype))
                g = flatten(pullback(dz.detach())[0])
                grad = g if grad is None else grad + g
    n = stats.num_samples
    return FullBatchEvaluation(
        loss=stats.loss, accuracy=stats.accuracy, num_samples=n,
        mean_probs=stats.mean_probs, class_prior=stats.class_prior,
        zero_logit_fraction=stats.zero_logit_fraction, mean_entropy=stats.mean_entropy,
        gradient=None if grad is None else grad / n,
    )


def cosine(a: Tensor, b: Tensor) -> float:
    """:math:`a\\cdot b / (\\|a\\|\\|b\\|)` in float64; ``nan`` when either vector is zero or
    non-finite."""
    a64, b64 = a.reshape(-1).to(torch.float64), b.reshape(-1).to(torch.float64)
    na, nb = float(a64.norm()), float(b64.norm())
    if not (math.isfinite(na) and math.isfinite(nb)) or na == 0 or nb == 0:
        return math.nan
    return float(a64 @ b64) / (na * nb)


@dataclass
class TrainingRun:
    """Result of :func:`gradient_descent`: one ``history`` row per logged step, the final
    parameters, and whether the run stopped on a non-finite loss/gradient/parameter."""

    history: list[dict[str, float]] = field(default_factory=list)
    params: Params = field(default_factory=dict)
    diverged: bool = False
    steps_taken: int = 0


def _sharpness(model: nn.Module, data: Batch, params: Params, *, batch_size: int | None,
               max_iterations: int, seed: int) -> tuple[float, float]:
    """Top Hessian eigenvalue (and its Lanczos residual) at ``params``; ``nan`` if it fails to
    produce a finite value (e.g. overflow far from the zone)."""
    from goldilocks_zone.curvature import hessian_top_eigenpairs

    try:
        pairs = hessian_top_eigenpairs(model, data, k=1, params=params, batch_size=batch_size,
                                       max_iterations=max_iterations, tol=1e-4, seed=seed)
    except (RuntimeError, ValueError, torch.linalg.LinAlgError):
        return math.nan, math.nan
    value, residual = float(pairs.eigenvalues[0]), float(pairs.residuals[0])
    return (value, residual) if math.isfinite(value) else (math.nan, math.nan)


def gradient_descent(model: nn.Module, train: Batch, *, lr: float, steps: int,
                     log_every: int = 10, test: Batch | None = None,
                     params: Params | None = None, scale: float = 1.0,
                     temperature: float = 1.0, batch_size: int | None = None,
                     sharpness_every: int = 0, sharpness_samples: int | None = None,
                     sharpness_iterations: int = 20, seed: int = 0,
                     train_mode: bool = False,
                     on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingRun:
    r"""Full-batch gradient descent :math:`\theta_{t+1} = \theta_t - \eta\nabla L(\theta_t)`
    from ``params`` (default: the model's own parameters) multiplied by ``scale``.

    Logs at steps ``0, log_every, 2 log_every, ...`` and at the last step a row with
    ``step, train_loss, train_accuracy, test_loss, test_accuracy, grad_norm, param_norm,
    cos_param_grad`` (:math:`\cos(\theta, \nabla L)`), ``cos_param_init``
    (:math:`\cos(\theta, \theta_0)`), ``relative_displacement``
    (:math:`\|\theta - \theta_0\| / \|\theta_0\|`), ``zero_logit_fraction``,
    ``mean_entropy``, and every ``sharpness_every``-th log (0: never) ``sharpness`` /
    ``sharpness_residual`` (top Hessian eigenvalue by ``sharpness_iterations`` Lanczos steps on
    the first ``sharpness_samples`` training samples; ``nan`` when not measured).

    Stops early, with ``diverged=True`` and a final row holding the non-finite values, when
    the loss, gradient or parameters stop being finite. ``on_log`` is called with each row.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    start = FunctionalModel(model, scale=scale, params=params)  # validates params and scale
    constants = start.constants  # frozen parameters (requires_grad=False) stay where they are
    like = {n: p.clone() for n, p in start.params.items()}
    theta_flat = flatten(like)
    names = list(model_params(model))

    def full(flat: Tensor) -> Params:  # every parameter, model order
        merged = {**constants, **unflatten(flat, like)}
        return {n: merged[n] for n in names}

    theta0 = theta_flat.clone()
    norm0 = float(theta0.to(torch.float64).norm())
    sharp_data = train if sharpness_samples is None else take_samples(train, sharpness_samples)
    run = TrainingRun()
    log_index = 0
    for step in range(steps + 1):
        is_log = step % log_every == 0 or step == steps
        current = full(theta_flat)
        params_finite = bool(torch.isfinite(theta_flat).all())
        ev = evaluate(model, current, train, temperature=temperature, batch_size=batch_size,
                      with_gradient=step < steps or is_log, train_mode=train_mode)
        finite = params_finite and ev.finite
        if is_log or not finite:
            row = _log_row(model, step, ev, theta_flat, theta0, norm0, current, test,
                           temperature=temperature, batch_size=batch_size,
                           train_mode=train_mode, finite=finite)
            want_sharp = sharpness_every > 0 and log_index % sharpness_every == 0
            if want_sharp and finite:
                row["sharpness"], row["sharpness_residual"] = _sharpness(
                    model, sharp_data, current, batch_size=batch_size,
                    max_iterations=sharpness_iterations, seed=seed)
            run.history.append(row)
            log_index += 1
            if on_log is not None:
                on_log(row)
        if not finite:
            run.diverged = True
            break
        if step == steps:
            break
        theta_flat = theta_flat - lr * ev.gradient.to(theta_flat.dtype)
        run.steps_taken = step + 1
    run.params = full(theta_flat)
    return run


def _log_row(model: nn.Module, step: int, ev: FullBatchEvaluation, theta: Tensor,
             theta0: Tensor, norm0: float, current: Params, test: Batch | None, *,
             temperature: float, batch_size: int | None, train_mode: bool,
             finite: bool) -> dict[str, float]:
    grad = ev.gradient
    theta64 = theta.to(torch.float64)
    row: dict[str, float] = {
        "step": step,
        "train_loss": ev.loss,
        "train_accuracy": ev.accuracy,
        "grad_norm": float(grad.to(torch.float64).norm()) if grad is not None else math.nan,
        "param_norm": float(theta64.norm()),
        "cos_param_grad": cosine(theta, grad) if grad is not None else math.nan,
        "cos_param_init": cosine(theta, theta0),
        "relative_displacement": (float((theta64 - theta0.to(torch.float64)).norm()) / norm0
                                  if norm0 > 0 else math.nan),
        "zero_logit_fraction": ev.zero_logit_fraction,
        "mean_entropy": ev.mean_entropy,
        "test_loss": math.nan,
        "test_accuracy": math.nan,
        "sharpness": math.nan,
        "sharpness_residual": math.nan,
        "finite": bool(finite),
    }
    if test is not None and bool(torch.isfinite(theta).all()):
        tev = evaluate(model, current, test, temperature=temperature, batch_size=batch_size,
                       train_mode=train_mode)
        row["test_loss"], row["test_accuracy"] = tev.loss, tev.accuracy
    return row
