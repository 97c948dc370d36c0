r"""The cross-entropy Hessian restricted to a random subspace, and its Gauss-Newton split.

For a basis :math:`R \in \mathbb{R}^{D\times d}` and logits :math:`z_s = f(x_s;\theta)/T`,
one pass over the data computes, chunk by chunk and summed over samples (divided by the number
of samples S at the end, never by the number of chunks):

- :math:`H_R = R^\top \nabla^2 L\, R` by forward-over-reverse differentiation: ``vmap`` over a
  block of b columns of R of ``jvp`` (along :math:`r_j`) of the reverse-mode gradient, which
  returns the gradient tangents :math:`H r_j` (b × D numbers); they are projected on R by
  large matrix products ``(b, n_k) @ (n_k, d)``, one per parameter tensor of n_k entries (b
  from ``TANGENT_BUDGET_BYTES``), so only d×d numbers leave each chunk and the cost does not
  depend on the basis' memory layout. When a Linear layer sees the data only (LeNet's first
  layer), the basis is pushed through it exactly and the pass differentiates with respect to
  that layer's output instead of its weights (:mod:`.input_layer`; about a third fewer FLOPs
  on LeNet-300-100);
- the projected logit Jacobians :math:`J_s R / T` (the tangents of the logits in the same
  pass, at no extra cost) and from them the G-term
  :math:`G_R = \frac1S \sum_s (J_sR/T)^\top (\mathrm{diag}\,p_s - p_s p_s^\top)(J_sR/T)`;
- the H-term :math:`H_R - G_R`, or with ``verify_split=True`` also directly as the Hessian of
  :math:`\frac1S\sum_s \mathrm{sg}(p_s - y_s)\cdot z_s` (sg = stop-gradient).

A feed-forward ReLU network (an ``nn.Sequential`` of Linear or convolution layers, ReLUs and
average / max pooling and Flatten: LeNet-300-100, LeNet-5, the small CNN) takes an exact
fused pass instead (:mod:`.relu_network`): its H-term is the bilinear coupling of each weight
with its layer's input, so forward tangents, one back-propagated residual and d×d contractions
give all three terms with no second-order pass.

``terms=`` restricts the work: the G-term alone needs only forward mode (the logit tangents).
Every per-chunk d×d product and sum is accumulated in float64, also for float32 models.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from goldilocks_zone.curvature.batches import Batch, BatchStatistics, chunks
from goldilocks_zone.curvature.functional import (
    FunctionalModel,
    Params,
    check_basis,
    unflatten,
)
from goldilocks_zone.curvature.input_layer import InputLayer, find_input_layer
from goldilocks_zone.curvature.relu_network import ReluNetwork, find_relu_network
from goldilocks_zone.curvature.spectrum import SpectrumStats, spectrum_stats

TERMS = ("hessian", "g_term", "h_term")


@dataclass(frozen=True)
class SubspaceCurvature:
    r"""Curvature of the mean cross-entropy on the subspace :math:`\theta + R u`.

    ``hessian``, ``g_term``, ``h_term``: symmetric d×d float64 CPU tensors, with
    ``hessian = g_term + h_term`` (``h_term`` is the difference unless ``verify_split``); a
    term not asked for with ``terms=`` is ``None`` (and :meth:`stats` of it raises).
    ``h_term_direct`` and ``split_residual`` =
    :math:`\|H - (G + H_{direct})\|_F / \|H\|_F` are set with ``verify_split=True``.
    ``projected_gradient``: :math:`R^\top \nabla L` (d,). ``mean_probs``: :math:`\bar p`, the
    mean softmax output (K,); ``class_prior``: q, the label frequencies (K,).
    ``finite`` is False when the loss or a matrix is non-finite (e.g. overflow at an extreme
    scale): the values are then returned as they are (inf/NaN), not raised.
    ``method``: the pass that computed it — ``"fused"`` (a piecewise-linear network,
    :mod:`.relu_network`), ``"input-layer"`` (the generic pass with the input-layer shortcut)
    or ``"generic"``; the same numbers to round-off, told so that a user can see which path
    their model takes.
    """

    hessian: Tensor | None
    g_term: Tensor | None
    h_term: Tensor | None
    loss: float
    num_samples: int
    accuracy: float
    projected_gradient: Tensor
    mean_probs: Tensor
    class_prior: Tensor
    scale: float
    temperature: float
    finite: bool
    h_term_direct: Tensor | None = None
    split_residual: float | None = None
    method: str = "generic"

    @property
    def dim(self) -> int:
        return self.projected_gradient.shape[0]

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms this result holds (those asked for with ``terms=``)."""
        return tuple(t for t in TERMS if getattr(self, t) is not None)

    def matrix(self, term: str) -> Tensor:
        if term not in TERMS:
            raise ValueError(f"unknown term {term!r}; choose one of {TERMS}")
        m = getattr(self, term)
        if m is None:
            raise ValueError(f"the {term!r} was not computed: this result holds only "
                             f"{self.terms}; call subspace_curvature(..., terms=(..., "
                             f"{term!r})) to get it")
        return m

    def stats(self, term: str = "hessian") -> SpectrumStats:
        """:func:`spectrum_stats` of ``hessian``, ``g_term`` or ``h_term``."""
        return spectrum_stats(self.matrix(term))

    @property
    def prior_mismatch(self) -> float:
        r""":math:`\|q - \bar p\|_2`, the quantity that controls the gradient (P1 Eq. 10)."""
        return float(torch.linalg.vector_norm(self.class_prior - self.mean_probs))


