"""A receiver's staging memory: first-fit ranges of the Mooncake transport's registered pool,
and the torch transport's receive buffers, both within a budget (``staging_bytes``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class RangeAllocator:
    """Hands out ``[offset, offset + n)`` ranges of a pool of ``size`` bytes, aligned to
    ``align``; ``alloc`` waits for space that others free."""

    def __init__(self, size: int, align: int = 4096) -> None:
        self.size, self._align = size, align
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, length), sorted
        self._cond = threading.Condition()

    def alloc(self, n: int, timeout: float) -> int | None:
        """The offset of a free range of ``n`` bytes, or None if none frees up in time."""
        n = max(self._align, -(-n // self._align) * self._align)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, (offset, length) in enumerate(self._free):
                    if length >= n:
                        self._free[i : i + 1] = [(offset + n, length - n)] if length > n else []
                        return offset
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def free(self, offset: int, n: int) -> None:
        """Returns a range from :meth:`alloc` (same ``n``)."""
        n = max(self._align, -(-n // self._align) * self._align)
        with self._cond:
            ranges = sorted(self._free + [(offset, n)])
            merged: list[tuple[int, int]] = []
            for start, length in ranges:
                if merged and merged[-1][0] + merged[-1][1] == start:
                    merged[-1] = (merged[-1][0], merged[-1][1] + length)
                else:
                    merged.append((start, length))
            self._free = merged
            self._cond.notify_all()


class BufferPool:
    """Receive buffers within a budget of ``limit`` bytes (the torch transport's
    ``staging_bytes``): the buffers in use plus the spares kept for reuse never exceed it, except
    that a request larger than the budget gets a buffer of its own when no other is in use.

    ``allocate(n)`` makes a new 1-D buffer. Spares (at most ``keep``) are reused because first
    touching hundreds of MiB of fresh pages costs as much as receiving them.
    """

    def __init__(self, limit: int, allocate: Callable[[int], Any], keep: int = 2) -> None:
        self.limit, self._allocate, self._keep = limit, allocate, keep
        self.in_use = 0  # bytes of the buffers handed out
        self._spares: list[Any] = []  # smallest first
        self._cond = threading.Condition()

    def take(self, n: int, timeout: float) -> Any | None:
        """A buffer of at least ``n`` bytes, or None if there is no room for it within
        ``timeout`` seconds (until others are given back)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.in_use and self.in_use + n > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            spare = next((b for b in self._spares if b.numel() >= n), None)
            if spare is not None:
                # By identity: list.remove compares tensors element-wise.
                self._spares = [b for b in self._spares if b is not spare]
            else:
                while self._spares and self.in_use + self._spare_bytes() + n > self.limit:
                    self._spares.pop(0)
                spare = self._allocate(n)
            self.in_use += spare.numel()
            return spare

    def give(self, buffer: Any) -> None:
        """Returns a buffer from :meth:`take`."""
        with self._cond:
            self.in_use -= buffer.numel()
            self._spares = sorted([*self._spares, buffer], key=lambda b: b.numel())
            while self._spares and (
                len(self._spares) > self._keep or self.in_use + self._spare_bytes() > self.limit
            ):
                self._spares.pop(0)
            self._cond.notify_all()

    def _spare_bytes(self) -> int:
        return sum(b.numel() for b in self._spares)
