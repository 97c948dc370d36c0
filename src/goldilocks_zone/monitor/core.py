r"""The curvature monitor: P2's local geometry measured from inside any training loop.

Every ``every`` steps :class:`CurvatureMonitor` measures, at the model's *current* parameters
:math:`\theta_t`, on a batch :math:`(x_s, y_s)_{s=1}^S` held aside at construction (the first
``num_samples`` samples of ``data``) and a random basis :math:`R \in \mathbb R^{D\times d}`
drawn once from ``seed``:

- loss :math:`L = -\frac1S\sum_s \log p_{s,y_s}`, accuracy and mean softmax entropy
  :math:`\frac1S\sum_s -\sum_k p_{sk}\log p_{sk}`;
- the subspace Hessian :math:`H_R = R^\top\nabla^2 L\,R` (d×d) with its positive curvature
  :math:`\kappa = \mathrm{Tr}H_R/\|H_R\|_F`, fraction of positive eigenvalues :math:`\pi`,
  and the spectral norms and κ of its Gauss-Newton G-term and H-term;
- the top-k eigenpairs :math:`(\lambda_i, v_i)` of the full-space Hessian :math:`\nabla^2 L`
  (Lanczos; default :math:`k = K + 1`, K = number of classes);
- **gradient confinement** (P2 property 2): the share of the full gradient's squared norm in
  the span of the top eigenvectors,
  :math:`\|Q_k^\top\nabla L\|^2 / \|\nabla L\|^2` with :math:`Q_k` an orthonormal basis of
  :math:`\mathrm{span}(v_1..v_k)` (and the same for the top K);
- **outliers** (P2 property 1): how many of :math:`\lambda_1..\lambda_k` are at least
  :data:`OUTLIER_RATIO` times :math:`|\lambda_k|`, the smallest computed eigenvalue, which for
  :math:`k = K + 1` stands for the bulk (:func:`count_outliers_above_bulk`).

Rows are plain dicts collected into a tidy table (one row per monitored step). A measurement
never changes the model's parameters, buffers, ``requires_grad``, ``.grad``, train/eval
flags, the optimiser, or the global random states (torch CPU/CUDA, numpy, ``random``): all
quantities are computed functionally by :mod:`goldilocks_zone.curvature`, and the random states
are saved and restored around every measurement as a second line of defence.

**Cost control.** A measurement costs ``d`` Jacobian-vector-Hessian products (the subspace
Hessian), one gradient and about ``lanczos_iterations + k`` Hessian-vector products, all on
``num_samples`` samples — independent of the training set's size. ``budget_s`` (default
:data:`DEFAULT_BUDGET_S`) caps it twice: a due measurement is *skipped* (logged with
``status="skipped"`` and the reason) when the previous one took longer than the budget, and a
running measurement stops at the next stage boundary or Hessian-vector product once the budget
is spent (``status="partial"``, the quantities not reached are NaN). After ``retry_after``
consecutive skips the next due measurement is tried again (load on a shared machine varies).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from goldilocks_zone import files
from goldilocks_zone.curvature import (
    hessian_vector_product,
    lanczos,
    loss_gradient,
    random_basis,
    subspace_curvature,
)
from goldilocks_zone.curvature.batches import check_positive_int, map_inputs, take_samples
from goldilocks_zone.curvature.functional import flatten, model_params
from goldilocks_zone.training.gradient_descent import evaluate

#: Monitor every this many steps of the caller's loop.
DEFAULT_EVERY = 100
#: Subspace dimension d: κ of a d×d matrix; 20 keeps the subspace Hessian (d HVP-like passes)
#: cheap while κ's sampling noise across bases stays around a tenth of its value.
DEFAULT_DIM = 20
#: Held-aside samples: every quantity is a mean over these S samples (at this size the cost is
#: mostly per Hessian-vector product, not per sample).
DEFAULT_NUM_SAMPLES = 128
#: Lanczos steps for the top-k eigenpairs (k = K + 1 = 11 for ten classes): the outliers
#: converge first; the residuals are reported, not hidden.
DEFAULT_LANCZOS_ITERATIONS = 20
#: Relative Lanczos tolerance (a monitor needs a few significant digits, not ten).
DEFAULT_LANCZOS_TOL = 1e-3
#: Seconds one measurement may take (see the module docstring for what happens above it).
#: Measured on the idle 2-core CPU (2 threads): LeNet-300-100 with the defaults 0.47–0.49 s per
#: measurement (after a first one of 1.4 s with one-off costs) vs 0.67 s for one Fashion-MNIST
#: epoch of minibatch SGD (60k samples, batch 128) on tensors, 0.83 s through a DataLoader.
DEFAULT_BUDGET_S = 30.0
#: Consecutive skipped measurements after which the next due one is tried again.
DEFAULT_RETRY_AFTER = 10
#: λ_i counts as an outlier when λ_i ≥ OUTLIER_RATIO × |λ_k| (λ_k: smallest computed, the
#: bulk's top for k = K + 1). 2 separates P2's class outliers from the bulk edge after a little
#: training while the bulk's own top eigenvalues (a few percent apart) never pass it.
OUTLIER_RATIO = 2.0

Batch = tuple[Tensor, Tensor]


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Save and restore the global random states: torch CPU, every initialised CUDA device,
    numpy's global generator and Python's ``random``."""
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)