def softmax_residual(z: Tensor, y: Tensor) -> Tensor:
    r""":math:`p - y` (B, K) for logits z and class indices y, accurate when the softmax
    saturates: the true class's entry is :math:`-\sum_{k\neq y} p_k` rather than
    :math:`p_y - 1` (which rounds to 0 long before the true value underflows)."""
    probs = torch.softmax(z, dim=-1)
    is_true = F.one_hot(y, z.shape[-1]).to(torch.bool)
    others = probs.masked_fill(is_true, 0.0).sum(-1, keepdim=True)
    return torch.where(is_true, -others, probs)


def gauss_newton_product(zt: Tensor, probs: Tensor) -> Tensor:
    r""":math:`\sum_s A_s^\top (\mathrm{diag}\,p_s - p_s p_s^\top) A_s` (d, d) for logit
    tangents ``zt`` (d, B, K), ``zt[i, s, k]`` = entry ``(k, i)`` of :math:`A_s = J_s R`
    (``K x d``), and softmax outputs ``probs`` (B, K); a sum over samples, not a mean.

    Uses the centred (weighted-covariance) form
    :math:`\sum_k p_k (a_k - \bar a)(a_k - \bar a)^\top`, :math:`\bar a = \sum_k p_k a_k`
    (:math:`a_k` = row ``k`` of :math:`A_s`), which has no cancellation when the softmax
    saturates and is PSD by construction. No ``K x K`` matrices are formed."""
    centred = zt - (zt * probs).sum(-1, keepdim=True)  # (d, B, K)
    return torch.einsum("ibk,jbk->ij", centred * probs, centred)


#: Memory budget (bytes) for the gradient tangents of one block of basis columns: a block of b
#: columns holds b parameter-shaped tangents (b × D numbers) before they are projected on R by
#: one matrix product. 512 MiB keeps all d = 50 columns of LeNet-300-100 in float64 (2.1 MB
#: each) in a single block — one large matmul per chunk, the fast case — while a 10M-parameter
#: float32 model (40 MB per column) is processed 13 columns at a time instead of needing 2 GB.
TANGENT_BUDGET_BYTES = 512 * 2**20


