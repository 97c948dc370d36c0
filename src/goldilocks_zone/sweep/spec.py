"""Sweep specifications: which experiment, which parameter values, crossed or zipped.

A spec is a TOML file: ``experiment`` (a registered id, or ``"package.module:ATTR"``),
optional ``quick`` (start from the experiment's QUICK preset) and ``description``, and the
tables ``[base]`` (fixed values for every point), ``[grid]`` (lists, crossed: one point per
combination), ``[zip]`` (lists of equal length whose i-th values go together; ``[[zip]]`` for
several groups) and ``[figures] by`` (one figure set per value of these grid parameters);
docs/sweeps.md shows an example. The points are ``product(grid values ...) x zip rows`` in
file order (the zipped group is the innermost loop). Each point's full config is ``QUICK
preset (if quick) <- base <- point values``, built and checked by
:func:`goldilocks_zone.experiments._shared.base.make_config`, and its key is a hash of
``{experiment, full config}``, so the same config always gets the same key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import pkgutil
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goldilocks_zone.experiments._shared.base import Experiment, coerce, config_to_dict
from goldilocks_zone.sweep import toml as _toml

#: Hex digits of the SHA-256 kept in a point key: 64 bits make a collision among even a
#: million points a ~3e-8 event, and keep file names short.
KEY_LENGTH = 16

_TOP_LEVEL_KEYS = {"experiment", "quick", "description", "base", "grid", "zip", "figures"}


class SpecError(ValueError):
    """A sweep spec (or the output folder it is run into) cannot be used; nothing was run."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, Python's round-trip float repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def point_key(experiment: str, config: Mapping[str, Any]) -> str:
    """``sha256(canonical_json({"experiment": experiment, "config": config}))[:KEY_LENGTH]``."""
    payload = canonical_json({"experiment": experiment, "config": dict(config)})
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


@functools.cache
def resolve_experiment(ref: str) -> Experiment:
    """The experiment named by ``ref``: a registered id, or ``"package.module:ATTR"``.

    The second form lets a sweep run any
    :class:`~goldilocks_zone.experiments._shared.base.Experiment`
    object (registered or not) defined in an importable module; Dask workers import the same
    module, so it must be importable there too.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise SpecError(f"'experiment' must be a non-empty string, got {ref!r}")
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            obj: Any = pkgutil.resolve_name(ref)
        except ImportError as exc:
            raise SpecError(
                f"experiment {ref!r}: cannot import module {module_name!r} ({exc}); "
                "is it on PYTHONPATH?"
            ) from None
        except (AttributeError, ValueError):
            raise SpecError(
                f"experiment {ref!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
        if not isinstance(obj, Experiment):
            raise SpecError(
                f"experiment {ref!r} is a {type(obj).__name__}, not a "
                "goldilocks_zone.experiments._shared.base.Experiment"
            )
        return obj
    from goldilocks_zone.experiments._shared import base

    try:
        return base.get(ref)
    except KeyError as exc:
        raise SpecError(
            f"{exc.args[0]} (or give 'package.module:ATTR' for an experiment of your own)"
        ) from None


@dataclass(frozen=True)
class SweepPoint:
    """One task of a sweep.

    ``grid`` holds the values of the swept (grid and zip) parameters as they appear in the
    results table; ``config`` is the full JSON-ready config dict (tuples as lists).
    """

    index: int
    key: str
    grid: dict[str, Any]
    config: dict[str, Any]

    def label(self) -> str:
        return ", ".join(f"{k}={_display(v)}" for k, v in self.grid.items())


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec with its expanded points (see the module docstring)."""

    experiment: str
    quick: bool
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: list[dict[str, list[Any]]]
    figures_by: tuple[str, ...] | None
    description: str = ""
    points: tuple[SweepPoint, ...] = field(default=(), repr=False)

    @property
    def swept(self) -> list[str]:
        """Names of the swept parameters, in grid then zip order (the table's grid columns)."""
        return [*self.grid, *(name for group in self.zip for name in group)]

    def normalized(self) -> dict[str, Any]:
        """The spec as plain JSON data with values coerced to the config's types."""
        return {
            "experiment": self.experiment,
            "quick": self.quick,
            "base": self.base,
            "grid": self.grid,
            "zip": self.zip,
            "figures": {"by": list(self.figures_by)} if self.figures_by is not None else {},
            "description": self.description,
        }

    @property
    def hash(self) -> str:
        """Hash of what determines the points (experiment, quick, base, grid, zip)."""
        data = self.normalized()
        identity = {k: data[k] for k in ("experiment", "quick", "base", "grid", "zip")}
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:KEY_LENGTH]


