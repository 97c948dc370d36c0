"""The result store: the layout of results and sweep folders and the sweep's point records.

A results folder (``goldilocks run`` and ``goldilocks collect`` both write one)::

    DIR/results.csv|parquet     the tidy table
    DIR/manifest.json           config/spec, provenance, counts, timings, versions, figures
    DIR/figures/...             the experiment's figures drawn from the table

A sweep folder adds, written only by the driver process while it holds the lock::

    DIR/sweep.json              the normalized spec, its hash and the list of points
    DIR/points/<key>.json       one record per finished point (status done or failed)
    DIR/.lock                   held (flock) by the driver while a sweep runs

Every file is committed by :func:`goldilocks_zone.files.atomic_write_bytes` (the only writer
in the package), so concurrent readers and writers only ever see the complete old or the
complete new file; a crash leaves at most an orphan ``.<name>.<random>.tmp`` that is never
read and is removed by a later sweep (:meth:`PointStore.remove_orphans`). Guarantees in full:
docs/sweeps.md.

Each point record carries ``checksum``: the SHA-256 of its canonical JSON (sorted keys,
compact, without the checksum itself). A record whose checksum does not match, or that does
not parse, is treated as missing (with a :class:`CorruptPointWarning`): it never reaches a
table and the next sweep recomputes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from goldilocks_zone.files import (
    MANIFEST,
    TMP_SUFFIX,
    StoreWriteError,
    atomic_write_text,
    make_dir,
)
from goldilocks_zone.sweep.spec import SpecError, SweepSpec, canonical_json
from goldilocks_zone.sweep.worker import DONE, FAILED

SWEEP_FILE = "sweep.json"
POINTS_DIR = "points"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1
CHECKSUM = "checksum"
#: A temporary file or folder untouched for this long belongs to a dead writer.
STALE_SECONDS = 3600.0


class CorruptPointWarning(UserWarning):
    """A committed point file does not parse or fails its checksum; it is treated as missing."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def _read_json(path: Path, folder_kind: str) -> dict[str, Any]:
    """The JSON file ``path``; FileNotFoundError saying that its folder is not ``folder_kind``
    when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {path.parent} is not {folder_kind}")
    return json.loads(path.read_text())


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    return _read_json(Path(out_dir) / MANIFEST, "a results folder written by 'goldilocks run' "
                      "or 'goldilocks collect'")


def record_checksum(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``record`` without its ``checksum`` field."""
    text = canonical_json({k: v for k, v in record.items() if k != CHECKSUM})
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class PointStore:
    """The points of one sweep folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.points_dir = self.root / POINTS_DIR

    # ---------------------------------------------------------------- sweep identity
    def read_sweep(self) -> dict[str, Any]:
        return _read_json(self.root / SWEEP_FILE, "a sweep folder written by 'goldilocks sweep'")

    def check_compatible(self, spec: SweepSpec) -> None:
        """Raise :class:`SpecError` if the folder holds a different sweep or other files;
        reads only (creates nothing)."""
        path = self.root / SWEEP_FILE
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("spec_hash") != spec.hash:
                old = stored.get("spec", {})
                raise SpecError(
                    f"{self.root} already holds a different sweep (experiment "
                    f"{old.get('experiment')!r}, spec hash {stored.get('spec_hash')} != "
                    f"{spec.hash} of this spec). Use a new --out folder, or rerun the spec "
                    f"stored in {path} to resume it."
                )
        elif self.root.exists() and not self.root.is_dir():
            raise SpecError(f"output {self.root} exists and is not a folder")
        elif self.root.is_dir():
            others = [p.name for p in self.root.iterdir() if p.name != LOCK_FILE]
            if others:
                raise SpecError(
                    f"output folder {self.root} is not empty and holds no {SWEEP_FILE} "
                    f"(found {', '.join(sorted(others)[:5])}); use a new or empty folder"
                )

    def initialise(self, spec: SweepSpec) -> None:
        """Bind the folder to ``spec``: write ``sweep.json`` if new, else check it describes
        the same points (:meth:`check_compatible`) and refresh it (the figure grouping, the
        description and the order of the grid may change between runs)."""
        self.check_compatible(spec)
        path = self.root / SWEEP_FILE
        make_dir(self.points_dir)
        document = {
            "format": FORMAT_VERSION,
            "spec_hash": spec.hash,
            "spec": spec.normalized(),
            "swept": spec.swept,
            "points": [{"index": p.index, "key": p.key, "grid": p.grid} for p in spec.points],
        }
        text = _dumps(document)
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)

    # ---------------------------------------------------------------- locking
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder (released by the OS if the process dies)."""
        make_dir(self.root)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no locking
            yield
            return
        try:
            fh = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise StoreWriteError(self.root / LOCK_FILE, exc) from exc
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    fh.seek(0)
                    holder = fh.read().strip() or "?"
                    raise SpecError(
                        f"another sweep is running in {self.root} (pid {holder}); wait for it "
                        "or stop it first"
                    ) from None
                raise
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def remove_orphans(self) -> list[Path]:
        """Delete temporary files left by a crashed writer (call only while holding the lock).

        In ``points/`` and of ``sweep.json`` only the lock holder writes, so every temp file
        there is an orphan. Elsewhere in the folder a concurrent ``collect`` may be writing
        (results, manifest, figures): those temp files are removed only once untouched for
        :data:`STALE_SECONDS`."""
        removed = []
        now = time.time()
        for folder in (self.root, self.points_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)):
                    continue
                mine = folder == self.points_dir or p.name.startswith(f".{SWEEP_FILE}.")
                with contextlib.suppress(OSError):
                    if not mine and now - p.stat().st_mtime < STALE_SECONDS:
                        continue
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(p)
        return removed

    # ---------------------------------------------------------------- points
    def point_path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def commit(self, record: dict[str, Any]) -> Path:
        """Atomically write a point's record (status ``done`` or ``failed``) with its
        checksum (:func:`record_checksum`)."""
        if record.get("status") not in (DONE, FAILED):
            raise ValueError(f"a point record needs status done or failed, got "
                             f"{record.get('status')!r}")
        body = json.loads(_dumps({k: v for k, v in record.items() if k != CHECKSUM}))
        body[CHECKSUM] = record_checksum(body)
        path = self.point_path(record["key"])
        atomic_write_text(path, _dumps(body))
        return path

    def load(self, key: str) -> dict[str, Any] | None:
        """The record of point ``key``, or ``None`` if it has none, or an unreadable or
        corrupt one (does not parse, or its checksum does not match: warned about with
        :class:`CorruptPointWarning`, and recomputed by the next sweep). Records written
        before checksums existed (no ``checksum`` field) are read as they are."""
        path = self.point_path(key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"{path} does not parse; treated as not run (it will be recomputed)",
                          CorruptPointWarning, stacklevel=2)
            return None
        if not isinstance(record, dict):
            return None
        stored = record.get(CHECKSUM)
        if stored is not None and stored != record_checksum(record):
            warnings.warn(f"{path} fails its checksum (the file was altered after it was "
                          "committed); treated as not run (it will be recomputed)",
                          CorruptPointWarning, stacklevel=2)
            return None
        if record.get("key") != key or record.get("status") not in (DONE, FAILED):
            return None
        return record

    def statuses(self) -> dict[str, str]:
        """``{key: "done" | "failed"}`` for every committed point file (``*.tmp`` ignored)."""
        if not self.points_dir.is_dir():
            return {}
        keys = [p.stem for p in self.points_dir.iterdir()
                if p.suffix == ".json" and not p.name.startswith(".")]
        return {key: record["status"] for key in keys if (record := self.load(key)) is not None}

