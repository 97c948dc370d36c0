"""retain_freed_memory: freed blocks of the engine's size are reused, not page-faulted in."""

import platform
import resource
import subprocess
import sys

import pytest

from goldilocks_zone.curvature.allocator import MAX_MMAP_THRESHOLD, retain_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


_MEASURE = """
import resource, sys, torch
from goldilocks_zone.curvature.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() is True
numel, cycles = int(sys.argv[2]), 6
torch.empty(numel, dtype=torch.float64).fill_(1.0)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(cycles):
    t = torch.empty(numel, dtype=torch.float64)
    t.fill_(1.0)
    del t
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles)
"""


def _faults_per_cycle(numel: int, setting: str) -> float:
    """Minor page faults per allocate-fill-free cycle of a float64 tensor of ``numel``,
    measured in a fresh interpreter (the test runner's own heap and threads do not matter)."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, setting, str(numel)],
                         capture_output=True, text=True, check=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    numel = 30 * 2**20 // 8  # 30 MiB, the size of one chunk's tangents on LeNet-300-100
    pages = numel * 8 / resource.getpagesize()
    assert _faults_per_cycle(numel, "retain") < 0.05 * pages


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="mmap_threshold"):
        retain_freed_memory(mmap_threshold=MAX_MMAP_THRESHOLD + 1)
    with pytest.raises(ValueError, match="mmap_threshold"):
        retain_freed_memory(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        retain_freed_memory(trim_threshold=-1)
