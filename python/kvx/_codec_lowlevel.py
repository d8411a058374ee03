"""The codec's low-level functions, named and laid out as LMCache's ``lmcache.c_ops`` (see
:mod:`kvx.codec`): symbols ``[layers, tokens, channels]``, CDF tables ``[layers, channels, Lp]``,
streams ``[layers, channels, capacity]``, on the CPU or on a device's current stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _torch
from ._codec_arrays import (
    _FLOAT_DTYPES,
    _bins_list,
    _cdf_info,
    _cdf_pointer,
    _contiguous,
    _int32_array,
    _like,
    _ptr,
    _same,
    _same_device,
    _symbols_info,
    _typed_info,
)
from ._codec_container import _method_code
from ._errors import InvalidArgumentError
from ._native import check, ffi, lib
from ._tensors import DEVICE_CPU, ArrayInfo, current_stream, describe


def stream_bound(num_tokens: int) -> int:
    """Worst-case bytes of one encoded (layer, channel) stream of ``num_tokens`` symbols."""
    out = ffi.new("int64_t *")
    check(lib.kvx_codec_stream_bound(int(num_tokens), out))
    return int(out[0])


def _head_size(method: str, head_size: int | None) -> int | None:
    """The rotated method's head size, or None for CacheGen (which takes none)."""
    if _method_code(method) == lib.KVX_CODEC_METHOD_CACHEGEN:
        if head_size is not None:
            raise InvalidArgumentError(
                f"head_size: expected None with method='cachegen' (only the rotated method "
                f"splits the channels into heads), got {head_size!r}"
            )
        return None
    if isinstance(head_size, bool) or not isinstance(head_size, (int, np.integer)):
        raise InvalidArgumentError(
            "head_size: expected an int (a power of two dividing the channels) with "
            f"method='rotated', got {head_size!r}"
        )
    return int(head_size)


def quantize(
    x: Any, bins: Sequence[int], *, method: str = "cachegen", head_size: int | None = None
) -> tuple[Any, Any]:
    """Per-token quantization of ``x`` ``[rows, T, C]`` (float32/float16/bfloat16, channels
    contiguous) with ``bins[rows]``. Returns symbols uint8 ``[rows, T, C]`` and scales float32
    ``[rows, T]``, same family (torch/numpy) and device as x.

    ``method="cachegen"``: LMCache's CacheGen; a scale is max |x| of its token (exact in x's
    dtype). ``method="rotated"``: the container's rotated method (docs/codec-container.md): each
    head of ``head_size`` channels (a power of two dividing C, at most 65536; 8192 on a GPU) is
    Walsh-Hadamard rotated first and the scales are bfloat16 values: the symbols and scales
    ``encode(..., method="rotated")`` stores. A token holding a value that is not finite (or, for
    the rotated method, above ``3.4028235e38 / (2 * head_size)``) raises
    :class:`kvx.InvalidArgumentError`, on a GPU from :func:`kvx.synchronize`."""
    rotation = _head_size(method, head_size)
    info = describe(x, "x")
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(
            f"x: expected float32, float16 or bfloat16, got {getattr(x, 'dtype', None)}"
        )
    if len(info.shape) != 3:
        raise InvalidArgumentError(
            f"x: expected 3 dimensions [rows, tokens, channels], got shape {info.shape}"
        )
    rows, tokens, channels = info.shape
    if channels > 1 and info.strides[2] != 1 and rows * tokens > 0:
        raise InvalidArgumentError(
            f"x: expected contiguous channels (last stride 1), got strides {info.strides}"
        )
    b = _bins_list(bins, [], rows, "bins")
    symbols = _like(x, (rows, tokens, channels), "uint8")
    scales = _like(x, (rows, tokens), "float32")
    s_info, sc_info = describe(symbols, "symbols"), describe(scales, "scales")
    shape = (ffi.cast("const void *", info.ptr), info.dtype, rows, tokens, channels)
    rest = (
        info.strides[0],
        info.strides[1],
        _int32_array(b),
        _ptr(s_info, "uint8_t *"),
        _ptr(sc_info, "float *"),
        current_stream(info.device),
    )
    if rotation is None:
        check(lib.kvx_codec_quantize(*shape, *rest))
    else:
        check(lib.kvx_codec_quantize_rotated(*shape, rotation, *rest))
    return symbols, scales


