"""What the codec's functions share: dtype codes, and the checks and conversions of their
arrays (symbols, scales, CDF tables, streams, bins) into what the C API takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _torch
from ._errors import InvalidArgumentError
from ._native import ffi, lib
from ._tensors import ArrayInfo, describe, require_same_device, require_writable

Bins = int | Sequence[int] | None

_FLOAT_DTYPES = {
    lib.KVX_DTYPE_FLOAT32: "float32",
    lib.KVX_DTYPE_FLOAT16: "float16",
    lib.KVX_DTYPE_BFLOAT16: "bfloat16",
}
_SYMBOL_DTYPES = (lib.KVX_DTYPE_UINT8, lib.KVX_DTYPE_INT8)


def _contiguous(info: ArrayInfo, shape_desc: str) -> None:
    if any(n == 0 for n in info.shape):
        return
    expected, step = [], 1
    for n in reversed(info.shape):
        expected.insert(0, step)
        step *= n
    if any(n > 1 and s != e for n, s, e in zip(info.shape, info.strides, expected, strict=True)):
        raise InvalidArgumentError(
            f"{info.name}: expected a contiguous {shape_desc}, got strides {info.strides} "
            f"for shape {info.shape}"
        )


def _symbols_info(x: Any, name: str, ndim: int = 3, writable: bool = False) -> ArrayInfo:
    info = describe(x, name)
    if info.dtype not in _SYMBOL_DTYPES:
        raise InvalidArgumentError(
            f"{name}: expected int8 or uint8 symbols, got {getattr(x, 'dtype', None)}"
        )
    if len(info.shape) != ndim:
        raise InvalidArgumentError(
            f"{name}: expected {ndim} dimensions [layers, tokens, channels], got shape {info.shape}"
        )
    _contiguous(info, "[layers, tokens, channels] array")
    if writable:
        require_writable(info)
    return info


def _typed_info(
    x: Any, name: str, dtype: int, ndim: int, shape_desc: str, writable: bool = False
) -> ArrayInfo:
    info = describe(x, name)
    if info.dtype != dtype:
        raise InvalidArgumentError(
            f"{name}: expected dtype {_dtype_name(dtype)}, got {getattr(x, 'dtype', None)}"
        )
    if len(info.shape) != ndim:
        raise InvalidArgumentError(
            f"{name}: expected {ndim} dimensions {shape_desc}, got shape {info.shape}"
        )
    _contiguous(info, shape_desc)
    if writable:
        require_writable(info)
    return info


def _dtype_name(code: int) -> str:
    names = {
        lib.KVX_DTYPE_INT32: "int32",
        lib.KVX_DTYPE_INT64: "int64",
        lib.KVX_DTYPE_UINT8: "uint8",
        lib.KVX_DTYPE_FLOAT32: "float32",
    }
    return names.get(code, _FLOAT_DTYPES.get(code, str(code)))


def _cdf_pointer(cdf: Any, name: str = "cdf") -> tuple[Any, tuple[int, ...]]:
    """The CDF tables ``[layers, channels, Lp]`` int16/uint16, contiguous -> (ptr, shape)."""
    if _torch.is_tensor(cdf):
        torch = _torch.imported()
        ok = cdf.dtype == torch.int16 or cdf.dtype == getattr(torch, "uint16", None)
        if not ok:
            raise InvalidArgumentError(
                f"{name}: expected int16 or uint16 CDF tables, got {cdf.dtype}"
            )
        if cdf.dim() != 3 or not cdf.is_contiguous():
            raise InvalidArgumentError(
                f"{name}: expected a contiguous [layers, channels, Lp] tensor, "
                f"got shape {tuple(cdf.shape)}"
            )
        return ffi.cast("const uint16_t *", cdf.data_ptr()), tuple(cdf.shape)
    if isinstance(cdf, np.ndarray):
        if cdf.dtype not in (np.int16, np.uint16):
            raise InvalidArgumentError(
                f"{name}: expected int16 or uint16 CDF tables, got {cdf.dtype}"
            )
        if cdf.ndim != 3 or not cdf.flags.c_contiguous:
            raise InvalidArgumentError(
                f"{name}: expected a contiguous [layers, channels, Lp] array, got shape {cdf.shape}"
            )
        return ffi.cast("const uint16_t *", cdf.__array_interface__["data"][0]), tuple(cdf.shape)
    raise InvalidArgumentError(
        f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(cdf).__name__}"
    )


def _ptr(info: ArrayInfo, ctype: str) -> Any:
    return ffi.cast(ctype, info.ptr)


def _same(name: str, got: int, expected: int, what: str) -> None:
    if got != expected:
        raise InvalidArgumentError(f"{name}: expected {what} = {expected}, got {got}")


def _like(template: Any, shape: Sequence[int], dtype: str) -> Any:
    """A new array of the same family (torch or numpy) and on the same device as ``template``;
    ``dtype`` is a name both know (``"uint8"``, ``"float32"``, ...)."""
    if _torch.is_tensor(template):
        torch = _torch.imported()
        return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=template.device)
    return np.empty(tuple(shape), dtype=dtype)


def _bins_list(bins: Bins, default: list[int], num_layers: int, name: str) -> list[int]:
    if bins is None:
        return list(default)
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        values = [int(bins)] * num_layers
    else:
        try:
            if isinstance(bins, (str, bytes)):
                raise TypeError
            values = [int(b) for b in bins]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"{name}: expected an int, a sequence of {num_layers} ints or None, "
                f"got {type(bins).__name__}"
            ) from None
    if len(values) != num_layers:
        raise InvalidArgumentError(
            f"{name}: expected {num_layers} entries (one per layer), got {len(values)}"
        )
    for i, b in enumerate(values):
        if not lib.KVX_CODEC_MIN_BINS <= b <= lib.KVX_CODEC_MAX_BINS:
            raise InvalidArgumentError(
                f"{name}[{i}]: expected {lib.KVX_CODEC_MIN_BINS}..{lib.KVX_CODEC_MAX_BINS}, got {b}"
            )
    return values


def _same_device(*infos: ArrayInfo) -> tuple[int, int]:
    """The device the call runs on (the first array's); the others must be reachable from it."""
    return require_same_device(list(infos))


def _cdf_info(cdf: Any) -> ArrayInfo:
    """Where the CDF tables (checked by :func:`_cdf_pointer`) live, through a byte view: int16
    has no kvx dtype."""
    return describe(
        cdf.view(_torch.imported().uint8) if _torch.is_tensor(cdf) else cdf.view(np.uint8), "cdf"
    )


def _int32_array(values: Sequence[int]) -> Any:
    return ffi.new("int32_t[]", list(values))
