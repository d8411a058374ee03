"""Adapters from torch tensors and numpy arrays to what the C API takes.

Everything that crosses into C goes through :func:`describe`: raw address, kvx dtype code,
shape and strides in elements, device, and the byte range of the underlying storage (so views
can be checked against their allocation before C ever touches them). torch is optional.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from sys import modules as _modules
from typing import Any

import numpy as np

from . import _devices, _torch
from ._devices import DEVICE_CPU
from ._errors import InvalidArgumentError
from ._native import ffi, lib

_NUMPY_DTYPES = {
    np.dtype(np.float32): lib.KVX_DTYPE_FLOAT32,
    np.dtype(np.float16): lib.KVX_DTYPE_FLOAT16,
    np.dtype(np.uint8): lib.KVX_DTYPE_UINT8,
    np.dtype(np.int8): lib.KVX_DTYPE_INT8,
    np.dtype(np.float64): lib.KVX_DTYPE_FLOAT64,
    np.dtype(np.int32): lib.KVX_DTYPE_INT32,
    np.dtype(np.int64): lib.KVX_DTYPE_INT64,
}


# torch dtype -> kvx dtype, filled by the first torch tensor described (torch is imported by then).
_TORCH_DTYPES: dict[Any, int] = {}


def _fill_torch_dtypes() -> dict[Any, int]:
    torch = _torch.imported()
    table = {
        torch.float32: lib.KVX_DTYPE_FLOAT32,
        torch.float16: lib.KVX_DTYPE_FLOAT16,
        torch.bfloat16: lib.KVX_DTYPE_BFLOAT16,
        torch.uint8: lib.KVX_DTYPE_UINT8,
        torch.int8: lib.KVX_DTYPE_INT8,
        torch.float64: lib.KVX_DTYPE_FLOAT64,
        torch.int32: lib.KVX_DTYPE_INT32,
        torch.int64: lib.KVX_DTYPE_INT64,
    }
    fp8 = (
        ("float8_e4m3fn", lib.KVX_DTYPE_FLOAT8_E4M3FN),
        ("float8_e5m2", lib.KVX_DTYPE_FLOAT8_E5M2),
        ("float8_e4m3fnuz", lib.KVX_DTYPE_FLOAT8_E4M3FNUZ),
        ("float8_e5m2fnuz", lib.KVX_DTYPE_FLOAT8_E5M2FNUZ),
    )
    for name, code in fp8:  # torch releases before 2.1 (2.2 for fnuz) lack some of them
        if hasattr(torch, name):
            table[getattr(torch, name)] = code
    _TORCH_DTYPES.update(table)
    return _TORCH_DTYPES


@dataclass(slots=True)
class ArrayInfo:
    """What libkvx needs to know about one tensor or array. Built on every call of every op, so
    it is a plain slotted record (a frozen dataclass costs microseconds to construct)."""

    obj: Any
    name: str
    ptr: int
    dtype: int
    itemsize: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # elements
    device_type: int
    device_index: int
    writable: bool
    storage: tuple[int, int]  # [start, end) byte addresses of the allocation behind the view
    span: tuple[int, int]  # [first, last + 1) byte addresses the view can address
    pinned: bool = False  # page-locked host memory that GPUs can address directly

    @property
    def device(self) -> tuple[int, int]:
        return (self.device_type, self.device_index)

    def extent(self) -> tuple[int, int]:
        """[first, last + 1) byte addresses the view can address (empty views: (ptr, ptr))."""
        return self.span


def _extent(
    ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
) -> tuple[int, int]:
    last = 0
    # A plain loop: this runs for every argument of every call.
    for n, stride in zip(shape, strides, strict=True):
        if n == 0:
            return (ptr, ptr)
        last += (n - 1) * stride
    return (ptr, ptr + (last + 1) * itemsize)


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def is_tensor(x: Any) -> bool:
    return isinstance(x, np.ndarray) or _torch.is_tensor(x)


@functools.cache
def _accelerator_present() -> bool:
    """Whether torch has a device whose pinned host memory matters (asked once: it is slow)."""
    torch = _torch.imported()
    accelerator = getattr(torch, "accelerator", None)
    return (
        bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()
    )


def _describe_torch(x: Any, name: str) -> ArrayInfo:
    code = _TORCH_DTYPES.get(x.dtype) or _fill_torch_dtypes().get(x.dtype)
    if code is None:
        raise InvalidArgumentError(f"{name}: dtype {x.dtype} has no libkvx equivalent")
    storage = x.untyped_storage()
    start = storage.data_ptr()
    ptr, shape, strides, itemsize = x.data_ptr(), tuple(x.shape), x.stride(), x.element_size()
    if x.is_cpu:  # the common case, without building a torch.device (slow to query)
        device_type, device_index = DEVICE_CPU, 0
        pinned = _accelerator_present() and x.is_pinned()
    else:
        device = x.device
        device_type = _devices.by_torch_device(device).kvx_type
        device_index, pinned = device.index or 0, False
    # dense views (the usual case) need no walk over the strides for their span
    span = (
        (ptr, ptr + x.numel() * itemsize)
        if x.is_contiguous()
        else _extent(ptr, shape, strides, itemsize)
    )
    # positional: keyword arguments make this constructor three times slower (~0.35 us a call)
    return ArrayInfo(
        x,
        name,
        ptr,
        code,
        itemsize,
        shape,
        strides,
        device_type,
        device_index,
        True,  # writable: torch has no read-only tensors
        (start, start + storage.nbytes()),
        span,
        pinned,
    )


def _numpy_root(x: np.ndarray) -> np.ndarray:
    """The array that owns the memory behind a view. Views made by `as_strided` hang off a helper
    object whose own `base` is the array, so the chain is followed through it."""
    root = x
    while True:
        base = root.base
        if not isinstance(base, np.ndarray):
            base = getattr(base, "base", None)
        if not isinstance(base, np.ndarray):
            return root
        root = base


def _describe_numpy(x: np.ndarray, name: str) -> ArrayInfo:
    try:
        code = _NUMPY_DTYPES[x.dtype]
    except KeyError:
        raise InvalidArgumentError(
            f"{name}: numpy dtype {x.dtype} has no libkvx equivalent"
        ) from None
    if any(s % x.itemsize for s in x.strides):
        raise InvalidArgumentError(
            f"{name}: strides {x.strides} are not multiples of the item size"
        )
    root = _numpy_root(x)
    lo, hi = (
        np.lib.array_utils.byte_bounds(root)
        if hasattr(np.lib, "array_utils")
        else np.byte_bounds(root)
    )
    ptr, shape, strides = (
        x.__array_interface__["data"][0],
        tuple(x.shape),
        tuple(s // x.itemsize for s in x.strides),
    )
    return ArrayInfo(
        obj=x,
        name=name,
        ptr=ptr,
        dtype=code,
        itemsize=x.itemsize,
        shape=shape,
        strides=strides,
        device_type=DEVICE_CPU,
        device_index=0,
        writable=bool(x.flags.writeable),
        storage=(lo, hi),
        span=_extent(ptr, shape, strides, x.itemsize),
    )


def describe(x: Any, name: str) -> ArrayInfo:
    """Describes a torch tensor or numpy array; ``name`` is used in error messages."""
    torch = _modules.get(
        "torch"
    )  # _torch.is_tensor, inlined: this runs for every argument of every call
    if torch is not None and isinstance(x, torch.Tensor):
        info = _describe_torch(x, name)
    elif isinstance(x, np.ndarray):
        info = _describe_numpy(x, name)
    else:
        raise InvalidArgumentError(
            f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if 0 in info.shape:
        # An empty array addresses no element, so any strides describe it; numpy gives empty
        # arrays zero strides, which would fail the contiguity checks of a perfectly normal
        # empty request (every token already cached). Row-major strides pass them.
        info.strides = _row_major_strides(info.shape)
    if info.strides and min(info.strides) < 0:
        raise InvalidArgumentError(f"{name}: negative strides {info.strides} are not supported")
    lo, hi = info.span
    if hi > lo and (lo < info.storage[0] or hi > info.storage[1]):  # empty views address nothing
        raise InvalidArgumentError(f"{name}: view reaches outside its storage")
    return info


def require_writable(info: ArrayInfo) -> None:
    """Outputs must be writable, must not alias themselves (no stride-0 broadcast dims), and must
    not be tracked by autograd: kvx writes through raw pointers, which autograd would not see."""
    if not info.writable:
        raise InvalidArgumentError(f"{info.name}: expected a writable array, got a read-only one")
    if getattr(info.obj, "requires_grad", False) and _torch.imported().is_grad_enabled():
        raise InvalidArgumentError(
            f"{info.name}: expected a tensor that does not require grad (kvx writes it in place, "
            f"unseen by autograd); pass .detach() or run under torch.no_grad()"
        )
    if any(s == 0 and n > 1 for n, s in zip(info.shape, info.strides, strict=True)):
        raise InvalidArgumentError(
            f"{info.name}: expected a writable view, got one with broadcast (stride 0) dimensions "
            f"(shape {info.shape}, strides {info.strides})"
        )


def reachable_from(info: ArrayInfo, device: tuple[int, int]) -> bool:
    """Whether work on `device` can address `info`'s memory: its own device, or, for an
    accelerator, pinned host memory (GPUs address it directly; NPU/MLU backends DMA from it)."""
    return info.device == device or (info.pinned and device[0] != DEVICE_CPU)


def require_same_device(infos: Sequence[ArrayInfo]) -> tuple[int, int]:
    """All arrays reachable from the first one's device; returns that device."""
    first = infos[0]
    for info in infos[1:]:
        if not reachable_from(info, first.device):
            raise InvalidArgumentError(
                f"{info.name}: expected the device of {first.name} {_device_name(first)}, "
                f"got {_device_name(info)}"
            )
    return first.device


def _device_name(info: ArrayInfo) -> str:
    return f"{_devices.by_kvx_type(info.device_type).label}:{info.device_index}"


def current_stream(device: tuple[int, int]) -> Any:
    """A ``kvx_stream *`` for the device's current stream, read now (never cached: reading the
    NPU stream flushes torch_npu's queue), or NULL for the CPU."""
    device_type, index = device
    if device_type == DEVICE_CPU:
        return ffi.NULL
    torch = _torch.imported()  # a device tensor was passed: torch is imported
    handle = _devices.by_kvx_type(device_type).current_stream_handle(torch, index)
    return stream_struct(device_type, index, handle)


def stream_struct(device_type: int, index: int, handle: int) -> Any:
    """A ``kvx_stream *`` naming stream ``handle`` (a raw vendor handle) of device ``index``."""
    stream = ffi.new("kvx_stream *")
    stream.device_type, stream.device_index = device_type, index
    stream.handle = ffi.cast("void *", handle)
    return stream