def dequantize(
    symbols: Any,
    scales: Any,
    bins: Sequence[int],
    dtype: Any = None,
    *,
    method: str = "cachegen",
    head_size: int | None = None,
) -> Any:
    """Inverse of :func:`quantize` (same ``method`` and ``head_size``): symbols uint8 ``[rows, T,
    C]`` and scales float32 ``[rows, T]`` -> ``[rows, T, C]`` of ``dtype`` (a torch or numpy
    dtype; default float32), on the symbols' device. CacheGen: ``(s - MAX) / MAX * scale`` in
    float32. Rotated: ``(s - MAX) * (scale / MAX)``, each head rotated back; float16 and
    bfloat16 saturate at their largest finite value. Both round to nearest even."""
    rotation = _head_size(method, head_size)
    s_info = _symbols_info(symbols, "symbols")
    rows, tokens, channels = s_info.shape
    sc_info = _typed_info(scales, "scales", lib.KVX_DTYPE_FLOAT32, 2, "[rows, tokens] float32")
    if sc_info.shape != (rows, tokens):
        raise InvalidArgumentError(f"scales: expected shape {(rows, tokens)}, got {sc_info.shape}")
    b = _bins_list(bins, [], rows, "bins")
    device = _same_device(s_info, sc_info)
    if _torch.is_tensor(symbols):
        torch = _torch.imported()
        out = torch.empty(
            (rows, tokens, channels), dtype=dtype or torch.float32, device=symbols.device
        )
    else:
        out = np.empty((rows, tokens, channels), dtype=dtype or np.float32)
    o_info = describe(out, "dtype")
    if o_info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(f"dtype: expected float32, float16 or bfloat16, got {dtype}")
    shape = (
        _ptr(s_info, "const uint8_t *"),
        _ptr(sc_info, "const float *"),
        _int32_array(b),
        rows,
        tokens,
        channels,
    )
    rest = (
        o_info.dtype,
        ffi.cast("void *", o_info.ptr),
        tokens * channels,
        channels,
        current_stream(device),
    )
    if rotation is None:
        check(lib.kvx_codec_dequantize(*shape, *rest))
    else:
        check(lib.kvx_codec_dequantize_rotated(*shape, rotation, *rest))
    return out


def calculate_cdf(input_sym: Any, num_bins: int) -> Any:
    """LMCache ``calculate_cdf``: symbols ``[layers, tokens, channels]`` (int8 or uint8, each
    ``< num_bins``) -> int16 CDF tables ``[layers, channels, num_bins + 1]`` (torch if the
    input is torch). ``num_bins`` is 1 .. 256; with no tokens the tables are ``0, 1, ..,
    num_bins``, as LMCache's. A symbol outside ``0 .. num_bins - 1`` raises
    :class:`kvx.InvalidArgumentError` (LMCache's torch path clamps it into range, its CUDA
    kernel does not check)."""
    info = _symbols_info(input_sym, "input_sym")
    layers, tokens, channels = info.shape
    nb = int(num_bins)
    if not 1 <= nb <= lib.KVX_CODEC_MAX_BINS:
        raise InvalidArgumentError(
            f"num_bins: expected 1..{lib.KVX_CODEC_MAX_BINS}, got {num_bins}"
        )
    cdf = _like(input_sym, (layers, channels, nb + 1), "int16")
    ptr = cdf.data_ptr() if _torch.is_tensor(cdf) else cdf.__array_interface__["data"][0]
    check(
        lib.kvx_codec_calculate_cdf(
            _ptr(info, "const uint8_t *"),
            layers,
            tokens,
            channels,
            nb,
            ffi.cast("uint16_t *", ptr),
            current_stream(info.device),
        )
    )
    return cdf


def encode_fast_new(cdf: Any, input_sym: Any, output_buffer: Any, output_lengths: Any) -> None:
    """LMCache ``encode_fast_new``: encodes each (layer, channel) stream of ``input_sym``
    ``[L, T, C]`` with ``cdf`` ``[L, C, Lp]`` into ``output_buffer`` ``[L, C, capacity]`` uint8
    and its byte length into ``output_lengths`` ``[L, C]`` int32. Raises
    :class:`kvx.BufferTooSmallError` when a stream does not fit ``capacity`` (see
    :func:`stream_bound`)."""
    cdf_ptr, cdf_shape = _cdf_pointer(cdf)
    s_info = _symbols_info(input_sym, "input_sym")
    layers, tokens, channels = s_info.shape
    _same("cdf", cdf_shape[0], layers, "input_sym layers")
    _same("cdf", cdf_shape[1], channels, "input_sym channels")
    o_info = _typed_info(
        output_buffer,
        "output_buffer",
        lib.KVX_DTYPE_UINT8,
        3,
        "[layers, channels, capacity] uint8",
        writable=True,
    )
    _same("output_buffer", o_info.shape[0], layers, "layers")
    _same("output_buffer", o_info.shape[1], channels, "channels")
    l_info = _typed_info(
        output_lengths,
        "output_lengths",
        lib.KVX_DTYPE_INT32,
        2,
        "[layers, channels] int32",
        writable=True,
    )
    if l_info.shape != (layers, channels):
        raise InvalidArgumentError(
            f"output_lengths: expected shape {(layers, channels)}, got {l_info.shape}"
        )
    _same_device(s_info, _cdf_info(cdf), o_info, l_info)
    check(
        lib.kvx_codec_encode(
            cdf_ptr,
            cdf_shape[2],
            _ptr(s_info, "const uint8_t *"),
            layers,
            tokens,
            channels,
            _ptr(o_info, "uint8_t *"),
            o_info.shape[2],
            _ptr(l_info, "int32_t *"),
            current_stream(s_info.device),
        )
    )


