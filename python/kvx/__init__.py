"""kvx: portable KV-cache kernels for LLM serving (transfer, CacheGen codec, RoPE).

The package wraps libkvx, a C library with a CPU backend (always) and device backends chosen
at build time. Arrays are torch tensors on any supported device, or numpy arrays.
"""

from __future__ import annotations

from . import layouts, reference
from ._errors import (
    BufferTooSmallError,
    CorruptInputError,
    DeviceError,
    InternalError,
    InvalidArgumentError,
    KvxError,
    NotAvailableError,
    OutOfMemoryError,
    UnsupportedError,
)
from ._info import backends, cpu_kernels, get_include, get_library, get_num_threads, set_num_threads, version
from .transfer import Direction, load, store, synchronize, transfer

from . import codec, rope

__version__ = version()

__all__ = [
    "BufferTooSmallError",
    "CorruptInputError",
    "DeviceError",
    "Direction",
    "InternalError",
    "InvalidArgumentError",
    "KvxError",
    "NotAvailableError",
    "OutOfMemoryError",
    "UnsupportedError",
    "backends",
    "cpu_kernels",
    "get_include",
    "get_library",
    "get_num_threads",
    "layouts",
    "load",
    "reference",
    "set_num_threads",
    "store",
    "synchronize",
    "transfer",
    "version",
]
