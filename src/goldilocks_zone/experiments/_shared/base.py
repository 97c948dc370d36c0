"""The experiment protocol: config dataclass -> ``run`` -> tidy table -> ``plot``.

Every experiment module defines

* a ``Config`` dataclass whose fields are the experiment's knobs with the paper's defaults
  (scalars, strings, or tuples for internal grids);
* ``QUICK``: overrides that make the experiment finish in a few minutes on 2 CPU cores while
  still showing the qualitative result;
* ``run(config, ctx) -> pandas.DataFrame``: one tidy row per measured point;
* ``plot(table, config, fig_dir) -> list[Path]``: draws the paper's figure from the table and
  the typed config alone;

and registers them with :func:`register_module` (or :func:`register`). The runner
(:mod:`goldilocks_zone.sweep.runner`) and the sweep engine (:mod:`goldilocks_zone.sweep`) only
talk to this protocol.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

T = TypeVar("T")


@dataclass
class RunContext:
    """What an experiment's ``run`` receives besides its config.

    ``progress`` wraps long loops in a progress bar (with ETA) unless ``show_progress`` is
    off; ``provenance`` collects facts for the manifest (dataset fingerprints, fitted slopes,
    summary numbers) via :meth:`record`.
    """

    show_progress: bool = True
    provenance: dict[str, Any] = field(default_factory=dict)

    def progress(self, iterable: Iterable[T], *, total: int | None = None,
                 desc: str = "") -> Iterator[T]:
        if not self.show_progress:
            yield from iterable
            return
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def record(self, key: str, value: Any) -> None:
        self.provenance[key] = value

    def log(self, message: str) -> None:
        if self.show_progress:
            from tqdm.auto import tqdm

            tqdm.write(message)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment of the catalogue (SCIENCE.md §9)."""

    id: str
    paper: str
    summary: str
    config_cls: type
    run: Callable[[Any, RunContext], pd.DataFrame]
    plot: Callable[[pd.DataFrame, Any, Path], list[Path]]
    quick: Mapping[str, Any] = field(default_factory=dict)
    #: Columns that identify a measured point (besides ``seed``); the CLI averages the
    #: measurements over seeds per point for its short printed table.
    key_columns: tuple[str, ...] = ()
    #: Old config field name -> new name, so manifests written before a rename still load.
    renamed: Mapping[str, str] = field(default_factory=dict)

    def default_config(self, *, quick: bool = False, **overrides: Any) -> Any:
        """The paper's config, optionally with the quick preset, then ``overrides`` applied."""
        values: dict[str, Any] = dict(self.quick) if quick else {}
        values.update(overrides)
        return make_config(self.config_cls, values)

    def config_from_dict(self, values: Mapping[str, Any]) -> Any:
        """The typed config from a JSON/TOML mapping (e.g. a manifest's ``config``), with
        old field names (:attr:`renamed`) mapped to the current ones."""
        return make_config(self.config_cls, {self.renamed.get(k, k): v for k, v in values.items()})

    def draw(self, table: pd.DataFrame, config: Any, fig_dir: Path) -> list[Path]:
        """``plot(table, config, fig_dir)`` with ``config`` typed (a mapping is converted)."""
        if isinstance(config, Mapping):
            config = self.config_from_dict(config)
        return list(self.plot(table, config, fig_dir))

    @property
    def parameters(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config_cls)}


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if experiment.id in _REGISTRY and _REGISTRY[experiment.id] is not experiment:
        raise ValueError(f"experiment id {experiment.id!r} registered twice")
    _REGISTRY[experiment.id] = experiment
    return experiment


def register_module(module: str, **info: Any) -> Experiment:
    """Register the experiment module named ``module`` (pass ``__name__``): its ``Config``,
    ``run``, ``plot`` and ``QUICK``, with ``info`` (``id``, ``paper``, ``summary``,
    ``key_columns``, ``renamed``; see :class:`Experiment`)."""
    mod = sys.modules[module]
    return register(Experiment(config_cls=mod.Config, run=mod.run, plot=mod.plot,
                               quick=mod.QUICK, **info))


def _load_all() -> None:
    # Importing the package imports every experiment module, which registers itself.
    import goldilocks_zone.experiments  # noqa: F401


def get(name: str) -> Experiment:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown experiment {name!r}; known experiments: {known}") from None


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- config handling


def _field_types(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert ``value`` (from TOML, CLI strings or JSON) to the field's annotated type.

    Raises ``TypeError`` with the field name when the value does not fit.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() == "none" and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"parameter {name!r}: cannot use {value!r} ({'; '.join(errors)})")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_type = args[0] if args else Any
        return tuple(coerce(v, item_type, name) for v in value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise TypeError(f"parameter {name!r} expects true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError(f"parameter {name!r} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"parameter {name!r} expects an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise TypeError(f"parameter {name!r} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"parameter {name!r} expects a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError(f"parameter {name!r} expects a string, got {value!r}")
        return value
    return value


def make_config(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Build ``config_cls`` from a mapping, checking names and types with clear errors."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise KeyError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {config_cls.__module__}; "
            f"known parameters: {', '.join(sorted(fields))}"
        )
    types = _field_types(config_cls)
    kwargs = {k: coerce(v, types[k], k) for k, v in values.items()}
    config = config_cls(**kwargs)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out