def held_aside_batch(data: Any, num_samples: int) -> Batch:
    """The first ``num_samples`` samples of ``data`` as detached copies ``(inputs, targets)``.

    ``data``: any format the engine accepts (:func:`~goldilocks_zone.curvature.batches.
    take_samples`: tensors, Datasets, DataLoaders, dict batches). Fewer samples than
    ``num_samples`` means all of them. The global random states are restored afterwards
    (iterating a shuffling ``DataLoader`` draws from them).
    """
    check_positive_int("num_samples", num_samples)
    with preserved_rng_state():
        x, y = take_samples(data, num_samples)
    return map_inputs(lambda t: t.detach().clone(), x), y.detach().clone()


class _Stop(Exception):
    """Ends a measurement early (budget spent, non-finite loss, Lanczos failure)."""


#: The measured quantities of a row, in column order (then ``eigenvalue_1..k``).
_QUANTITIES = (
    "loss", "accuracy", "mean_entropy", "grad_norm", "param_norm", "positive_curvature",
    "fraction_positive", "hessian_spectral_norm", "hessian_top_eigenvalue",
    "g_term_spectral_norm", "h_term_spectral_norm", "g_term_positive_curvature",
    "h_term_positive_curvature", "num_outliers", "gradient_top_k_fraction",
    "gradient_top_c_fraction", "lanczos_iterations", "lanczos_max_residual",
    "lanczos_converged", "num_classes", "top_k",
)


def _nan_row(top_k: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_QUANTITIES, math.nan)
    row["lanczos_converged"] = False
    row.update((f"eigenvalue_{i}", math.nan) for i in range(1, (top_k or 0) + 1))
    return row


def _top_fraction(vectors: Tensor, gradient: Tensor) -> float:
    r""":math:`\|Q^\top g\|^2/\|g\|^2` for Q an orthonormal basis of span(vectors) (D, m)."""
    g = gradient.to(torch.float64)
    norm2 = float(g @ g)
    if not math.isfinite(norm2) or norm2 == 0:
        return math.nan
    q, _ = torch.linalg.qr(vectors.to(device=g.device, dtype=torch.float64))
    return float((q.T @ g).pow(2).sum()) / norm2


def count_outliers_above_bulk(eigenvalues: Tensor, ratio: float = OUTLIER_RATIO) -> int:
    r"""Number of eigenvalues :math:`\lambda_i \ge` ``ratio`` :math:`\cdot|\lambda_{\min}|`
    where :math:`\lambda_{\min}` is the smallest of the given top eigenvalues: the top of the
    bulk, or, when it is negative (a bulk spread around 0 on few samples), minus its lower
    part, so :math:`|\lambda_{\min}|` estimates the bulk's half-width either way. 0 when that
    reference is 0 or not finite."""
    ev = eigenvalues.to(torch.float64)
    ref = abs(float(ev.min()))
    if not math.isfinite(ref) or ref == 0:
        return 0
    return int((ev >= ratio * ref).sum())