def _display(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_display(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def load_spec(path: str | Path) -> SweepSpec:
    """Read and fully validate a TOML sweep spec (see :func:`parse_spec`)."""
    return parse_spec(_toml.read_toml(path, what="sweep spec", error=SpecError),
                      source=str(path))


def parse_spec(data: Mapping[str, Any], *, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec mapping and expand its points; raise :class:`SpecError` on any problem.

    Every point's config is built here, so unknown parameters, values of the wrong type,
    values the experiment's ``Config.validate`` rejects, empty or mismatched lists and
    duplicate points are all reported before any work starts.
    """
    where = source
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"a spec has {', '.join(sorted(_TOP_LEVEL_KEYS))}"
        )
    if "experiment" not in data:
        raise SpecError(f"{where}: missing 'experiment' (a registered id or 'module:ATTR')")
    ref = data["experiment"]
    experiment = resolve_experiment(ref)
    quick = data.get("quick", False)
    if not isinstance(quick, bool):
        raise SpecError(f"{where}: 'quick' must be true or false, got {quick!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{where}: 'description' must be a string")

    params = {f.name: f for f in dataclasses.fields(experiment.config_cls)}
    types = typing.get_type_hints(experiment.config_cls)

    def check_name(name: str, section: str) -> None:
        if name not in params:
            raise SpecError(
                f"{where}: [{section}] names unknown parameter {name!r} of experiment {ref!r}; "
                f"known parameters: {', '.join(sorted(params))}"
            )

    def convert(name: str, value: Any, section: str) -> Any:
        try:
            return _jsonable(coerce(value, types[name], name))
        except (TypeError, ValueError) as exc:
            msg = exc.args[0] if exc.args else exc
            raise SpecError(f"{where}: [{section}] {msg}") from None

    base_in = _table(data.get("base", {}), "base", where)
    base_vals: dict[str, Any] = {}
    for name, value in base_in.items():
        check_name(name, "base")
        base_vals[name] = convert(name, value, "base")

    seen: dict[str, str] = {name: "base" for name in base_vals}

    def claim(name: str, section: str) -> None:
        check_name(name, section)
        if name in seen:
            raise SpecError(
                f"{where}: parameter {name!r} appears in both [{seen[name]}] and [{section}]; "
                "give it in one place"
            )
        seen[name] = section

    def swept_lists(table: Any, section: str) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name, values in _table(table, section, where).items():
            claim(name, section)
            out[name] = [convert(name, v, section)
                         for v in _nonempty_list(values, name, section, where)]
        return out

    grid = swept_lists(data.get("grid", {}), "grid")
    zip_in = data.get("zip", [])
    groups_in = [zip_in] if isinstance(zip_in, Mapping) else zip_in
    if not isinstance(groups_in, list):
        raise SpecError(f"{where}: [zip] must be a table (or an array of tables [[zip]])")
    zips: list[dict[str, list[Any]]] = []
    for g, group_in in enumerate(groups_in):
        section = "zip" if len(groups_in) == 1 else f"zip #{g + 1}"
        group = swept_lists(group_in, section)
        lengths = {name: len(v) for name, v in group.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            raise SpecError(f"{where}: [{section}] lists must have equal lengths ({listed})")
        if group:
            zips.append(group)

    if not grid and not zips:
        raise SpecError(
            f"{where}: empty grid: give at least one parameter with a list of values under "
            "[grid] (crossed) or [zip] (zipped)"
        )

    figures_by: tuple[str, ...] | None = None
    figures = _table(data.get("figures", {}), "figures", where)
    unknown = sorted(set(figures) - {"by"})
    if unknown:
        raise SpecError(f"{where}: [figures] knows only 'by', not {', '.join(unknown)}")
    if "by" in figures:
        by = figures["by"]
        if not isinstance(by, list) or not all(isinstance(b, str) for b in by):
            raise SpecError(f"{where}: [figures] by must be a list of parameter names")
        swept = set(grid) | {n for group in zips for n in group}
        bad = [b for b in by if b not in swept]
        if bad:
            raise SpecError(
                f"{where}: [figures] by names {', '.join(map(repr, bad))}, which are not swept "
                f"parameters ({', '.join(sorted(swept))})"
            )
        figures_by = tuple(by)

    spec = SweepSpec(experiment=ref, quick=quick, base=base_vals, grid=grid, zip=zips,
                     figures_by=figures_by, description=description)
    points = _expand(spec, experiment, where)
    return dataclasses.replace(spec, points=tuple(points))


def _table(value: Any, section: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: [{section}] must be a table of parameter = value(s)")
    return dict(value)


def _nonempty_list(values: Any, name: str, section: str, where: str) -> list[Any]:
    if not isinstance(values, list):
        raise SpecError(
            f"{where}: [{section}] {name} must be a list of values, e.g. {name} = "
            f"[{values!r}], got {values!r}"
        )
    if not values:
        raise SpecError(f"{where}: [{section}] {name} is an empty list: nothing to sweep")
    return values


def _expand(spec: SweepSpec, experiment: Experiment, where: str) -> list[SweepPoint]:
    axes: list[list[dict[str, Any]]] = [
        [{name: v} for v in values] for name, values in spec.grid.items()
    ]
    for group in spec.zip:
        names = list(group)
        axes.append([dict(zip(names, row)) for row in zip(*group.values())])
    points: list[SweepPoint] = []
    by_key: dict[str, SweepPoint] = {}
    for index, combo in enumerate(itertools.product(*axes)):
        swept = {name: value for part in combo for name, value in part.items()}
        try:
            config = experiment.default_config(quick=spec.quick, **spec.base, **swept)
        except (KeyError, TypeError, ValueError) as exc:
            msg = exc.args[0] if exc.args else exc
            label = ", ".join(f"{k}={_display(v)}" for k, v in swept.items())
            raise SpecError(f"{where}: point {index} ({label}) is invalid: {msg}") from None
        config_dict = config_to_dict(config)
        key = point_key(spec.experiment, config_dict)
        point = SweepPoint(index=index, key=key, grid=swept, config=config_dict)
        if key in by_key:
            raise SpecError(
                f"{where}: points {by_key[key].index} ({by_key[key].label()}) and {index} "
                f"({point.label()}) have the same config; remove the duplicate value"
            )
        by_key[key] = point
        points.append(point)
    return points
