"""First-fit allocation of byte ranges in a receiver's registered staging pool."""

from __future__ import annotations

import threading
import time


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
