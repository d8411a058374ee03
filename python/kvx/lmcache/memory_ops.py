"""LMCache's host-buffer ops (``alloc_*_ptr`` / ``free_*_ptr``), allocated by kvx.

On an accelerator, ``alloc_pinned_ptr`` is page-locked memory from the device's runtime
(:func:`kvx.host_alloc`: cudaHostAlloc, aclrtMallocHost, cnrtHostMalloc, ...). Every other
buffer (the CPU's, and the NUMA and hugepage variants everywhere) is an anonymous page-aligned
mapping, zero-filled by the kernel on first touch (nothing is written up front, unlike LMCache's
torch version): the NUMA variants bind it to node ``numa_id`` before any page exists (LMCache's
torch version ignores the node), the hugepage variants ask for huge pages and fall back to
normal ones with a warning, and on an accelerator it is then registered with the device
(LMCache's pinning backend for it), so device copies from and to it run as DMA.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import platform
import threading
import warnings
from collections.abc import Callable

from .. import memory
from .._errors import InvalidArgumentError, OutOfMemoryError
from . import _active

_MPOL_BIND = 2
# mbind(2) has no libc wrapper everywhere; its syscall number per architecture.
_SYS_MBIND = {"x86_64": 237, "aarch64": 235, "ppc64le": 259, "riscv64": 235}


_buffers: dict[int, Callable[[], None]] = {}  # address -> what frees it
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


def _mapped(size: int, numa_id: int | None, huge: bool) -> tuple[int, Callable[[], None]]:
    """An anonymous mapping (NUMA-bound, registered with the active device's pinning backend
    where it has one): its address and what frees it."""
    from lmcache.v1.platform._device_detect import current_device_spec

    try:
        mapping = _map(size, huge)
    except OSError as e:
        raise OutOfMemoryError(f"size: cannot map {size} bytes: {e}") from None
    anchor = ctypes.c_char.from_buffer(mapping)  # exports the address; released before unmap
    address = ctypes.addressof(anchor)
    spec = current_device_spec()
    pinned = False

    def release() -> None:
        nonlocal anchor
        if pinned:
            spec.unpin_memory(address)
        del anchor
        mapping.close()

    try:
        if numa_id is not None:
            _bind(address, size, numa_id)
        pinned = spec.device_type not in ("", "cpu") and bool(spec.pin_memory(address, size))
    except BaseException:
        release()
        raise
    return address, release


def _alloc(size: int, numa_id: int | None = None, huge: bool = False) -> int:
    if not isinstance(size, int) or size < 1:
        raise InvalidArgumentError(f"size: expected a positive number of bytes, got {size!r}")
    device = _active.device()
    if device is not None and numa_id is None and not huge:
        # Page-locked by the device runtime itself (cudaHostAlloc, aclrtMallocHost, ...).
        address = memory.host_alloc(size, device)
        release = functools.partial(memory.host_free, address, device)
    else:
        address, release = _mapped(size, numa_id, huge)
    with _lock:
        _buffers[address] = release
    return address


def _free(ptr: int) -> None:
    """Frees a buffer of this module; a pointer it did not hand out (or already freed) is
    ignored, as LMCache's own free ops do."""
    with _lock:
        release = _buffers.pop(ptr, None)
    if release is not None:
        release()


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
