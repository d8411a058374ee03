"""kvx: portable KV-cache kernels for LLM serving (transfer, CacheGen codec, RoPE, raw copies,
stream marks, CRC-32).

The package wraps libkvx, a C library with a CPU backend (always) and device backends chosen
at build time. Arrays are torch tensors on any supported device, or numpy arrays.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import checksum, codec, layouts, rope
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
from ._info import (
    backends,
    cpu_isa,
    cpu_kernels,
    get_include,
    get_library,
    get_num_threads,
    set_num_threads,
    version,
)
from .marks import Mark, mark
from .memory import copy_batch, host_alloc, host_free
from .transfer import Direction, load, store, synchronize, transfer

__version__ = version()


def __getattr__(name: str) -> Any:
    # kvx.reference is plain torch, kvx.channel starts threads and transports: each is imported
    # on first use, so that `import kvx` (and the CLI) does not pay for them.
    if name in ("reference", "channel"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BufferTooSmallError",
    "CorruptInputError",
    "DeviceError",
    "Direction",
    "InternalError",
    "InvalidArgumentError",
    "KvxError",
    "Mark",
    "NotAvailableError",
    "OutOfMemoryError",
    "UnsupportedError",
    "backends",
    "channel",
    "checksum",
    "codec",
    "copy_batch",
    "cpu_isa",
    "cpu_kernels",
    "get_include",
    "get_library",
    "get_num_threads",
    "host_alloc",
    "host_free",
    "layouts",
    "load",
    "mark",
    "reference",
    "rope",
    "set_num_threads",
    "store",
    "synchronize",
    "transfer",
    "version",
]
