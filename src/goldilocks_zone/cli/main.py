"""The ``goldilocks`` command line.

    goldilocks list
    goldilocks run EXPERIMENT [--quick] [--config FILE.toml] [--PARAM VALUE ...] --out DIR
    goldilocks plot DIR
    goldilocks diagnose --model package.module:factory --dataset NAME ...
    goldilocks sweep SPEC.toml --out DIR [--executor local|dask] [--workers N] [--scheduler ADDR]
    goldilocks collect DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any

from goldilocks_zone.experiments._shared import base
from goldilocks_zone.sweep.toml import read_toml


def _describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (tuple, list):
        return f"comma-separated {_describe_type(args[0]) if args else 'values'}"
    if args and origin is not None:
        return " or ".join(_describe_type(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def _cmd_list(args: argparse.Namespace) -> int:
    from goldilocks_zone import data, models

    print("Experiments:")
    for name in base.names():
        exp = base.get(name)
        print(f"  {name:22s} {exp.paper:22s} {exp.summary}")
    for title, names in (("Models", models.names()), ("Datasets", data.names())):
        print(f"\n{title}:")
        for name in names:
            print(f"  {name}")
    return 0


_NEGATIVE_VALUE = re.compile(r"^-\d|^-\.\d|^-inf", re.IGNORECASE)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--opt -3,3`` -> ``--opt=-3,3``: argparse would read a value that starts with '-' (a
    negative number or a comma-separated list of them) as an option."""
    out: list[str] = []
    for token in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1]
                and _NEGATIVE_VALUE.match(token)):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


