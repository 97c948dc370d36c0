"""The :class:`Dataset` record returned by :func:`goldilocks_zone.data.load`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

# Hex digits kept from the SHA-256 digest: 64 bits, ample to tell data sets apart in manifests.
FINGERPRINT_HEX_DIGITS = 16


def fingerprint(inputs: Tensor, targets: Tensor) -> str:
    """Short SHA-256 of the exact bytes of ``inputs`` and ``targets`` (with their shapes and
    dtypes), so two data sets share a fingerprint iff they hold the same values in the same
    order."""
    digest = hashlib.sha256()
    for t in (inputs, targets):
        arr = np.ascontiguousarray(t.detach().cpu().numpy())
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()[:FINGERPRINT_HEX_DIGITS]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled data set, ready for the curvature engine.

    Attributes:
        name: registry name (``"fashion-mnist"``, ``"circles"``, ...).
        split: ``"train"`` or ``"test"`` (some sets also offer ``"all"`` or ``"extra"``).
        inputs: float32 tensor ``(N, *input_shape)``, normalised; images are ``(N, C, H, W)``,
            2-D points ``(N, 2)`` (float64 for ``circles``, the authors' exact values).
        targets: int64 class indices ``(N,)`` in ``[0, num_classes)``.
        num_classes: K.
        source: where the values came from (a file or folder path, a package, or the generator
            and its settings).
        input_shape: ``inputs.shape[1:]`` (derived).
        prior: float64 ``(K,)`` empirical class frequencies q_k = #{y = k} / N (derived).
        fingerprint: short SHA-256 of the exact input and target bytes (derived, computed on
            first access).

    The record is frozen; its tensors are shared, not copied, so do not modify them in place.
    """

    name: str
    split: str
    inputs: Tensor = field(repr=False)
    targets: Tensor = field(repr=False)
    num_classes: int
    source: str
    input_shape: tuple[int, ...] = field(init=False)
    prior: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not self.inputs.is_floating_point():
            raise TypeError("Dataset inputs must be a floating-point tensor")
        if not isinstance(self.targets, Tensor) or self.targets.dtype != torch.int64:
            raise TypeError("Dataset targets must be an int64 tensor of class indices")
        if self.targets.dim() != 1 or self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(f"inputs {tuple(self.inputs.shape)} and targets "
                             f"{tuple(self.targets.shape)} disagree on the number of samples")
        k = int(self.num_classes)
        if k < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.targets.numel() and (self.targets.min() < 0 or self.targets.max() >= k):
            raise ValueError(f"targets must lie in [0, {k}), got range "
                             f"[{int(self.targets.min())}, {int(self.targets.max())}]")
        object.__setattr__(self, "num_classes", k)
        object.__setattr__(self, "input_shape", tuple(self.inputs.shape[1:]))
        counts = torch.bincount(self.targets.cpu(), minlength=k).to(torch.float64)
        object.__setattr__(self, "prior", counts / max(len(self.targets), 1))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.inputs, self.targets)

    @property
    def class_counts(self) -> Tensor:
        """int64 ``(K,)`` number of samples of each class."""
        return torch.bincount(self.targets.cpu(), minlength=self.num_classes)

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)``, the form the curvature engine takes."""
        return self.inputs, self.targets

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, indices: Tensor | np.ndarray | list[int]) -> Dataset:
        """The samples at ``indices`` (in that order), with prior and fingerprint recomputed."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return replace(self, inputs=self.inputs[idx], targets=self.targets[idx])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
           ) -> Dataset:
        """A copy with inputs cast to ``dtype`` and both tensors moved to ``device``."""
        return replace(self, inputs=self.inputs.to(dtype=dtype, device=device),
                       targets=self.targets.to(device=device))
