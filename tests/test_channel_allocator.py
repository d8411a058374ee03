"""The receiver's staging-pool allocator of the Mooncake transport (kvx/channel/allocator.py):
ranges never overlap, freed ranges merge back, and a full pool makes alloc wait, then give up."""

from __future__ import annotations

import threading

from kvx.channel.allocator import RangeAllocator


def test_ranges_are_disjoint_aligned_and_merge_back() -> None:
    pool = RangeAllocator(64 << 10, align=4096)
    a, b, c = pool.alloc(5000, 0), pool.alloc(4096, 0), pool.alloc(1, 0)
    assert (a, b, c) == (0, 8192, 12288)
    assert pool.alloc(60 << 10, 0) is None  # 48 KiB left
    pool.free(b, 4096)
    assert pool.alloc(4096, 0) == b  # first fit
    for offset, n in ((a, 5000), (b, 4096), (c, 1)):
        pool.free(offset, n)
    assert pool.alloc(64 << 10, 0) == 0  # one range again


def test_alloc_waits_for_a_free_then_times_out() -> None:
    pool = RangeAllocator(8192, align=4096)
    first = pool.alloc(8192, 0)
    threading.Timer(0.05, pool.free, (first, 8192)).start()
    assert pool.alloc(4096, 10.0) == 0
    assert pool.alloc(8192, 0.05) is None
