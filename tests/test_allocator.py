"""retain_freed_memory: freed blocks of the engine's size are reused, not page-faulted in."""

import platform
import resource

import pytest
import torch

from goldilocks_zone.curvature.allocator import MAX_MMAP_THRESHOLD, retain_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _faults_per_cycle(numel: int, cycles: int = 6) -> float:
    """Minor page faults per allocate-fill-free cycle of a float64 tensor of ``numel``."""
    torch.empty(numel, dtype=torch.float64).fill_(1.0)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        t = torch.empty(numel, dtype=torch.float64)
        t.fill_(1.0)
        del t
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    numel = 30 * 2**20 // 8  # 30 MiB, the size of one chunk's tangents on LeNet-300-100
    assert retain_freed_memory() is True
    pages = numel * 8 / resource.getpagesize()
    # with the default settings every cycle of a block this size can fault in every page
    assert _faults_per_cycle(numel) < 0.05 * pages


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="mmap_threshold"):
        retain_freed_memory(mmap_threshold=MAX_MMAP_THRESHOLD + 1)
    with pytest.raises(ValueError, match="mmap_threshold"):
        retain_freed_memory(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        retain_freed_memory(trim_threshold=-1)
