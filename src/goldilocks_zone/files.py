"""Atomic file writing: the one writer of every file the package saves.

:func:`atomic_write_bytes` writes a uniquely named temporary file in the target's folder,
fsyncs it and renames it over the target (:func:`os.replace`), so concurrent readers and
writers only ever see the complete old or the complete new file. A crash leaves at most an
orphan ``.<name>.<random>.tmp``, which is never read. This module is the lowest layer: the
result store (:mod:`goldilocks_zone.sweep.store`), the curvature monitor's ``save`` and the
diagnosis folder all write through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["TMP_SUFFIX", "StoreWriteError", "atomic_write_bytes", "atomic_write_text",
           "fsync_dir"]

TMP_SUFFIX = ".tmp"


class StoreWriteError(OSError):
    """A file of a results folder could not be written (disk full, quota, permissions, ...).

    ``path`` is the file, ``cause`` the original :class:`OSError`; nothing partial was left."""

    def __init__(self, path: str | Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path = Path(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.cause.strerror or self.cause}"


def fsync_dir(path: Path) -> None:
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
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))