class _BoolFlag(argparse.Action):
    """``--flag`` (true), ``--flag VALUE`` (true/false/yes/no/1/0) and ``--no-flag`` (false);
    the value is coerced with the config's other values."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            values = "false"
        setattr(namespace, self.dest, "true" if values is None else values)


def config_parser(experiment: base.Experiment) -> argparse.ArgumentParser:
    """``goldilocks run ID`` options generated from the experiment's config dataclass: one
    ``--field-name`` per field (a bool also gets ``--no-field-name``). Values stay strings here;
    :func:`~goldilocks_zone.experiments._shared.base.make_config` coerces them with the same
    function that reads TOML configs and sweep specs (types from the annotations: int, float,
    str, bool, comma-separated tuples, ``X | None`` with ``none``)."""
    parser = argparse.ArgumentParser(
        prog=f"goldilocks run {experiment.id}",
        description=f"{experiment.summary} ({experiment.paper}). Defaults are the paper's; "
        "--quick selects a small preset; --config reads options from a TOML file (a [config] "
        "table or top-level keys); explicit options win over both.",
    )
    parser.add_argument("--out", required=True, help="output folder for results and figures")
    parser.add_argument("--quick", action="store_true",
                        help=f"fast preset: {dict(experiment.quick)}")
    parser.add_argument("--config", help="TOML file with parameter values")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-plot", action="store_true", help="skip drawing figures")
    hints = typing.get_type_hints(experiment.config_cls)
    defaults = experiment.config_cls()
    for f in dataclasses.fields(experiment.config_cls):
        option = f"--{f.name.replace('_', '-')}"
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)!r})"
        if hints[f.name] is bool:
            parser.add_argument(option, f"--no-{f.name.replace('_', '-')}", dest=f.name,
                                default=None, nargs="?", action=_BoolFlag, metavar="BOOL",
                                help=help_text.strip())
            continue
        parser.add_argument(option, dest=f.name, default=None,
                            metavar=_describe_type(hints[f.name]).upper().replace(" ", "_"),
                            help=help_text.strip())
    return parser


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def _known(name: str, choices: list[str]) -> bool:
    return name.lower() in {c.lower() for c in choices}


def check_names(config: Any) -> None:
    """Raise :class:`UsageError` listing the choices when a config names an unknown model or
    dataset (before any data is loaded). A model may also be an ``mlp:W1xW2`` spec or a
    ``package.module:factory`` reference, passed through to the model registry."""
    from goldilocks_zone import data, models
    from goldilocks_zone.data.registry import canonical_name

    for key in ("model", "models"):
        for name in _as_list(getattr(config, key, ())):
            if not (_known(name, models.names()) or name == "mlp" or ":" in name):
                raise UsageError(f"unknown model {name!r}; choose one of: "
                                 f"{', '.join(models.names())} (or mlp:W1xW2..., "
                                 "or package.module:factory)")
    for key in ("dataset", "datasets", "other_dataset"):
        for name in _as_list(getattr(config, key, ())):
            if name and canonical_name(name) is None:
                raise UsageError(f"unknown dataset {name!r}; choose one of: "
                                 f"{', '.join(data.names())}")


def _as_list(value: Any) -> list[str]:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _cmd_run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: goldilocks run EXPERIMENT [--quick] [--config FILE] [--PARAM VALUE ...] "
              "--out DIR\n\nexperiments: " + ", ".join(base.names()) +
              "\n\n'goldilocks run EXPERIMENT --help' lists an experiment's parameters.")
        return 0
    try:
        experiment = base.get(argv[0])
        args = config_parser(experiment).parse_args(_join_negative_values(argv[1:]))
        values: dict[str, Any] = dict(experiment.quick) if args.quick else {}
        if args.config:
            toml = read_toml(args.config, what="config file", error=UsageError)
            values.update(toml.get("config", toml))
        values.update((f.name, v) for f in dataclasses.fields(experiment.config_cls)
                      if (v := getattr(args, f.name)) is not None)
        config = experiment.config_from_dict(values)
        check_names(config)
    except (UsageError, KeyError, TypeError, ValueError) as exc:
        print(f"goldilocks run: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2

    from goldilocks_zone.cli.sweep import EXIT_USAGE, EXIT_WRITE_ERROR
    from goldilocks_zone.files import StoreWriteError, make_dir
    from goldilocks_zone.sweep.runner import run_experiment

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"goldilocks run: error: --out {str(out)!r} is a file, not a folder",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        make_dir(out)  # before the computation: an unwritable --out fails in a second
        table, manifest = run_experiment(experiment.id, config, out, quick=args.quick,
                                         show_progress=not args.no_progress,
                                         plot=not args.no_plot)
    except StoreWriteError as exc:
        print(f"goldilocks run: error: {exc} (nothing partial was left; free space or fix "
              "permissions and rerun)", file=sys.stderr)
        return EXIT_WRITE_ERROR
    _print_summary(table, manifest, out, experiment.key_columns)
    return 0


#: Columns that hold a measurement, for the short printed table (the key columns, which index
#: a measured point, are declared by each experiment).
_MEASURE_COLUMNS = ("positive_curvature", "fraction_positive", "spectral_norm",
                    "top_eigenvalue", "loss", "accuracy", "gradient_norm", "cosine")
_MAX_ROWS = 30


def short_table(table, key_columns: tuple[str, ...] = ()):
    """A short view of a results table: the measurements averaged over seeds per point when
    the experiment's ``key_columns`` and ``seed`` identify the rows exactly (so nothing but
    seeds is averaged), else the table itself."""
    keys = [c for c in key_columns if c in table.columns]
    measures = [c for c in _MEASURE_COLUMNS if c in table.columns
                and table[c].dtype.kind in "fiu"]
    if (keys and measures and "seed" in table.columns
            and not table.duplicated(subset=[*keys, "seed"]).any()):
        short = table.groupby(keys, sort=False, dropna=False)[measures].mean().reset_index()
        return short, "mean over seeds"
    return table, ""


def _print_summary(table, manifest: dict, out: Path, key_columns: tuple[str, ...]) -> None:
    import pandas as pd

    short, note = short_table(table, key_columns)
    with pd.option_context("display.max_rows", _MAX_ROWS, "display.width", 120,
                           "display.float_format", "{:.4g}".format):
        print(short.head(_MAX_ROWS).to_string(index=False))
    parts = [f"first {_MAX_ROWS} of {len(short)} rows" if len(short) > _MAX_ROWS
             else f"{len(short)} rows"]
    if note:
        parts.append(note)
    parts.append(f"full table: {len(table)} rows in results.csv")
    print("(" + "; ".join(parts) + ")")
    summary = manifest.get("provenance", {}).get("summary")
    if summary:
        print("\nSummary:")
        for k, v in summary.items():
            print(f"  {k}: {v}")
    print(f"\nresults: {out / 'results.csv'}")
    for fig in manifest.get("figures", []):
        if fig.endswith(".png"):
            print(f"figure:  {out / fig}")


def _cmd_plot(args: argparse.Namespace) -> int:
    import json

    from goldilocks_zone.sweep.runner import MANIFEST, replot

    manifest = Path(args.dir) / MANIFEST
    kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    try:
        if kind == "diagnosis":
            from goldilocks_zone.diagnosis.folder import redraw
            from goldilocks_zone.files import write_figures

            paths, _ = write_figures(Path(args.dir),
                                     lambda fig_dir: (redraw(args.dir, fig_dir), []))
        elif kind == "sweep":
            from goldilocks_zone.sweep.collect import collect

            collect(args.dir)  # a sweep folder: merge its points and redraw per group
            paths = sorted((Path(args.dir) / "figures").rglob("*.png"))
        else:
            paths = replot(args.dir)
    except (FileNotFoundError, KeyError) as exc:
        raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    for p in paths:
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="goldilocks",
        description="Measure and reproduce the Goldilocks zone of neural-network "
        "initialisation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list experiments, models and datasets")
    sub.add_parser("run", help="run an experiment: goldilocks run EXPERIMENT --help",
                   add_help=False)
    p_plot = sub.add_parser("plot", help="redraw figures from a results folder")
    p_plot.add_argument("dir")
    sub.add_parser("diagnose", help="is my model's initialisation in the zone?", add_help=False)
    sub.add_parser("sweep", help="run a grid of experiment points from a TOML spec",
                   add_help=False)
    sub.add_parser("collect", help="merge a sweep's finished points into results tables",
                   add_help=False)

    if argv and argv[0] == "run":
        return _cmd_run(argv[1:])
    if argv and argv[0] == "diagnose":
        from goldilocks_zone.cli.diagnose import main as diagnose_main

        return diagnose_main(argv[1:])
    if argv and argv[0] in ("sweep", "collect"):
        from goldilocks_zone.cli import sweep as sweep_cli

        return sweep_cli.main(argv)
    args = parser.parse_args(argv)
    if args.command == "list":
        return _cmd_list(args)
    if args.command == "plot":
        return _cmd_plot(args)
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