def encode_streams(cdf: Any, input_sym: Any) -> tuple[Any, Any]:
    """:func:`encode_fast_new` with buffers sized by :func:`stream_bound`: returns
    (streams ``[L, C, capacity]`` uint8, lengths ``[L, C]`` int32)."""
    s_info = _symbols_info(input_sym, "input_sym")
    layers, tokens, channels = s_info.shape
    capacity = stream_bound(tokens)
    out = _like(input_sym, (layers, channels, capacity), "uint8")
    lengths = _like(input_sym, (layers, channels), "int32")
    encode_fast_new(cdf, input_sym, out, lengths)
    return out, lengths


def _decode_output(output: Any, layers: int, channels: int) -> ArrayInfo:
    info = _symbols_info(output, "output", writable=True)
    _same("output", info.shape[0], layers, "cdf layers")
    _same("output", info.shape[2], channels, "cdf channels")
    return info


def decode_fast_new(cdf: Any, bytestreams: Any, lengths: Any, output: Any) -> None:
    """LMCache ``decode_fast_new``: stream (l, c) is ``bytestreams[l, c, :lengths[l, c]]``
    (``[L, C, capacity]`` uint8, lengths int32); bytes past a stream's length read as zero.
    Writes symbols into ``output`` ``[L, T, C]`` (uint8/int8; T taken from it)."""
    cdf_ptr, cdf_shape = _cdf_pointer(cdf)
    layers, channels = cdf_shape[0], cdf_shape[1]
    b_info = _typed_info(
        bytestreams, "bytestreams", lib.KVX_DTYPE_UINT8, 3, "[layers, channels, capacity] uint8"
    )
    _same("bytestreams", b_info.shape[0], layers, "cdf layers")
    _same("bytestreams", b_info.shape[1], channels, "cdf channels")
    l_info = _typed_info(lengths, "lengths", lib.KVX_DTYPE_INT32, 2, "[layers, channels] int32")
    if l_info.shape != (layers, channels):
        raise InvalidArgumentError(
            f"lengths: expected shape {(layers, channels)}, got {l_info.shape}"
        )
    o_info = _decode_output(output, layers, channels)
    _same_device(o_info, _cdf_info(cdf), b_info, l_info)
    check(
        lib.kvx_codec_decode(
            cdf_ptr,
            cdf_shape[2],
            _ptr(b_info, "const uint8_t *"),
            b_info.shape[2],
            _ptr(l_info, "const int32_t *"),
            layers,
            o_info.shape[1],
            channels,
            _ptr(o_info, "uint8_t *"),
            current_stream(o_info.device),
        )
    )


def decode_fast_prefsum(cdf: Any, bytestreams: Any, lengths_prefsum: Any, output: Any) -> None:
    """LMCache ``decode_fast_prefsum``: all streams back to back in ``bytestreams`` (1-D
    uint8); stream i = l * C + c ends at ``lengths_prefsum`` (``[L, C]`` int32/int64, inclusive
    prefix sums of the lengths). Writes symbols into ``output`` ``[L, T, C]``."""
    cdf_ptr, cdf_shape = _cdf_pointer(cdf)
    layers, channels = cdf_shape[0], cdf_shape[1]
    b_info = describe(bytestreams, "bytestreams")
    if b_info.dtype != lib.KVX_DTYPE_UINT8 or len(b_info.shape) != 1:
        raise InvalidArgumentError(
            "bytestreams: expected a 1-D uint8 array, "
            f"got {getattr(bytestreams, 'dtype', None)} of shape {b_info.shape}"
        )
    _contiguous(b_info, "1-D uint8 array")
    p_info = describe(lengths_prefsum, "lengths_prefsum")
    if p_info.dtype not in (lib.KVX_DTYPE_INT32, lib.KVX_DTYPE_INT64):
        raise InvalidArgumentError(
            "lengths_prefsum: expected int32 or int64, "
            f"got {getattr(lengths_prefsum, 'dtype', None)}"
        )
    if int(np.prod(p_info.shape)) != layers * channels:
        raise InvalidArgumentError(
            f"lengths_prefsum: expected {layers * channels} entries ([layers, channels]), "
            f"got shape {p_info.shape}"
        )
    o_info = _decode_output(output, layers, channels)
    device = _same_device(o_info, _cdf_info(cdf), b_info)
    if device[0] == DEVICE_CPU:
        ends = np.ascontiguousarray(
            lengths_prefsum.cpu().numpy() if _torch.is_tensor(lengths_prefsum) else lengths_prefsum,
            dtype=np.int64,
        ).reshape(-1)
        ends_ptr = ends.__array_interface__["data"][0]
    else:  # int64 on the device, allocated on the current stream (freed after the kernel there)
        torch = _torch.imported()
        ends = (
            torch.as_tensor(lengths_prefsum)
            .to(device=output.device, dtype=torch.int64)
            .contiguous()
            .reshape(-1)
        )
        ends_ptr = ends.data_ptr()
    check(
        lib.kvx_codec_decode_prefsum(
            cdf_ptr,
            cdf_shape[2],
            _ptr(b_info, "const uint8_t *"),
            b_info.shape[0],
            ffi.cast("const int64_t *", ends_ptr),
            layers,
            o_info.shape[1],
            channels,
            _ptr(o_info, "uint8_t *"),
            current_stream(o_info.device),
        )
    )
