"""Raw memory: batched copies between addresses, and page-locked host memory.

:func:`copy_batch` is LMCache's ``batched_memcpy(src_ptrs, dst_ptrs, sizes)`` on every device
kvx drives: on the CPU it runs on libkvx's threads, on a device it is queued on torch's current
stream there (``kvx_copy_batch``). :func:`host_alloc` / :func:`host_free` give page-aligned host
memory, page-locked through the device's runtime (``cudaHostAlloc``, ``hipHostMalloc``,
``aclrtMallocHost``, ``cnrtHostMalloc``) so that copies between it and the device run as DMA
(``kvx_host_alloc``), as LMCache's ``alloc_pinned_ptr`` does for CUDA.

Both take addresses as plain ints, like LMCache's ops: nothing checks that they point at memory
the caller owns, beyond what ``kvx.h`` promises (no NULL in a non-empty range, no overlap).
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _devices, _torch
from ._devices import DEVICE_CPU
from ._errors import InvalidArgumentError, NotAvailableError
from ._native import check, ffi, lib
from ._tensors import current_stream

Ints = Sequence[int] | np.ndarray | Any  # a list or tuple of ints, a 1-D integer array or tensor


def _index(kind: _devices.DeviceKind, index: int | None) -> int:
    """The device index, or when none is given torch's current device of that kind (0 where
    torch, its plugin or a device is missing)."""
    if index is not None:
        return index
    torch = _torch.imported()
    module = None if kind is _devices.CPU or torch is None else kind.torch_module(torch)
    return int(module.current_device()) if module is not None and module.is_available() else 0


def resolve_device(device: Any) -> tuple[int, int]:
    """``(kvx device type, index)`` of ``device``: None (the CPU); a torch.device; or a string,
    a torch device type or a kvx backend name with an optional index ("cpu", "cuda:1", "npu",
    "mlu:0", "hip:0", "ascend:1", "cnrt"). Without an index, torch's current device of that
    type."""
    if device is None:
        return (DEVICE_CPU, 0)
    torch = _torch.imported()
    if torch is not None and isinstance(device, torch.device):
        kind = _devices.by_torch_device(device)
        return (kind.kvx_type, _index(kind, device.index))
    if not isinstance(device, str):
        raise InvalidArgumentError(
            "device: expected None, a device name such as 'cuda:0' or 'npu' or a torch.device, "
            f"got {type(device).__name__}"
        )
    name, colon, number = device.partition(":")
    if colon and not number.isdigit():
        raise InvalidArgumentError(
            f"device: expected 'type' or 'type:index' with index >= 0, got {device!r}"
        )
    backends = {kind.name for kind in _devices.KINDS}
    kind = _devices.by_name(name) if name in backends else _devices.by_torch_type(name, torch)
    return (kind.kvx_type, _index(kind, int(number) if colon else None))


def _int_array(values: Ints, name: str, signed: bool) -> Any:
    """``values`` as a contiguous buffer of int64 (signed) or uint64 (addresses), without a copy
    when it already is one."""
    if isinstance(values, np.ndarray) or _torch.is_tensor(values):
        a = np.asarray(values.cpu() if _torch.is_tensor(values) else values)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise InvalidArgumentError(
                f"{name}: expected a 1-D array of integers, got shape {a.shape} dtype {a.dtype}"
            )
        if not signed and a.dtype.kind == "i" and a.size and int(a.min()) < 0:
            raise InvalidArgumentError(f"{name}: expected addresses >= 0, got {int(a.min())}")
        return np.ascontiguousarray(a, dtype=np.int64 if signed else np.uint64)
    try:
        # array.array refuses floats and strings, which an address must never silently become
        return array.array("q" if signed else "Q", values)
    except (TypeError, OverflowError) as e:
        what = "byte counts" if signed else "addresses"
        raise InvalidArgumentError(f"{name}: expected a sequence of int {what}: {e}") from None


def copy_batch(src_ptrs: Ints, dst_ptrs: Ints, sizes: Ints, *, device: Any = None) -> None:
    """Copies ``sizes[i]`` bytes from address ``src_ptrs[i]`` to address ``dst_ptrs[i]``, for
    every ``i``: LMCache's ``batched_memcpy(src_ptrs, dst_ptrs, sizes)``.

    Args:
        src_ptrs, dst_ptrs: addresses (ints), as lists, tuples or 1-D integer arrays/tensors.
        sizes: bytes per range (>= 0; a 0-byte range is skipped, its addresses unused); the three
            have the same length.
        device: where the copies are ordered. None or ``"cpu"``: on libkvx's CPU threads (small
            ranges grouped, large ones split), done when this returns. A device (``"cuda:0"``,
            ``"npu"``, a ``torch.device``): queued on torch's current stream of that device,
            done when the stream gets there; each end is memory of that device or host memory
            (page-locked, e.g. from :func:`host_alloc`, for copies that do not block).

    memcpy semantics: no destination range may overlap another destination or any source range;
    this is checked before anything is copied. Raises :class:`kvx.InvalidArgumentError` (lengths
    differ, a negative size, a 0 address in a non-empty range, overlapping ranges, memory of
    another device), :class:`kvx.UnsupportedError` for a host-to-host range on an NPU or MLU
    stream (their runtimes have no asynchronous host copy: use ``device=None`` for those).
    """
    srcs = _int_array(src_ptrs, "src_ptrs", signed=False)
    dsts = _int_array(dst_ptrs, "dst_ptrs", signed=False)
    counts = _int_array(sizes, "sizes", signed=True)
    if not len(srcs) == len(dsts) == len(counts):
        raise InvalidArgumentError(
            "src_ptrs, dst_ptrs, sizes: expected the same length, got "
            f"{len(srcs)}, {len(dsts)}, {len(counts)}"
        )
    device_type, index = resolve_device(device)
    if device_type != DEVICE_CPU:
        # before torch is asked for the device's stream, which it may not have
        if not lib.kvx_backend_available(device_type):
            check(lib.KVX_ERR_NOT_AVAILABLE)
        if _torch.load() is None:
            raise NotAvailableError(
                f"device: {device!r} needs torch to read its current stream; torch is not installed"
            )
    stream = current_stream((device_type, index))
    check(
        lib.kvx_copy_batch(
            ffi.cast("const void *const *", ffi.from_buffer(srcs)),
            ffi.cast("void *const *", ffi.from_buffer(dsts)),
            ffi.cast("const int64_t *", ffi.from_buffer(counts)),
            len(counts),
            stream,
        )
    )


def host_alloc(nbytes: int, device: Any = "cpu") -> int:
    """The address of ``nbytes`` (>= 1) bytes of page-aligned host memory, not initialised, for
    copies with ``device`` (as in :func:`copy_batch`; default the CPU: plain page-aligned
    memory). For an accelerator the memory is page-locked through its runtime, from the
    context of that device (``"npu:1"``; without an index torch's current one). Free it with
    :func:`host_free` and the same device type. ``numpy.ctypeslib.as_array`` or
    ``torch.frombuffer`` over ``(ctypes.c_uint8 * nbytes).from_address(ptr)`` view it.

    Raises :class:`kvx.NotAvailableError` when the device's backend cannot run (runtime or
    device missing), :class:`kvx.UnsupportedError` when its runtime has no page-locked
    allocation, :class:`kvx.OutOfMemoryError`, :class:`kvx.InvalidArgumentError` for
    ``nbytes < 1``."""
    if not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise InvalidArgumentError(f"nbytes: expected an int, got {type(nbytes).__name__}")
    device_type, index = resolve_device(device)
    out = ffi.new("void **")
    check(lib.kvx_host_alloc(device_type, index, nbytes, out))
    return int(ffi.cast("uintptr_t", out[0]))


def host_free(ptr: int, device: Any = "cpu") -> None:
    """Frees memory from :func:`host_alloc` (``device`` of the same type; its index does not
    matter). 0 does nothing; an address :func:`host_alloc` did not return for that device type,
    or one freed already, raises :class:`kvx.InvalidArgumentError` and is left alone. No device
    work may still use the memory (:func:`kvx.synchronize` first)."""
    if not isinstance(ptr, int) or isinstance(ptr, bool) or ptr < 0:
        raise InvalidArgumentError(f"ptr: expected an address (an int >= 0), got {ptr!r}")
    device_type, _ = resolve_device(device)
    check(lib.kvx_host_free(device_type, ffi.cast("void *", ptr)))


__all__: Sequence[str] = ["copy_batch", "host_alloc", "host_free", "resolve_device"]
