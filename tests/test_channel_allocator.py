"""A receiver's staging memory (kvx/channel/allocator.py). The Mooncake transport's pool
allocator: ranges never overlap, freed ranges merge back, and a full pool makes alloc wait, then
give up. The torch transport's receive buffers: within their budget, reused, and waited for."""

from __future__ import annotations

import threading

from kvx.channel.allocator import BufferPool, RangeAllocator


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


class _Buffer:
    """What BufferPool needs of a tensor."""

    def __init__(self, n: int) -> None:
        self.n = n

    def numel(self) -> int:
        return self.n


def _pool(limit: int) -> tuple[BufferPool, list[_Buffer]]:
    made: list[_Buffer] = []

    def allocate(n: int) -> _Buffer:
        made.append(_Buffer(n))
        return made[-1]

    return BufferPool(limit, allocate), made


def test_buffer_pool_stays_within_its_budget_and_reuses_what_comes_back() -> None:
    pool, made = _pool(100)
    a, b = pool.take(40, 0), pool.take(40, 0)
    assert pool.take(40, 0) is None and pool.in_use == 80  # no room for a third
    pool.give(a)
    assert pool.take(30, 0) is a and len(made) == 2  # a spare, not a new buffer
    pool.give(a)
    pool.give(b)
    assert pool.in_use == 0
    # A new buffer of 90 bytes: the spares (both too small) make room for it.
    c = pool.take(90, 0)
    assert c is made[-1] and c.numel() == 90 and pool.in_use == 90
    pool.give(c)
    assert pool.take(20, 0) is c  # the only spare left


def test_a_request_larger_than_the_budget_is_taken_alone_and_not_kept() -> None:
    pool, made = _pool(100)
    small = pool.take(10, 0)
    assert pool.take(150, 0) is None  # not next to another
    pool.give(small)
    big = pool.take(150, 0)
    assert big.numel() == 150 and pool.take(1, 0) is None
    pool.give(big)
    assert pool.take(150, 0) is not big  # it was not kept: over the budget
    assert len(made) == 3


def test_take_waits_for_a_buffer_to_come_back_then_gives_up() -> None:
    pool, _ = _pool(100)
    held = pool.take(100, 0)
    threading.Timer(0.05, pool.give, (held,)).start()
    assert pool.take(60, 10.0) is held
    assert pool.take(60, 0.05) is None
