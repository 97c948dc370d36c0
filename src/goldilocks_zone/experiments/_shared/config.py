"""The config fields that experiments share, each declared once.

An experiment's ``Config`` dataclass inherits the groups that apply to it and adds its own
knobs::

    @dataclass
    class Config(SubspaceConfig):   # dtype, device, model, dataset, num_samples, seeds, dim
        scales: tuple[float, ...] = ...

Groups: :class:`PrecisionConfig` (``dtype``), :class:`DeviceConfig` (+ ``device``),
:class:`ModelDataConfig` (``model``, ``dataset``), :class:`SamplesConfig` (``num_samples``),
:class:`SeedsConfig` (``seeds``), :class:`DimConfig` (``dim``), and the usual combinations
:class:`ProblemConfig` (all but ``dim``) and :class:`SubspaceConfig` (all seven).

Groups of experiment knobs that several experiments share (declared here once, with their
checks): :class:`NetworkConfig` (``activation``, ``init``, ``batch_size``, ``data_seed``: how
:func:`~goldilocks_zone.experiments._shared.common.config_problem` builds the problem),
:class:`DdofConfig` (``ddof`` of the random-model fit), :class:`ThreadsConfig` (``threads``)
and :class:`SGDConfig` (P2's minibatch-SGD training).

The common names mean the same thing everywhere (a command-line flag, a sweep-spec key and a
manifest entry are the field name):

=============  ============================================================================
``model``      a registered model name, ``mlp:W1xW2...`` where accepted, or ``pkg.mod:factory``
``dataset``    a registered dataset name
``num_samples`` training samples the measurement averages over (subsample; ``None`` = all)
``seeds``      repetitions; a seed fixes the initialisation (and the random basis)
``dim``        subspace dimension d
``dtype``      ``float64`` or ``float32``
``device``     ``cpu``, ``cuda``, ``cuda:1``, ...
=============  ============================================================================

A subclass changes a default by re-declaring the field with the *same* type, usually with
:func:`common` so the help text stays the shared one (``tests/test_cli.py`` checks the types).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from goldilocks_zone.experiments._shared.common import torch_device, torch_dtype

#: Help text of the common fields (shown by ``goldilocks run ID --help``).
COMMON_HELP: dict[str, str] = {
    "model": "model: a registry name, 'mlp:W1xW2...' or 'package.module:factory'",
    "dataset": "dataset registry name",
    "num_samples": "training samples the measurement averages over (subsample; none = all)",
    "seeds": "seeds; a seed fixes the initialisation (and the random basis)",
    "dim": "subspace dimension d",
    "dtype": "float64 or float32",
    "device": "cpu, cuda, cuda:1, ...",
}


def knob(default: Any, help: str) -> Any:  # noqa: A002
    """A config field with its ``default`` and the ``help`` text that ``goldilocks run ID
    --help`` shows: ``lr: float = knob(0.05, "SGD learning rate")``."""
    return field(default=default, metadata={"help": help})


def common(name: str, default: Any, help: str | None = None) -> Any:  # noqa: A002
    """A re-declared common field ``name`` with a new ``default`` and the shared help text
    (or ``help``)."""
    return field(default=default, metadata={"help": help or COMMON_HELP[name]})


@dataclass
class ConfigBase:
    """Root of every experiment config: :meth:`validate` runs each group's checks."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field; subclasses call ``super().validate()``."""


@dataclass
class PrecisionConfig(ConfigBase):
    """Number format of the computation."""

    dtype: str = common("dtype", "float64")

    def validate(self) -> None:
        super().validate()
        torch_dtype(self.dtype)


@dataclass
class DeviceConfig(PrecisionConfig):
    """Number format and device of the computation."""

    device: str = common("device", "cpu")


@dataclass
class ModelDataConfig(ConfigBase):
    """One model on one dataset."""

    model: str = common("model", "lenet-300-100")
    dataset: str = common("dataset", "fashion-mnist")


@dataclass
class SamplesConfig(ConfigBase):
    """How many training samples a measurement averages over."""

    num_samples: int | None = common("num_samples", 1000)

    def validate(self) -> None:
        super().validate()
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (or none), got {self.num_samples}")


@dataclass
class SeedsConfig(ConfigBase):
    """Repetitions over seeds."""

    seeds: tuple[int, ...] = common("seeds", (0,))

    def validate(self) -> None:
        super().validate()
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")


@dataclass
class DimConfig(ConfigBase):
    """A random ``dim``-dimensional subspace of parameter space."""

    dim: int = common("dim", 50)

    def validate(self) -> None:
        super().validate()
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")


@dataclass
class ProblemConfig(SeedsConfig, SamplesConfig, ModelDataConfig, DeviceConfig):
    """One model on one dataset (``num_samples`` of it), repeated over ``seeds``, in ``dtype`` on
    ``device``."""


@dataclass
class SubspaceConfig(DimConfig, ProblemConfig):
    """:class:`ProblemConfig` measured in a random ``dim``-dimensional subspace."""


# --------------------------------------------------------------------------- shared knob groups


@dataclass
class NetworkConfig(DeviceConfig):
    """How the network is built (``activation``, ``init``) and the data subsampled
    (``data_seed``), the chunk size of the curvature pass; the device is checked up front."""

    activation: str = "relu"
    init: str = "kaiming"
    batch_size: int | None = knob(None, "chunk size")
    data_seed: int = knob(0, "seed of the data subsample")

    def validate(self) -> None:
        super().validate()
        torch_device(self.device)


@dataclass
class DdofConfig(ConfigBase):
    """Divisor ``n - ddof`` of the random model's variances (P1 Eqs. 9-10)."""

    ddof: int = knob(0, "divisor n - ddof of sigma_c^2, sigma_E^2: 0 (n) or 1 (n - 1, the authors' "
                        "torch.std)")

    def validate(self) -> None:
        super().validate()
        if self.ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (divisor n) or 1 (divisor n - 1), got {self.ddof}")


@dataclass
class ThreadsConfig(ConfigBase):
    """Intra-op CPU threads of the run (see
    :func:`~goldilocks_zone.experiments._shared.common.cpu_threads`)."""

    threads: int = knob(1,
                        "intra-op CPU threads (0 = torch's setting); small nets are fastest on 1")


@dataclass
class SGDConfig(ConfigBase):
    """P2's minibatch-SGD training of a network (with biases) on a training subset."""

    bias: bool = knob(True, "layers with biases")
    train_samples: int = knob(5000, "training set size")
    train_steps: int = knob(1000, "minibatch SGD steps")
    lr: float = knob(0.05, "SGD learning rate")
    batch_size: int = knob(64, "SGD batch size")
    data_seed: int = knob(0, "seed of the data subsets")

    def validate(self) -> None:
        super().validate()
        if self.train_steps < 0 or self.train_samples < 1 or self.batch_size < 1:
            raise ValueError("train_steps >= 0, train_samples >= 1 and batch_size >= 1 needed")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")


#: The common field names, in the order above.
COMMON_FIELDS = tuple(COMMON_HELP)
