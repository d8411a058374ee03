"""Arrays at addresses that are not a multiple of their element size, for the C-ABI tests of the
front-ends' alignment checks: numpy and torch never make such arrays by themselves."""

from __future__ import annotations

import numpy as np


def misaligned_copy(a: np.ndarray, offset: int) -> tuple[np.ndarray, int]:
    """A copy of a's bytes starting `offset` bytes past a 64-byte boundary: the buffer that
    holds it (to keep alive and to compare) and the copy's address."""
    buf = np.zeros(a.nbytes + 64 + offset, dtype=np.uint8)
    start = -buf.ctypes.data % 64 + offset
    buf[start : start + a.nbytes] = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
    return buf, buf.ctypes.data + start
