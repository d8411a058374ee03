"""zlib's CRC-32 computed by libkvx (``kvx_crc32``): the values of :func:`zlib.crc32`, at memory
speed on x86-64 (carry-less multiplication) and with the CRC32 instructions on 64-bit ARM, with
no optional dependency. The GIL is released during the computation.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import _torch
from ._errors import InvalidArgumentError
from ._info import cpu_kernels
from ._native import ffi, lib

Buffer = bytes | bytearray | memoryview | np.ndarray | Any  # Any: a CPU torch tensor


def crc32(data: Buffer, value: int = 0) -> int:
    """zlib's CRC-32 of ``data``'s bytes, continuing from ``value``: equal to
    ``zlib.crc32(data, value)``, so ``crc32(b, crc32(a))`` is the CRC-32 of ``a + b``.

    ``data``: bytes, bytearray, memoryview, numpy array or CPU torch tensor of any dtype and
    shape, C-contiguous (its bytes in memory order). A tensor on a device is refused rather than
    copied behind the caller's back: pass ``data.cpu()``. ``value``: an int, taken modulo 2**32
    as zlib does. Raises :class:`kvx.InvalidArgumentError` (a ``ValueError``) naming the
    argument."""
    crc = _start_value(value)
    if _torch.is_tensor(data):
        return _tensor_crc32(data, crc)
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous or data.dtype.hasobject:
            raise InvalidArgumentError(
                f"data: expected a C-contiguous array of plain values, got strides {data.strides}"
                f" and dtype {data.dtype}"
            )
    elif isinstance(data, memoryview) and not data.c_contiguous:
        raise InvalidArgumentError("data: expected a C-contiguous memoryview")
    try:
        buffer = ffi.from_buffer(data)
    except TypeError:
        raise InvalidArgumentError(
            "data: expected bytes, bytearray, memoryview, a numpy array or a CPU torch tensor, "
            f"got {type(data).__name__}"
        ) from None
    return lib.kvx_crc32(crc, buffer, len(buffer))


def variant() -> str:
    """The variant this process runs, as ``kvx.cpu_kernels()`` names it (``crc32=...``):
    ``"vpclmul"`` or ``"pclmul"`` (x86-64), ``"armv8-crc"`` (64-bit ARM) or ``"baseline"``
    (tables: other CPUs, or ``KVX_CPU_ISA=baseline``)."""
    return cpu_kernels().split("crc32=", 1)[1].split()[0]


def _start_value(value: Any) -> int:
    try:
        return operator.index(value) & 0xFFFFFFFF
    except TypeError:
        raise InvalidArgumentError(
            f"value: expected an int (a previous CRC-32, or 0), got {type(value).__name__}"
        ) from None


def _tensor_crc32(data: Any, crc: int) -> int:
    if data.device.type != "cpu":
        raise InvalidArgumentError(
            f"data: a tensor on {data.device}; the checksum reads host memory (pass data.cpu())"
        )
    if not data.is_contiguous():
        raise InvalidArgumentError(
            f"data: expected a contiguous tensor, got strides {tuple(data.stride())}"
        )
    nbytes = data.numel() * data.element_size()
    return lib.kvx_crc32(crc, ffi.cast("const void *", data.data_ptr()), nbytes)


__all__ = ["crc32", "variant"]
