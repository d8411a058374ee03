"""LMCache's host-buffer ops (``alloc_*_ptr`` / ``free_*_ptr``), allocated by kvx.

Buffers are anonymous page-aligned mappings, zero-filled by the kernel on first touch (nothing is
written up front, unlike LMCache's torch version). The NUMA variants bind the mapping to node
``numa_id`` (LMCache's torch version ignores it); the hugepage variants ask for huge pages and
fall back to normal ones with a warning. Where the active LMCache device pins host memory (an
accelerator's runtime: cudaHostRegister, aclrtHostRegister, ...), each buffer is pinned through
it, so device copies from and to it run as DMA.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
import warnings
from dataclasses import dataclass

from .._errors import InvalidArgumentError, OutOfMemoryError

_MPOL_BIND = 2
# mbind(2) has no libc wrapper everywhere; its syscall number per architecture.
_SYS_MBIND = {"x86_64": 237, "aarch64": 235, "ppc64le": 259, "riscv64": 235}


@dataclass
class _Buffer:
    mapping: mmap.mmap
    anchor: ctypes.c_char  # exports the mapping's address; released before unmapping
    pinned: bool


_buffers: dict[int, _Buffer] = {}
_lock = threading.Lock()


def _numa_nodes() -> set[int]:
    try:
        names = os.listdir("/sys/devices/system/node")
    except OSError:
        return {0}
    return {int(n[4:]) for n in names if n.startswith("node") and n[4:].isdigit()}


def _bind(address: int, size: int, numa_id: int) -> None:
    nodes = _numa_nodes()
    if numa_id not in nodes:
        raise InvalidArgumentError(f"numa_id: expected one of {sorted(nodes)}, got {numa_id}")
    number = _SYS_MBIND.get(platform.machine())
    if number is None or len(nodes) == 1:
        return  # one node (or no way to ask): every page is on it already
    mask = ctypes.c_ulong(1 << numa_id)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, ctypes.c_void_p(address), ctypes.c_size_t(size), _MPOL_BIND,
                    ctypes.byref(mask), ctypes.c_ulong(64), 0) != 0:  # fmt: skip
        raise OSError(ctypes.get_errno(), f"mbind to NUMA node {numa_id} failed")


def _map(size: int, huge: bool) -> mmap.mmap:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if huge and hasattr(mmap, "MAP_HUGETLB"):
        try:
            return mmap.mmap(-1, size, flags=flags | mmap.MAP_HUGETLB)
        except OSError:
            pass
    if huge:
        warnings.warn(
            "kvx: no huge pages available; the buffer uses normal pages",
            RuntimeWarning,
            stacklevel=4,
        )
    return mmap.mmap(-1, size, flags=flags)


def _pin(address: int, size: int) -> bool:
    from lmcache.v1.platform._device_detect import current_device_spec

    spec = current_device_spec()
    return spec.device_type not in ("", "cpu") and bool(spec.pin_memory(address, size))


def _alloc(size: int, numa_id: int | None = None, huge: bool = False) -> int:
    if not isinstance(size, int) or size < 1:
        raise InvalidArgumentError(f"size: expected a positive number of bytes, got {size!r}")
    try:
        mapping = _map(size, huge)
    except OSError as e:
        raise OutOfMemoryError(f"size: cannot map {size} bytes: {e}") from None
    anchor = ctypes.c_char.from_buffer(mapping)
    address = ctypes.addressof(anchor)
    try:
        if numa_id is not None:
            _bind(address, size, numa_id)
        pinned = _pin(address, size)
    except BaseException:
        del anchor
        mapping.close()
        raise
    with _lock:
        _buffers[address] = _Buffer(mapping, anchor, pinned)
    return address


def _free(ptr: int) -> None:
    """Unmaps a buffer of this module; a pointer it did not hand out (or already freed) is
    ignored, as LMCache's own free ops do."""
    with _lock:
        buffer = _buffers.pop(ptr, None)
    if buffer is None:
        return
    if buffer.pinned:
        from lmcache.v1.platform._device_detect import current_device_spec

        current_device_spec().unpin_memory(ptr)
    del buffer.anchor
    buffer.mapping.close()


def alloc_pinned_ptr(size: int, device_id: int = 0) -> int:
    """A page-aligned host buffer of ``size`` bytes, pinned for the active device; its address.
    ``device_id`` is accepted for LMCache's signature (pinning is for every device)."""
    del device_id
    return _alloc(size)


def free_pinned_ptr(ptr: int) -> None:
    """Frees a buffer from :func:`alloc_pinned_ptr`."""
    _free(ptr)


def alloc_pinned_numa_ptr(size: int, numa_id: int = 0) -> int:
    """:func:`alloc_pinned_ptr` with its pages on NUMA node ``numa_id``."""
    return _alloc(size, numa_id)


def free_pinned_numa_ptr(ptr: int, size: int | None = None) -> None:
    """Frees a buffer from :func:`alloc_pinned_numa_ptr` (``size`` is not needed)."""
    del size
    _free(ptr)


def alloc_numa_ptr(size: int, numa_id: int = 0) -> int:
    """A host buffer on NUMA node ``numa_id`` (pinned too, as LMCache's torch version does)."""
    return _alloc(size, numa_id)


def free_numa_ptr(ptr: int, size: int | None = None) -> None:
    """Frees a buffer from :func:`alloc_numa_ptr`."""
    del size
    _free(ptr)


def alloc_hugepage_pinned_ptr(size: int, device_id: int = 0) -> int:
    """:func:`alloc_pinned_ptr` on huge pages where the system has them reserved."""
    del device_id
    return _alloc(size, huge=True)


def free_hugepage_pinned_ptr(ptr: int, size: int = 0) -> None:
    """Frees a buffer from :func:`alloc_hugepage_pinned_ptr`."""
    del size
    _free(ptr)


def alloc_hugepage_pinned_numa_ptr(size: int, numa_id: int = 0) -> int:
    """:func:`alloc_pinned_numa_ptr` on huge pages where the system has them reserved."""
    return _alloc(size, numa_id, huge=True)


def free_hugepage_pinned_numa_ptr(ptr: int, size: int = 0) -> None:
    """Frees a buffer from :func:`alloc_hugepage_pinned_numa_ptr`."""
    del size
    _free(ptr)
