"""Library-wide queries and settings: version, backends, CPU thread count."""

from __future__ import annotations

from dataclasses import dataclass

from ._native import check, ffi, last_error, lib

_BACKENDS = (
    ("cpu", lib.KVX_DEVICE_CPU),
    ("cuda", lib.KVX_DEVICE_CUDA),
    ("hip", lib.KVX_DEVICE_HIP),
    ("ascend", lib.KVX_DEVICE_ASCEND),
    ("cnrt", lib.KVX_DEVICE_CNRT),
)


def version() -> str:
    """Version of the loaded libkvx, e.g. ``"0.1.0"``."""
    return ffi.string(lib.kvx_version_string()).decode()


@dataclass(frozen=True)
class BackendState:
    """Whether a backend is compiled in and usable now, and if not, why."""

    name: str
    compiled: bool
    available: bool
    reason: str


def backends() -> list[BackendState]:
    """The state of every backend libkvx knows of."""
    states = []
    for name, device_type in _BACKENDS:
        compiled = bool(lib.kvx_backend_compiled(device_type))
        available = bool(lib.kvx_backend_available(device_type))
        states.append(BackendState(name, compiled, available, "" if available else last_error()))
    return states


def set_num_threads(num_threads: int) -> None:
    """Threads the CPU backend uses; 0 restores the default (``KVX_NUM_THREADS`` or all CPUs)."""
    check(lib.kvx_set_num_threads(int(num_threads)))


def get_num_threads() -> int:
    """Threads the CPU backend uses now."""
    return int(lib.kvx_get_num_threads())
