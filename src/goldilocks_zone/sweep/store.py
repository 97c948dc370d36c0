"""The result store of a sweep folder; only the driver process writes to it.

Layout::

    DIR/sweep.json              the normalized spec, its hash and the list of points
    DIR/points/<key>.json       one record per finished point (status done or failed)
    DIR/.lock                   held (flock) by the driver while a sweep runs
    DIR/results.csv|parquet     merged table of the done points (written by collect)
    DIR/manifest.json           spec, counts, timings, versions, figures (written by collect)
    DIR/figures/...             the experiment's figures drawn from the merged table

Every file is committed atomically: written to a temporary file in the same folder, flushed
and fsync'ed, then renamed over the final name with :func:`os.replace` (atomic on POSIX), and
the folder is fsync'ed. A crash at any instant leaves either the old file, the new file, or
an orphan ``*.tmp`` file that is never read as a point and is removed by the next sweep.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from goldilocks_zone.sweep.spec import SpecError, SweepSpec
from goldilocks_zone.sweep.worker import DONE, FAILED

SWEEP_FILE = "sweep.json"
POINTS_DIR = "points"
LOCK_FILE = ".lock"
TMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the new, never a
    mixture: temp file in the same folder, fsync, :func:`os.replace`, fsync of the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


class PointStore:
    """The points of one sweep folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.points_dir = self.root / POINTS_DIR

    # ---------------------------------------------------------------- sweep identity
    def read_sweep(self) -> dict[str, Any]:
        path = self.root / SWEEP_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {self.root} is not a sweep folder written by "
                "'goldilocks sweep'"
            )
        return json.loads(path.read_text())

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
        else:
            if self.root.exists() and not self.root.is_dir():
                raise SpecError(f"output {self.root} exists and is not a folder")
            if self.root.is_dir():
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
        self.root.mkdir(parents=True, exist_ok=True)
        self.points_dir.mkdir(parents=True, exist_ok=True)
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
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no locking
            yield
            return
        with open(self.root / LOCK_FILE, "a+") as fh:
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
        """Delete temporary files left by a crashed writer (call only while holding the lock)."""
        removed = []
        for folder in (self.root, self.points_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if p.name.endswith(TMP_SUFFIX) and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed.append(p)
        return removed

    # ---------------------------------------------------------------- points
    def point_path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def commit(self, record: dict[str, Any]) -> Path:
        """Atomically write a point's record (status ``done`` or ``failed``)."""
        if record.get("status") not in (DONE, FAILED):
            raise ValueError(f"a point record needs status done or failed, got "
                             f"{record.get('status')!r}")
        path = self.point_path(record["key"])
        atomic_write_text(path, _dumps(record))
        return path

    def load(self, key: str) -> dict[str, Any] | None:
        """The record of point ``key``, or ``None`` if it has none (or an unreadable one)."""
        path = self.point_path(key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            return None  # cannot come from commit(); treat as not run, it will be rewritten
        if record.get("key") != key or record.get("status") not in (DONE, FAILED):
            return None
        return record

    def statuses(self) -> dict[str, str]:
        """``{key: "done" | "failed"}`` for every committed point file (``*.tmp`` ignored)."""
        out: dict[str, str] = {}
        if not self.points_dir.is_dir():
            return out
        for p in self.points_dir.iterdir():
            if p.suffix != ".json" or p.name.startswith("."):
                continue
            record = self.load(p.stem)
            if record is not None:
                out[p.stem] = record["status"]
        return out