def measure(model: nn.Module, batch: Batch, basis: Tensor, *, top_k: int | None = None,
            lanczos_iterations: int = DEFAULT_LANCZOS_ITERATIONS,
            lanczos_tol: float = DEFAULT_LANCZOS_TOL, seed: int = 0,
            batch_size: int | None = None, budget_s: float | None = None) -> dict[str, Any]:
    """One measurement at the model's current parameters (see the module docstring).

    ``batch``: ``(inputs, targets)`` on the model's device; ``basis``: (D, d) in the model's
    dtype and device. Returns a row dict with ``status`` (``measured`` or ``partial``),
    ``reason`` and ``seconds``; quantities not reached within ``budget_s`` are NaN.
    """
    start = time.perf_counter()
    deadline = None if budget_s is None else start + float(budget_s)

    def check(stage: str) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            raise _Stop(f"budget_s={budget_s:g} s spent before {stage}")

    params = {n: p.detach() for n, p in model.named_parameters()}
    # The curvature of what training moves: trainable parameters only (the engine's default).
    trainable = model_params(model, trainable_only=True)
    num_params = sum(p.numel() for p in trainable.values())
    row = _nan_row(top_k)
    status, reason = "measured", ""
    try:
        ev = evaluate(model, params, batch, batch_size=batch_size)
        k_classes = int(ev.mean_probs.numel())
        k = min(top_k if top_k is not None else k_classes + 1, num_params)
        row = _nan_row(k)
        theta = flatten(trainable).to(torch.float64)
        row.update(loss=ev.loss, accuracy=ev.accuracy, mean_entropy=ev.mean_entropy,
                   param_norm=float(theta.norm()), num_classes=k_classes, top_k=k)
        if not math.isfinite(ev.loss):
            raise _Stop("non-finite loss: curvature not measured")
        check("the subspace Hessian")
        curv = subspace_curvature(model, batch, basis, batch_size=batch_size)
        h, g, hh = curv.stats("hessian"), curv.stats("g_term"), curv.stats("h_term")
        row.update(positive_curvature=h.positive_curvature,
                   fraction_positive=h.fraction_positive,
                   hessian_spectral_norm=h.spectral_norm, hessian_top_eigenvalue=h.top_eigenvalue,
                   g_term_spectral_norm=g.spectral_norm, h_term_spectral_norm=hh.spectral_norm,
                   g_term_positive_curvature=g.positive_curvature,
                   h_term_positive_curvature=hh.positive_curvature)
        check("the gradient")
        grad = loss_gradient(model, batch, batch_size=batch_size)
        row["grad_norm"] = float(grad.norm())
        check("Lanczos")
        products = 0

        def matvec(v: Tensor) -> Tensor:
            nonlocal products
            check(f"Hessian-vector product {products + 1} of Lanczos")
            products += 1
            return hessian_vector_product(model, batch, v, batch_size=batch_size)

        try:
            pairs = lanczos(matvec, num_params, k, which="largest",
                            max_iterations=lanczos_iterations, tol=lanczos_tol, seed=seed,
                            batched=True)
        except (RuntimeError, ValueError) as exc:  # e.g. eigh on non-finite values
            raise _Stop(f"Lanczos failed: {exc}") from None
        eig = pairs.eigenvalues.to(torch.float64)
        for i, value in enumerate(eig.tolist(), start=1):
            row[f"eigenvalue_{i}"] = value
        row.update(num_outliers=count_outliers_above_bulk(eig),
                   gradient_top_k_fraction=_top_fraction(pairs.eigenvectors, grad),
                   gradient_top_c_fraction=(_top_fraction(pairs.eigenvectors[:, :k_classes],
                                                          grad)
                                            if k >= k_classes else math.nan),
                   lanczos_iterations=pairs.iterations,
                   lanczos_max_residual=float(pairs.residuals.max()),
                   lanczos_converged=bool(pairs.converged))
    except _Stop as exc:
        status, reason = "partial", str(exc)
    return {"status": status, "reason": reason, "seconds": time.perf_counter() - start,
            **row}


