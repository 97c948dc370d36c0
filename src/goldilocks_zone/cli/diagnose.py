"""``goldilocks diagnose``: is a model's initialisation in the Goldilocks zone?

Every option is validated before any data are loaded or any curvature is computed (bad
options: one line on stderr, exit status 2); ``--out`` is created and proven writable first,
and files of an earlier diagnosis in it are removed. The run folder (manifest, tidy table,
summary, report, figure) can be redrawn with ``goldilocks plot DIR``. Guide: docs/diagnose.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROG = "goldilocks diagnose"


class _Usage(Exception):
    """A bad option: reported in one line, exit status 2."""


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None


def build_parser() -> argparse.ArgumentParser:
    from goldilocks_zone.diagnosis.api import DEFAULT_BUDGET_SECONDS, QUICK_BUDGET_SECONDS

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Is a model's initialisation in the Goldilocks zone? Measures the positive "
        "curvature kappa of the loss Hessian in random subspaces along the weight-scale (or "
        "softmax-temperature) axis, with confidence intervals over several bases (and inits "
        "for a model factory), and says what to change. Guide: docs/diagnose.md.")
    p.add_argument("--model", required=True,
                   help="registry name (see 'goldilocks list') or package.module:factory; a "
                   "factory is called with in_shape=/num_classes= when it accepts them and is "
                   "seeded with --seed")
    p.add_argument("--dataset", required=True, help="registry data set name")
    p.add_argument("--split", default="train", help="data split (default: train)")
    for option, text in (
            ("--num-samples", "samples N (default: chosen by a timing probe to fit --budget)"),
            ("--dim", "subspace dimension d (default: chosen by the timing probe)"),
            ("--bases", "random bases per model (default 4; 3 with a factory)"),
            ("--inits", "initialisations of a factory model (default 2)")):
        p.add_argument(option, type=int, default=None, help=text)
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the model's init, the bases and the data subsample")
    p.add_argument("--axis", choices=("scale", "temperature"), default=None,
                   help="scale: multiply the weights (default); temperature: divide the logits")
    p.add_argument("--scales", type=_floats, default=None,
                   help="comma-separated weight scales (default 1e-2 .. 1e2)")
    p.add_argument("--temperatures", type=_floats, default=None,
                   help="comma-separated temperatures (implies --axis temperature)")
    p.add_argument("--no-scales", action="store_true",
                   help="measure along the temperature axis only (= --axis temperature)")
    p.add_argument("--activation", default=None, help="registry models only (default relu)")
    p.add_argument("--init", default=None, help="registry models only (default kaiming)")
    p.add_argument("--dtype", default="float32",
                   help="float32 (default: what models train in, ~3x faster) or float64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="engine chunk size")
    p.add_argument("--train-mode", action="store_true",
                   help="evaluate in train mode (BatchNorm batch statistics); default eval")
    p.add_argument("--all-params", action="store_true",
                   help="include frozen parameters (requires_grad=False) in the subspaces")
    p.add_argument("--zone-fraction", type=float, default=0.5,
                   help="the zone is where kappa >= this fraction of its peak (default 0.5)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the measurement (default {DEFAULT_BUDGET_SECONDS:g}; "
                   f"{QUICK_BUDGET_SECONDS:g} with --quick)")
    p.add_argument("--quick", action="store_true", help="coarser grid and a smaller budget")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout instead of the report")
    p.add_argument("--out", default=None,
                   help="folder for manifest, table, report, summary and figure")
    return p


def _validate(args: argparse.Namespace) -> dict:
    """Check every option and resolve names; returns what the run needs. Raises _Usage."""
    from goldilocks_zone import data, models
    from goldilocks_zone.data.registry import canonical_name
    from goldilocks_zone.diagnosis.inputs import parse_device, parse_dtype

    if args.scales is not None and (args.no_scales or args.axis == "temperature"
                                    or args.temperatures is not None):
        raise _Usage("--scales conflicts with --no-scales / --temperatures / --axis "
                     "temperature: choose one axis")
    if args.temperatures is not None and args.axis == "scale":
        raise _Usage("--temperatures conflicts with --axis scale")
    axis = args.axis or ("temperature" if args.no_scales or args.temperatures is not None
                         else None)
    grid = args.scales if args.scales is not None else args.temperatures
    if grid is not None and (len(grid) < 3 or any(not v > 0 for v in grid)):
        raise _Usage("--scales/--temperatures need at least 3 positive numbers")
    for name in ("num_samples", "dim", "bases", "inits", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise _Usage(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.budget is not None and not args.budget > 0:
        raise _Usage(f"--budget must be a positive number of seconds, got {args.budget}")
    if not 0 < args.zone_fraction < 1:
        raise _Usage(f"--zone-fraction must lie in (0, 1), got {args.zone_fraction}")
    factory = ":" in args.model
    if factory:
        if args.activation is not None or args.init is not None:
            raise _Usage("--activation and --init apply to registry models only; a "
                         f"factory ({args.model}) builds its model itself")
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # so that my_models:build finds ./my_models.py
        try:
            models.resolve_factory(args.model)
        except ValueError as exc:
            raise _Usage(str(exc)) from None
    else:
        if args.model not in models.names():
            raise _Usage(f"unknown model {args.model!r}; choose one of "
                         f"{', '.join(models.names())}, or package.module:factory")
        if args.inits not in (None, 1):
            raise _Usage("--inits needs a factory model (package.module:factory); a registry "
                         "model is one seeded init — change --seed for another")
        if args.activation is not None and args.activation not in models.ACTIVATIONS:
            raise _Usage(f"unknown activation {args.activation!r}; choose one of "
                         f"{', '.join(models.ACTIVATIONS)}")
        if args.init is not None and args.init not in models.INIT_SCHEMES:
            raise _Usage(f"unknown init {args.init!r}; choose one of "
                         f"{', '.join(models.INIT_SCHEMES)}")
    if canonical_name(args.dataset) is None:
        raise _Usage(f"unknown dataset {args.dataset!r}; choose one of "
                     f"{', '.join(data.names())}")
    try:
        dtype, device = parse_dtype(args.dtype), parse_device(args.device)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    out = None
    if args.out is not None:
        from goldilocks_zone.diagnosis.folder import check_out_dir, remove_stale

        try:
            out = check_out_dir(args.out)
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        remove_stale(out)
    return {"axis": axis, "grid": grid, "factory": factory, "dtype": dtype, "device": device,
            "out": out}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        checked = _validate(args)
    except _Usage as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from goldilocks_zone import data as data_lib
    from goldilocks_zone import models
    from goldilocks_zone.diagnosis import diagnose

    started = time.time()
    progress = not args.no_progress
    try:
        if progress:
            print(f"loading {args.dataset} ({args.split}) ...", file=sys.stderr, flush=True)
        from goldilocks_zone.diagnosis.measure import MAX_SAMPLES

        # a seeded subsample at load time: the diagnosis never uses more than MAX_SAMPLES
        ds = data_lib.load(args.dataset, split=args.split,
                           num_samples=args.num_samples or MAX_SAMPLES, seed=args.seed)
        dtype, device = checked["dtype"], checked["device"]

        def build(seed: int | None = args.seed):
            net = models.create(args.model, tuple(ds.input_shape), ds.num_classes,
                                activation=args.activation, init=args.init, seed=seed)
            return net.to(dtype=dtype, device=device)  # our own instance, built here

        if checked["factory"]:
            # diagnose seeds each call with seed + i (torch.manual_seed under fork_rng)
            model = lambda: build(None)  # noqa: E731
        else:
            model = build()
        result = diagnose(
            model, ds, axis=checked["axis"], grid=checked["grid"], dim=args.dim,
            num_samples=args.num_samples,
            num_bases=args.bases or (3 if checked["factory"] else 4),
            num_inits=args.inits if checked["factory"] else None, seed=args.seed,
            budget_seconds=args.budget, quick=args.quick, trainable_only=not args.all_params,
            train_mode=args.train_mode, zone_fraction=args.zone_fraction,
            batch_size=args.batch_size, progress=progress,
            model_name=f"{args.model} on {args.dataset}")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"{PROG}: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.summary(), indent=2, default=str))
    else:
        print(result.report())
    if checked["out"] is not None:
        figures = _write_folder(checked["out"], result, args, argv, started)
        if not args.json:
            print(f"\nfolder:  {checked['out']}\nreport:  {checked['out'] / 'report.txt'}"
                  f"\nfigure:  {figures[0]}")
    return 0


def _write_folder(out: Path, result, args: argparse.Namespace, argv: list[str],
                  started: float) -> list[Path]:
    from goldilocks_zone.diagnosis.folder import write_run_folder
    from goldilocks_zone.sweep.runner import run_provenance

    config = {k: v for k, v in vars(args).items() if k not in ("out", "json", "no_progress")}
    manifest = {
        "experiment": "diagnose",
        "summary": "Is a model's initialisation in the Goldilocks zone?",
        "quick": args.quick,
        "config": config,
        "provenance": {"verdict": result.label, "budget": result.budget_note,
                       "num_samples": result.num_samples, "dim": result.dim},
        **run_provenance(args.device, args.dtype, args.seed, ["goldilocks", "diagnose", *argv],
                         started),
        "timings": {"run_seconds": result.seconds, "total_seconds": time.time() - started},
    }
    return write_run_folder(out, result, manifest)