def column_block_size(num_params: int, dim: int, itemsize: int,
                      budget: int = TANGENT_BUDGET_BYTES) -> int:
    """Number of basis columns whose gradient tangents (``num_params`` numbers each, of
    ``itemsize`` bytes) fit in ``budget`` bytes; at least 1, at most ``dim``."""
    return max(1, min(dim, budget // max(1, num_params * itemsize)))


def _contiguous(basis_dict: Params) -> Params:
    """Each piece ``(d, *shape)`` made contiguous once per call, so a row-major (d × D) or a
    column-major (D × d) basis gives the same memory layout to every kernel that follows."""
    return {k: v.contiguous() for k, v in basis_dict.items()}


def _project(tangents: Params, basis_dict: Params) -> Tensor:
    r""":math:`T R` (b, d) float64 for parameter-shaped ``tangents[name]: (b, *shape)`` and
    ``basis_dict[name]: (d, *shape)``: one matrix product ``(b, n) @ (n, d)`` per parameter
    tensor, summed over tensors in float64."""
    out = None
    for k, t in tangents.items():
        r = basis_dict[k]
        part = (t.reshape(t.shape[0], -1) @ r.reshape(r.shape[0], -1).T).to(torch.float64)
        out = part if out is None else out + part
    return out


def _column_blocks(basis_dict: Params, block: int):
    d = next(iter(basis_dict.values())).shape[0]
    for start in range(0, d, block):
        yield {k: v[start:start + block] for k, v in basis_dict.items()}


def _chunk_pass(logits_of: Callable[[Params], Tensor], primal: Params, directions: Params,
                y: Tensor, block: int, cotangent: Tensor | None = None):
    r"""One chunk by forward-over-reverse: returns ``(hessian, z_t, grad, z)``.

    ``logits_of(primal)`` are the chunk's logits and ``directions[name]`` (d, *shape) the basis
    in the coordinates of ``primal`` (the parameters, or with the input-layer shortcut the
    other parameters and the layer's output; see :mod:`.input_layer`).
    ``hessian`` (d, d) float64: the summed :math:`R^\top H R` over the chunk's samples (row j
    is :math:`(H r_j)^\top R`, not yet symmetrised); ``z_t`` (d, B, K): logit tangents
    :math:`J_s r_j`; ``grad`` (d,) float64: summed :math:`R^\top \nabla L`; ``z`` (B, K): logits.

    The jvp is vmapped over ``block`` basis columns at a time and returns the gradient tangents
    :math:`H r_j` (shaped like ``primal``); they are projected on the directions outside the
    vmap with one matrix product per tensor (:func:`_project`). With ``cotangent`` (B, K)
    given, differentiate the fixed linear functional ``cotangent · z`` instead of the loss
    (the direct H-term).
    """
    def grad_and_logits(q: Params):
        z, pullback = vjp(logits_of, q)
        dz = softmax_residual(z, y) if cotangent is None else cotangent
        (g,) = pullback(dz)
        return g, z

    def along(tangent: Params):
        (g, z), (g_t, z_t) = jvp(grad_and_logits, (primal,), (tangent,))
        return g_t, z_t, g, z

    rows, tangents = [], []
    for piece in _column_blocks(directions, block):
        g_t, z_t, g, z = vmap(along, out_dims=(0, 0, None, None))(piece)
        rows.append(_project(g_t, directions))
        tangents.append(z_t)
        del g_t
    grad = _project({k: v[None] for k, v in g.items()}, directions)[0]
    return torch.cat(rows), torch.cat(tangents), grad, z


def _forward_pass(ev: FunctionalModel, x: Tensor, basis_dict: Params, block: int):
    """Logits (B, K) and logit tangents (d, B, K) by forward mode only, ``block`` columns of
    the basis per vmapped jvp."""
    def along(tangent: Params):
        return jvp(lambda q: ev.logits(q, x), (ev.params,), (tangent,))

    tangents = []
    for piece in _column_blocks(basis_dict, block):
        z, z_t = vmap(along, out_dims=(None, 0))(piece)
        tangents.append(z_t)
    return z, torch.cat(tangents)


def _check_terms(terms) -> tuple[str, ...]:
    if isinstance(terms, str):
        terms = (terms,)
    try:
        terms = tuple(terms)
    except TypeError:
        raise TypeError(f"terms must be a sequence of names from {TERMS}, got "
                        f"{type(terms).__name__}") from None
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise ValueError(f"terms must be a non-empty subset of {TERMS}, got {terms!r}")
    return tuple(t for t in TERMS if t in terms)


class _Sums:
    """Per-sample sums of the d × d matrices and of :math:`R^\top \nabla L` (float64, CPU);
    loss, accuracy, :math:`\bar p` and q go to the shared :class:`BatchStatistics`."""

    def __init__(self, d: int, need_hessian: bool, need_g: bool, verify_split: bool):
        zeros = torch.zeros(d, d, dtype=torch.float64)
        self.hessian = zeros.clone() if need_hessian else None
        self.g_term = zeros.clone() if need_g else None
        self.h_direct = zeros.clone() if verify_split else None
        self.grad = torch.zeros(d, dtype=torch.float64)
        self.stats = BatchStatistics()

    def add(self, z: Tensor, z_t: Tensor, y: Tensor, hessian: Tensor | None,
            grad: Tensor | None, h_term: Tensor | None = None) -> None:
        """Add a chunk: its summed Hessian, or its summed H-term (then the Hessian is the
        G-term plus it); ``grad=None`` takes :math:`R^\top \nabla L` from the logit
        tangents."""
        z64 = z.detach().to(torch.float64)
        g_term = None
        if self.g_term is not None or h_term is not None:
            g_term = gauss_newton_product(z_t.to(torch.float64),
                                          torch.softmax(z64, dim=-1)).cpu()
        if h_term is not None and self.hessian is not None:
            hessian = g_term + h_term.cpu()
        if hessian is not None:
            self.hessian += hessian.cpu()
        if self.g_term is not None:
            self.g_term += g_term
        if grad is None:  # R^T grad = sum_s (J_s R)^T (p_s - y_s), from the logit tangents
            grad = torch.einsum("ibk,bk->i", z_t.to(torch.float64), softmax_residual(z64, y))
        self.grad += grad.cpu()
        self.stats.add(z, y)


def _symmetric_mean(m: Tensor | None, n: int) -> Tensor | None:
    if m is None:
        return None
    m = m / n
    return 0.5 * (m + m.T)


def _result(sums: _Sums, terms: tuple[str, ...], scale: float, temperature: float,
            method: str) -> SubspaceCurvature:
    stats = sums.stats
    n = stats.num_samples
    hessian, g_term = _symmetric_mean(sums.hessian, n), _symmetric_mean(sums.g_term, n)
    h_term = hessian - g_term if hessian is not None and g_term is not None else None
    h_direct = _symmetric_mean(sums.h_direct, n)
    residual = None
    if h_direct is not None:
        denom = float(torch.linalg.matrix_norm(hessian))
        num = float(torch.linalg.matrix_norm(hessian - g_term - h_direct))
        residual = num / denom if denom > 0 else num
    loss = stats.loss
    finite = math.isfinite(loss) and all(
        bool(torch.isfinite(m).all()) for m in (hessian, g_term) if m is not None)
    return SubspaceCurvature(
        hessian=hessian if "hessian" in terms else None,
        g_term=g_term if "g_term" in terms else None,
        h_term=h_term if "h_term" in terms else None,
        loss=loss, num_samples=n, accuracy=stats.accuracy,
        projected_gradient=sums.grad / n, mean_probs=stats.mean_probs,
        class_prior=stats.class_prior, scale=float(scale), temperature=float(temperature),
        finite=finite, h_term_direct=h_direct, split_residual=residual, method=method,
    )


def subspace_curvature(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                       temperature: float = 1.0, scale: float = 1.0,
                       params: Params | None = None, batch_size: int | None = None,
                       verify_split: bool = False, train_mode: bool = False,
                       trainable_only: bool = True, output: Callable | None = None,
                       terms: Iterable[str] = TERMS) -> SubspaceCurvature:
    r"""Hessian, G-term and H-term of the mean cross-entropy restricted to span(basis).

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (batch, K). It is
            evaluated functionally and left unchanged (values, ``requires_grad``, mode).
        data: ``(inputs, targets)`` (inputs a tensor, tuple or dict of tensors), a dict
            batch with ``"labels"``, a Dataset, or an iterable of such batches (a
            DataLoader); see :mod:`.batches`. The loss is the mean over *all samples*.
        basis: (D, d), rows in ``parameters_to_vector(model.parameters())`` order, same dtype
            and device as the model (see :func:`random_basis`). Row-major and column-major
            layouts cost the same (the basis is made contiguous once per call).
        temperature: T > 0; logits are divided by T.
        scale: every parameter is multiplied by ``scale`` (derivatives are taken at
            ``scale * theta``).
        params: optional dict name -> tensor replacing the model's parameters.
        batch_size: chunk size (default ``DEFAULT_BATCH_SIZE``); memory does not grow with
            the number of samples.
        verify_split: also compute the H-term directly and report ``split_residual``.
        train_mode: evaluate in train mode (BatchNorm uses the statistics of each batch as
            given, never re-chunked; not allowed with dropout). Default: eval mode.
        trainable_only: differentiate only parameters with ``requires_grad`` (default); the
            basis has one row per such parameter entry.
        output: optional callable picking the logits from the model's output (default rule:
            tensor, first tensor of a tuple, ``"logits"`` of a dict, ``.logits``).
        terms: which of ``"hessian"``, ``"g_term"``, ``"h_term"`` to compute (default all
            three); the others are ``None`` in the result. ``("g_term",)`` uses forward mode
            only (≈ d forward passes, as :func:`subspace_g_term`); any set with
            ``"hessian"`` or ``"h_term"`` uses one forward-over-reverse pass, which yields
            the G-term's logit tangents at no extra cost.

    Cost per chunk of B samples: one vmapped forward-over-reverse pass over blocks of basis
    columns (block size from ``TANGENT_BUDGET_BYTES``) and one ``(b, D) @ (D, d)`` product per
    block; a Linear layer fed by the data alone is handled by the exact input-layer shortcut
    (:mod:`.input_layer`) when ``d`` is below its input width, and a feed-forward ReLU
    network (Linear or convolution layers, pooling) by the fused pass of
    :mod:`.relu_network` (forward tangents only; not with ``verify_split``, which keeps the
    independent second-order pass). float32 models are differentiated in float32; the
    per-chunk d × d products, the G-term contraction and every sum over chunks are
    accumulated in float64.

    Returns a :class:`SubspaceCurvature` with float64 CPU tensors.
    """
    terms = _check_terms(terms)
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    check_basis(basis, ev)
    basis_dict = _contiguous(unflatten(basis, ev.params))  # name -> (d, *shape)
    d = basis.shape[1]
    block = column_block_size(basis.shape[0], d, basis.element_size())
    need_hessian = verify_split or "hessian" in terms or "h_term" in terms
    need_g = verify_split or "g_term" in terms or "h_term" in terms
    sums = _Sums(d, need_hessian, need_g, verify_split)

    with ev.mode(), torch.no_grad(), contextlib.ExitStack() as stack:
        # the first chunk decides: the fused ReLU-network pass (not with verify_split, whose
        # point is an independent second-order pass), else the input-layer shortcut
        relu: ReluNetwork | None | bool = False if verify_split else None
        layer: InputLayer | None | bool = None if need_hessian else False
        for x, y in chunks(data, ev, batch_size):
            if relu is None:
                relu = find_relu_network(ev, x) or False
            if relu:
                z, z_t, saved = relu.forward(ev, x, basis_dict, keep=need_hessian)
                h_part = (relu.h_term(ev, basis_dict, saved, softmax_residual(z, y))
                          if need_hessian else None)
                del saved
                sums.add(z, z_t, y, None, None, h_term=h_part)
                continue
            if layer is None:
                layer = find_input_layer(ev, x, d) or False
                if layer:
                    stack.enter_context(layer.installed())
            if need_hessian:
                split = (layer.split(ev, x, basis_dict) if layer else
                         (lambda q, x=x: ev.logits(q, x), ev.params, basis_dict))
                with torch.enable_grad():
                    h_t, z_t, proj, z = _chunk_pass(*split, y, block)
            else:
                h_t, proj = None, None
                with torch.enable_grad():
                    z, z_t = _forward_pass(ev, x, basis_dict, block)
            sums.add(z, z_t, y, h_t, proj)
            if verify_split:
                cot = softmax_residual(z, y).detach()
                with torch.enable_grad():
                    hd_t, *_ = _chunk_pass(*split, y, block, cotangent=cot)
                sums.h_direct += hd_t.cpu()
    method = "fused" if relu else "input-layer" if layer else "generic"
    return _result(sums, terms, scale, temperature, method)


@dataclass(frozen=True)
class ProjectedJacobians:
    r"""Per-sample projected logit Jacobians :math:`J_s R / T` (S, K, d), softmax outputs
    :math:`p_s` (S, K) and targets (S,), float64 on the CPU."""

    jacobians: Tensor
    probs: Tensor
    targets: Tensor


def _logit_tangents(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                    scale: float, temperature: float, params: Params | None,
                    batch_size: int | None, train_mode: bool, trainable_only: bool,
                    output: Callable | None):
    """Yield ``(z, z_t, y)`` per chunk: logits (B, K) and their tangents (d, B, K) along the
    basis columns, by forward mode (the fused pass's forward half for a piecewise-linear
    network, else ``vmap`` over blocks of basis columns of ``jvp``)."""
    ev = FunctionalModel(model, scale=scale, temperature=temperature, params=params,
                         train_mode=train_mode, trainable_only=trainable_only, output=output)
    check_basis(basis, ev)
    basis_dict = _contiguous(unflatten(basis, ev.params))
    block = column_block_size(basis.shape[0], basis.shape[1], basis.element_size())
    with ev.mode(), torch.no_grad():
        relu: ReluNetwork | None | bool = None
        for x, y in chunks(data, ev, batch_size):
            if relu is None:
                relu = find_relu_network(ev, x) or False
            if relu:
                z, z_t, _ = relu.forward(ev, x, basis_dict, keep=False)
            else:
                z, z_t = _forward_pass(ev, x, basis_dict, block)
            yield z, z_t, y


def projected_logit_jacobians(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor,
                              *, scale: float = 1.0, temperature: float = 1.0,
                              params: Params | None = None, batch_size: int | None = None,
                              train_mode: bool = False, trainable_only: bool = True,
                              output: Callable | None = None
                              ) -> ProjectedJacobians:
    """:math:`J_s R / T` for every sample: cost ≈ d forward passes, no loop over samples or
    classes. Memory grows with S×K×d (use :func:`subspace_g_term` for the G-term alone)."""
    jacs, probs, targets = [], [], []
    for z, z_t, y in _logit_tangents(model, data, basis, scale=scale, temperature=temperature,
                                     params=params, batch_size=batch_size,
                                     train_mode=train_mode, trainable_only=trainable_only,
                                     output=output):
        jacs.append(z_t.permute(1, 2, 0).to(torch.float64).cpu())
        probs.append(torch.softmax(z, -1).to(torch.float64).cpu())
        targets.append(y.cpu())
    if not jacs:
        raise ValueError("data is empty")
    return ProjectedJacobians(torch.cat(jacs), torch.cat(probs), torch.cat(targets))


def subspace_g_term(model: nn.Module, data: Batch | Iterable[Batch], basis: Tensor, *,
                    scale: float = 1.0, temperature: float = 1.0, params: Params | None = None,
                    batch_size: int | None = None, train_mode: bool = False,
                    trainable_only: bool = True, output: Callable | None = None) -> Tensor:
    r"""The G-term :math:`G_R` alone (d×d float64), by forward mode only (≈ d forward passes):
    cheaper than :func:`subspace_curvature` when the H-term is not needed."""
    total, n = None, 0
    for z, z_t, y in _logit_tangents(model, data, basis, scale=scale, temperature=temperature,
                                     params=params, batch_size=batch_size,
                                     train_mode=train_mode, trainable_only=trainable_only,
                                     output=output):
        z64 = z.to(torch.float64)  # the contraction in float64, also for float32 models
        g = gauss_newton_product(z_t.to(torch.float64), torch.softmax(z64, -1)).cpu()
        total = g if total is None else total + g
        n += y.shape[0]
    if total is None:
        raise ValueError("data is empty")
    total = total / n
    return 0.5 * (total + total.T)
