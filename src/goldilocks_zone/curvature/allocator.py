r"""Keep freed memory in the process, so the engine's large temporaries are not page-faulted in
again on every chunk.

The forward-over-reverse pass allocates and frees, per chunk, tensors of d × B × width numbers
(30 MB for LeNet-300-100 at d = 50, B = 256, float64). With glibc's default settings a block
that large may be served by ``mmap`` and handed back to the kernel when freed, and the next
chunk's block of the same size then costs one page fault per 4 KiB page (plus the kernel
zeroing it) on first touch — for memory-bound element-wise kernels that is as much time as the
kernel itself. PyTorch's CPU allocator has no cache of its own; its tuning guide recommends a
caching ``malloc``. :func:`retain_freed_memory` does the same with glibc's own knobs
(``mallopt``): blocks up to ``mmap_threshold`` bytes come from the heap, and freed heap memory
is kept up to ``trim_threshold`` bytes for the next chunk.

It changes the whole process (every later allocation), so the library never calls it on its
own: the ``goldilocks`` command line and the benchmarks call it at start-up, and a user's
script may call it once. On a C library other than glibc it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["retain_freed_memory"]

# mallopt parameter numbers (glibc <malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: The largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2 = 32 MiB);
#: blocks larger than this are always mapped, whatever the setting.
MAX_MMAP_THRESHOLD = 32 * 2**20

#: Freed heap memory kept for reuse before it is handed back to the kernel: a few chunks'
#: worth of the largest temporaries (the peak memory of a pass does not change, only whether
#: it is returned between chunks).
DEFAULT_TRIM_THRESHOLD = 1024 * 2**20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def retain_freed_memory(mmap_threshold: int = MAX_MMAP_THRESHOLD,
                        trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Ask glibc to serve blocks up to ``mmap_threshold`` bytes from the heap and to keep up
    to ``trim_threshold`` bytes of freed heap memory. Returns True when every setting was
    accepted, False on a C library without ``mallopt`` (nothing is changed there).

    Raises ValueError for a threshold outside ``0 < mmap_threshold <= MAX_MMAP_THRESHOLD``
    or a negative ``trim_threshold``."""
    if not 0 < mmap_threshold <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold must be in (0, {MAX_MMAP_THRESHOLD}] bytes (glibc's "
                         f"limit), got {mmap_threshold}")
    if trim_threshold < 0:
        raise ValueError(f"trim_threshold must be >= 0 bytes, got {trim_threshold}")
    libc = _libc()
    if libc is None:
        return False
    accepted = [libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)),
                libc.mallopt(_M_TRIM_THRESHOLD, int(min(trim_threshold, 2**31 - 1))),
                libc.mallopt(_M_TOP_PAD, int(min(64 * 2**20, trim_threshold)))]
    return all(a == 1 for a in accepted)
