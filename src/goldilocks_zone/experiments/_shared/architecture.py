"""Network specs shared by P3's experiments (``radius-shell``, ``hyperplane-training``,
``init-selection``): ``mlp:W1xW2`` architecture strings, the parameter radius ‖θ‖, problem
loading for a spec, the held-out (test-split) data, and the config knobs of the two training
experiments (:class:`TrainTestConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from goldilocks_zone.curvature.random import torch_generator
from goldilocks_zone.experiments._shared.config import (
    DeviceConfig,
    ModelDataConfig,
    SamplesConfig,
    ThreadsConfig,
    common,
    knob,
)


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture spec: registry ``model`` name and its keyword options."""

    spec: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_convolutional(self) -> bool:
        return self.model in ("small-cnn", "lenet-5")

    @property
    def depth(self) -> int | None:
        """Number of weight layers of an ``mlp`` spec (None otherwise)."""
        widths = self.kwargs.get("widths")
        return None if widths is None else len(widths) + 1


def parse_architecture(spec: str) -> Architecture:
    """``"mlp:100x50"`` -> Architecture("mlp", widths=(100, 50)); any other string is a registry
    name used as is (checked when the model is built)."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty architecture spec")
    if spec.startswith("mlp"):
        _, _, rest = spec.partition(":")
        if spec != "mlp" and not spec.startswith("mlp:"):
            raise ValueError(f"architecture {spec!r}: write an MLP as 'mlp:W1xW2...' "
                             f"(e.g. 'mlp:100x100')")
        try:
            widths = tuple(int(w) for w in rest.split("x")) if rest else (100, 100)
        except ValueError:
            raise ValueError(f"architecture {spec!r}: hidden widths must be integers separated "
                             f"by 'x', e.g. 'mlp:100x100'") from None
        if any(w < 1 for w in widths):
            raise ValueError(f"architecture {spec!r}: widths must be positive")
        return Architecture(spec, "mlp", {"widths": widths})
    return Architecture(spec, spec, {})


def parameter_radius(model: torch.nn.Module) -> float:
    """‖θ‖₂ over all parameters (weights and biases)."""
    return float(torch.linalg.vector_norm(
        torch.nn.utils.parameters_to_vector(model.parameters()).detach().to(torch.float64)))


def build_problem(arch: Architecture, *, dataset: str, num_samples: int | None, seed: int,
                  activation: str, init: str = "xavier", dtype: str = "float64",
                  device: str = "cpu", data_seed: int = 0, bias: bool = True):
    """:func:`~goldilocks_zone.experiments._shared.common.load_problem` for an architecture
    spec, with a clear error when a convolutional net meets flat inputs."""
    from goldilocks_zone.experiments._shared.common import load_problem

    try:
        return load_problem(model=arch.model, dataset=dataset, num_samples=num_samples,
                            seed=seed, dtype=dtype, device=device, activation=activation,
                            bias=bias, init=init, data_seed=data_seed,
                            model_kwargs=arch.kwargs)
    except ValueError as exc:
        raise ValueError(f"architecture {arch.spec!r} on dataset {dataset!r}: {exc}") from exc


def kaiming_radius(arch: Architecture, problem, *, activation: str, seed: int) -> float:
    """‖θ‖ of a Kaiming initialisation of the same architecture, same seed (biases included)."""
    from goldilocks_zone import models

    net = models.create(arch.model, tuple(problem.dataset.input_shape), problem.num_classes,
                        activation=activation, bias=True, init="kaiming", seed=seed,
                        **arch.kwargs)
    return parameter_radius(net)


def held_out_data(dataset: str, num_samples: int | None, *, like: torch.Tensor,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` of the data set's *test* split (all with ``None``), seeded, with the
    dtype and device of ``like``."""
    from goldilocks_zone import data as data_lib

    ds = data_lib.load(dataset, split="test")
    n = ds.inputs.shape[0] if num_samples is None else num_samples
    if n > ds.inputs.shape[0]:
        raise ValueError(f"num_test={n} but {dataset}/test has {ds.inputs.shape[0]} samples")
    pick = torch.randperm(ds.inputs.shape[0], generator=torch_generator(seed))[:n]
    return ds.inputs[pick].to(dtype=like.dtype, device=like.device), ds.targets[pick].to(
        like.device)


@dataclass
class TrainTestConfig(ThreadsConfig, SamplesConfig, ModelDataConfig, DeviceConfig):
    """An architecture spec (``model``) trained on ``num_samples`` of the train split and
    tested on ``num_test`` of the test split, in float32 (P3's training experiments)."""

    model: str = common("model", "mlp:100")
    dataset: str = common("dataset", "mnist-5k")
    num_samples: int = common("num_samples", 4000, "training samples (train split)")
    dtype: str = common("dtype", "float32")

    activation: str = "relu"
    num_test: int | None = knob(None, "held-out samples (test split; none = all)")
    data_seed: int = 0

    def validate(self) -> None:
        super().validate()
        parse_architecture(self.model)
        if self.num_test is not None and self.num_test < 1:
            raise ValueError(f"num_test must be >= 1 (or none), got {self.num_test}")

    def problem(self, arch: Architecture, seed: int):
        """:func:`build_problem` of ``arch`` on this config's data, model built with ``seed``."""
        return build_problem(arch, dataset=self.dataset, num_samples=self.num_samples,
                             seed=seed, activation=self.activation, dtype=self.dtype,
                             device=self.device, data_seed=self.data_seed)

    def held_out(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`held_out_data`: ``num_test`` test samples, dtype and device of ``like``."""
        return held_out_data(self.dataset, self.num_test, like=like, seed=self.data_seed)
