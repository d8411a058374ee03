"""kvx: portable KV-cache kernels for LLM serving (transfer, CacheGen codec, RoPE, raw copies).

The package wraps libkvx, a C library with a CPU backend (always) and device backends chosen
at build time. Arrays are torch tensors on any supported device, or numpy arrays.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import codec, layouts, rope
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
from .memory import copy_batch, host_alloc, host_free
from .transfer import Direction, load, store, synchronize, transfer

__version__ = version()


def __getattr__(name: str) -> Any:
    # kvx.reference is plain torch: imported on first use, so that `import kvx` (and the CLI)
    # does not pay for importing torch.
    if name == "reference":
        return importlib.import_module(".reference", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "reference",
    "rope",
    "set_num_threads",
    "store",
    "synchronize",
    "transfer",
    "version",
]
