"""Atomic file writing: the one writer of every file the package saves, and of a results
folder (``results.csv``, ``results.parquet``, ``manifest.json``, ``figures/``).

:func:`atomic_write_bytes` writes a uniquely named temporary file in the target's folder,
fsyncs it and renames it over the target (:func:`os.replace`), so concurrent readers and
writers only ever see the complete old or the complete new file. A crash leaves at most an
orphan ``.<name>.<random>.tmp``, which is never read. :func:`write_results` writes a whole
results folder through it: ``goldilocks run``, ``collect``, ``diagnose --out`` and
``CurvatureMonitor.save`` all write their folders with it. This module is the lowest layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "MANIFEST", "RESULTS_CSV", "RESULTS_PARQUET", "TMP_SUFFIX",
           "StoreWriteError", "atomic_write_bytes", "atomic_write_text", "make_dir",
           "write_figures", "write_results", "write_table"]

TMP_SUFFIX = ".tmp"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
MANIFEST = "manifest.json"
FIGURES = "figures"


class StoreWriteError(OSError):
    """A file of a results folder could not be written (disk full, quota, permissions, ...).

    ``path`` is the file, ``cause`` the original :class:`OSError`; nothing partial was left."""

    def __init__(self, path: str | Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path = Path(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.cause.strerror or self.cause}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` would give (mkstemp's files are 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()  # read once: os.umask is process-wide, not thread-safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, never a
    mixture, whatever other writers do at the same time: a uniquely named temp file in the
    same folder, fsync, :func:`os.replace`, fsync of the folder. Raises
    :class:`StoreWriteError` (no temp file left) if any step fails."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise StoreWriteError(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StoreWriteError(path, exc) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def make_dir(path: Path) -> Path:
    """``mkdir -p`` that reports a failure as :class:`StoreWriteError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreWriteError(path, exc) from exc
    return path


# ------------------------------------------------------------------- results folders


def write_table(table: Any, out_dir: Path) -> list[str]:
    """Write ``results.csv`` then ``results.parquet`` atomically; return the problems that
    are not write errors (a column pyarrow cannot type: the CSV is written, a stale parquet
    file is removed so the two never disagree). Write errors raise :class:`StoreWriteError`."""
    make_dir(out_dir)
    atomic_write_text(out_dir / RESULTS_CSV, table.to_csv(index=False))
    try:
        data = table.to_parquet(None, index=False)
    except Exception as exc:  # noqa: BLE001 - e.g. a column pyarrow cannot type
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_dir / RESULTS_PARQUET)
        return [f"{RESULTS_PARQUET} not written: {type(exc).__name__}: {exc}"]
    atomic_write_bytes(out_dir / RESULTS_PARQUET, data)
    return []


#: ``draw(fig_dir) -> (paths drawn, error messages)``
Draw = Callable[[Path], "tuple[list[Path], list[str]]"]


def write_figures(out_dir: Path, draw: Draw) -> tuple[list[Path], list[str]]:
    """Draw figures into a private temporary folder, then publish every file into
    ``out_dir/figures`` with :func:`atomic_write_bytes` (so concurrent collects never expose a
    half-written figure). Returns the published paths (and the drawer's error messages); an
    exception from ``draw`` propagates after the temporary folder is removed."""
    make_dir(out_dir)
    final = out_dir / FIGURES
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{FIGURES}.", suffix=TMP_SUFFIX, dir=out_dir))
    except OSError as exc:
        raise StoreWriteError(out_dir / FIGURES, exc) from exc
    try:
        drawn, errors = draw(tmp)
        for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = final / src.relative_to(tmp)
            make_dir(target.parent)
            atomic_write_bytes(target, src.read_bytes())
        published = [final / Path(p).relative_to(tmp) if Path(p).is_relative_to(tmp)
                     else Path(p) for p in drawn]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return published, list(errors)


def write_results(out_dir: str | Path, table: Any, manifest: dict[str, Any], *,
                  draw: Draw | None = None) -> dict[str, Any]:
    """The one way a results folder is written, by ``goldilocks run`` and by collect:
    the table (:func:`write_table`), then the figures (:func:`write_figures`, if ``draw``),
    then the manifest, which records ``table_errors``, ``figures``, ``figure_errors`` and
    ``timings.plot_seconds``. Returns the manifest as written."""
    out = make_dir(Path(out_dir))
    manifest = dict(manifest)
    manifest["table_errors"] = write_table(table, out)
    manifest.setdefault("figures", [])
    manifest.setdefault("figure_errors", [])
    if draw is not None:
        started = time.time()
        figures, errors = write_figures(out, draw)
        manifest["timings"] = {**manifest.get("timings", {}),
                               "plot_seconds": time.time() - started}
        manifest["figures"] = [str(p.relative_to(out)) if p.is_relative_to(out) else str(p)
                               for p in figures]
        manifest["figure_errors"] = errors
    atomic_write_text(out / MANIFEST,
                      json.dumps(manifest, indent=2, default=_json_default, allow_nan=True))
    return manifest