class CurvatureMonitor:
    """Watch P2's local geometry from any training loop (see the module docstring).

    >>> monitor = CurvatureMonitor(model, (x_train, y_train), every=100)
    >>> for step, (x, y) in enumerate(loader):
    ...     loss = F.cross_entropy(model(x), y)
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     monitor.step(step)
    >>> monitor.table()       # one row per monitored step
    >>> monitor.save("runs/geometry")

    Args:
        model: the ``nn.Module`` being trained; it must map inputs to logits (batch, K).
            The monitor keeps a reference and measures at its parameters at the time of
            :meth:`step`; the device and dtype follow the model (moved basis and batch are
            cached).
        data: where the held-aside batch comes from: ``(inputs, targets)``, a map-style
            dataset or an iterable of batches; its first ``num_samples`` samples are copied at
            construction and never change.
        every: measure when ``step_index % every == 0`` (once per step index).
        dim: subspace dimension d of the random basis (``basis`` kind, drawn from ``seed``).
        num_samples: size S of the held-aside batch.
        seed: seeds the basis and the Lanczos start vector (explicit generators).
        top_k: Lanczos eigenpairs; ``None``: number of classes + 1.
        budget_s: seconds one measurement may take (``None``: no limit).
        retry_after: consecutive skips after which a measurement is tried again (``None``:
            never).
        writer: a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``) or a log
            directory, for scalars under ``tag_prefix``.
        batch_size: chunk size for the engine (memory only).
    """

    def __init__(self, model: nn.Module, data: Any, *, every: int = DEFAULT_EVERY,
                 dim: int = DEFAULT_DIM, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
                 top_k: int | None = None, budget_s: float | None = DEFAULT_BUDGET_S,
                 retry_after: int | None = DEFAULT_RETRY_AFTER, basis: str = "orthonormal",
                 lanczos_iterations: int = DEFAULT_LANCZOS_ITERATIONS,
                 lanczos_tol: float = DEFAULT_LANCZOS_TOL, batch_size: int | None = None,
                 writer: Any = None, tag_prefix: str = "curvature/") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if num_params == 0:
            raise ValueError("the model has no trainable parameters to monitor")
        for name, value in (("every", every), ("dim", dim), ("lanczos_iterations",
                                                              lanczos_iterations)):
            check_positive_int(name, value)
        check_positive_int("top_k", top_k, none="or None")
        if budget_s is not None and not (float(budget_s) > 0 and math.isfinite(budget_s)):
            raise ValueError(f"budget_s must be a positive number of seconds or None, got "
                             f"{budget_s!r}")
        check_positive_int("retry_after", retry_after, none="or None")
        if not (lanczos_tol > 0):
            raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol!r}")
        self.model = model
        self.every = every
        self.dim = dim
        self.seed = int(seed)
        self.top_k = top_k
        self.budget_s = None if budget_s is None else float(budget_s)
        self.retry_after = retry_after
        self.lanczos_iterations = lanczos_iterations
        self.lanczos_tol = float(lanczos_tol)
        self.batch_size = batch_size
        self.basis_kind = basis
        self.tag_prefix = tag_prefix
        self.batch = held_aside_batch(data, num_samples)
        self.num_samples = int(self.batch[0].shape[0])
        # Drawn once, on the CPU in float64, from its own generator (no global RNG use).
        self.basis = random_basis(num_params, dim, kind=basis, seed=self.seed)
        self.records: list[dict[str, Any]] = []
        self._cache: dict[tuple, tuple[Tensor, Batch]] = {}
        self._last_seconds: float | None = None
        self._skips = 0
        self._last_step: int | None = None
        self.writer = None
        if writer is not None:
            from goldilocks_zone.monitor.tensorboard import make_writer

            self.writer = make_writer(writer)

    # ------------------------------------------------------------------ placement
    def placed(self) -> tuple[Tensor, Batch]:
        """Basis and batch on the model's current device, in its floating dtype."""
        p = next(self.model.parameters())
        key = (p.dtype, p.device)
        if key not in self._cache:
            x, y = self.batch
            x = x.to(device=p.device, dtype=p.dtype) if x.is_floating_point() else x.to(p.device)
            self._cache = {key: (self.basis.to(dtype=p.dtype, device=p.device),
                                 (x, y.to(p.device)))}
        return self._cache[key]

    # ------------------------------------------------------------------ stepping
    def step(self, step_index: int) -> dict[str, Any] | None:
        """Call once per training step; measures (or logs a skip) when ``step_index`` is a
        multiple of ``every`` and was not monitored yet. Returns the row or ``None``."""
        if not isinstance(step_index, (int, np.integer)) or isinstance(step_index, bool):
            raise TypeError(f"step_index must be an integer, got {type(step_index).__name__}")
        step_index = int(step_index)
        if step_index % self.every != 0 or step_index == self._last_step:
            return None
        return self.measure_now(step_index)

    def measure_now(self, step_index: int) -> dict[str, Any]:
        """Measure at ``step_index`` regardless of ``every`` (still subject to the budget)."""
        self._last_step = int(step_index)
        with preserved_rng_state():
            predicted = self._last_seconds
            over = (self.budget_s is not None and predicted is not None
                    and predicted > self.budget_s)
            retry = self.retry_after is not None and self._skips >= self.retry_after
            if over and not retry:
                self._skips += 1
                row = {"status": "skipped",
                       "reason": (f"predicted {predicted:.2f} s (the previous measurement's "
                                  f"time) exceeds budget_s={self.budget_s:g} s"),
                       "seconds": 0.0, **_nan_row(self._k())}
            else:
                self._skips = 0
                basis, batch = self.placed()
                row = measure(self.model, batch, basis, top_k=self.top_k,
                              lanczos_iterations=self.lanczos_iterations,
                              lanczos_tol=self.lanczos_tol, seed=self.seed,
                              batch_size=self.batch_size, budget_s=self.budget_s)
                self._last_seconds = row["seconds"]
        row = {"step": int(step_index), **row, "dim": self.dim, "num_samples": self.num_samples}
        self.records.append(row)
        if self.writer is not None:
            from goldilocks_zone.monitor.tensorboard import write_scalars

            write_scalars(self.writer, row, int(step_index), prefix=self.tag_prefix)
        return row

    def _k(self) -> int | None:
        for r in reversed(self.records):
            if isinstance(r.get("top_k"), int):
                return r["top_k"]
        return self.top_k

    # ------------------------------------------------------------------ outputs
    def table(self) -> pd.DataFrame:
        """The tidy table: one row per monitored step (``status`` says measured / partial /
        skipped, ``reason`` why not measured in full, ``seconds`` its cost)."""
        table = pd.DataFrame(self.records)
        if len(table):
            table["lanczos_converged"] = table["lanczos_converged"].astype(bool)
        return table

    def config(self) -> dict[str, Any]:
        """The monitor's settings (JSON-friendly)."""
        return {"every": self.every, "dim": self.dim, "num_samples": self.num_samples,
                "seed": self.seed, "top_k": self.top_k, "budget_s": self.budget_s,
                "retry_after": self.retry_after, "basis": self.basis_kind,
                "lanczos_iterations": self.lanczos_iterations,
                "lanczos_tol": self.lanczos_tol, "model": type(self.model).__name__}

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write ``results.csv``, ``results.parquet`` and ``manifest.json`` to ``out_dir`` with
        the package's results-folder writer (:func:`goldilocks_zone.files.write_results`, the
        writer of ``goldilocks run``'s folders: atomic files). Returns the files written: a
        table pyarrow cannot store is kept as CSV only, with a warning (and the reason in the
        manifest's ``table_errors``).

        The manifest names the ``training-geometry`` experiment, so ``goldilocks plot
        out_dir`` draws the monitored curves with that experiment's figure."""
        out = Path(out_dir)
        # The figure is training-geometry's, drawn from the table alone (its config at the
        # defaults); what the monitor measured with is kept beside it.
        manifest = files.write_results(out, self.table(), {
            "experiment": "training-geometry", "source": "CurvatureMonitor", "config": {},
            "monitor": self.config()})
        for problem in manifest["table_errors"]:
            warnings.warn(f"CurvatureMonitor.save: {problem}", stacklevel=2)
        names = (files.RESULTS_CSV, files.RESULTS_PARQUET, files.MANIFEST)
        return [out / name for name in names if (out / name).is_file()]
