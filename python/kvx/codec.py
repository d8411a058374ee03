"""CacheGen-compatible KV codec (LMCache's CacheGen, bit-exact) in a portable container.

High level::

    blob = kvx.codec.encode(kv)            # kv: KV_2LTD [2, L, T, H*D] (or [2, L, T, H, D])
    kv2 = kvx.codec.decode(blob)           # [2, L, T, H*D], same dtype

``kv`` is a torch tensor or numpy array, float32, float16 or bfloat16 (bf16 needs torch); a
tensor on a device goes through host memory. Bins default to LMCache's schedule
(:func:`default_bins`). The blob is kvx's own container (``docs/codec-container.md``):
little-endian, no pickle, CRC-32 checked; decoding damaged or hostile bytes raises
:class:`kvx.CorruptInputError` naming the field.

Low level, mirroring LMCache's ``lmcache.c_ops`` so an adapter is thin: :func:`calculate_cdf`,
:func:`encode_fast_new`, :func:`decode_fast_new`, :func:`decode_fast_prefsum`, plus
:func:`quantize`, :func:`dequantize`, :func:`encode_streams` and :func:`stream_bound`. Symbols are
laid out ``[layers, tokens, channels]`` (int8 or uint8), CDF tables ``[layers, channels, Lp]``
(int16 or uint16, LMCache's layout), streams ``[layers, channels, capacity]`` uint8.
The low-level functions also take CUDA/HIP tensors (all on one device, or pinned host memory):
they run on the device's current stream without synchronising, outputs are allocated on that
device, and errors found in the data on the device (non-finite values, symbols or CDF tables out
of range, a stream longer than its slot) are raised by :func:`kvx.synchronize`. On Ascend NPUs
and Cambricon MLUs they run host-staged (copies to pinned host memory, the CPU codec, copies
back): those calls synchronise the stream and raise data errors at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from . import _torch
from ._errors import CorruptInputError, InvalidArgumentError
from ._native import check, ffi, lib
from ._tensors import DEVICE_CPU, ArrayInfo, current_stream, describe, require_same_device, require_writable
from .reference_codec import default_bins

__all__ = [
    "CodecInfo",
    "calculate_cdf",
    "decode",
    "decode_fast_new",
    "decode_fast_prefsum",
    "default_bins",
    "dequantize",
    "encode",
    "encode_fast_new",
    "encode_streams",
    "inspect",
    "quantize",
    "stream_bound",
]

Bins = Union[int, Sequence[int], None]
BytesLike = Union[bytes, bytearray, memoryview, np.ndarray, Any]

_FLOAT_DTYPES = {lib.KVX_DTYPE_FLOAT32: "float32", lib.KVX_DTYPE_FLOAT16: "float16", lib.KVX_DTYPE_BFLOAT16: "bfloat16"}
_SYMBOL_DTYPES = (lib.KVX_DTYPE_UINT8, lib.KVX_DTYPE_INT8)
DEFAULT_CHUNK_TOKENS = 256
# decode's default bound on the decoded size, as a multiple of the blob's size (see decode).
DEFAULT_MAX_RATIO = 1024


# ---------------------------------------------------------------- helpers


def _contiguous(info: ArrayInfo, shape_desc: str) -> None:
    if any(n == 0 for n in info.shape):
        return
    expected, step = [], 1
    for n in reversed(info.shape):
        expected.insert(0, step)
        step *= n
    if any(n > 1 and s != e for n, s, e in zip(info.shape, info.strides, expected)):
        raise InvalidArgumentError(f"{info.name}: expected a contiguous {shape_desc}, got strides {info.strides} for shape {info.shape}")


def _symbols_info(x: Any, name: str, ndim: int = 3, writable: bool = False) -> ArrayInfo:
    info = describe(x, name)
    if info.dtype not in _SYMBOL_DTYPES:
        raise InvalidArgumentError(f"{name}: expected int8 or uint8 symbols, got {getattr(x, 'dtype', None)}")
    if len(info.shape) != ndim:
        raise InvalidArgumentError(f"{name}: expected {ndim} dimensions [layers, tokens, channels], got shape {info.shape}")
    _contiguous(info, "[layers, tokens, channels] array")
    if writable:
        require_writable(info)
    return info


def _typed_info(x: Any, name: str, dtype: int, ndim: int, shape_desc: str, writable: bool = False) -> ArrayInfo:
    info = describe(x, name)
    if info.dtype != dtype:
        raise InvalidArgumentError(f"{name}: expected dtype {_dtype_name(dtype)}, got {getattr(x, 'dtype', None)}")
    if len(info.shape) != ndim:
        raise InvalidArgumentError(f"{name}: expected {ndim} dimensions {shape_desc}, got shape {info.shape}")
    _contiguous(info, shape_desc)
    if writable:
        require_writable(info)
    return info


def _dtype_name(code: int) -> str:
    names = {lib.KVX_DTYPE_INT32: "int32", lib.KVX_DTYPE_INT64: "int64", lib.KVX_DTYPE_UINT8: "uint8", lib.KVX_DTYPE_FLOAT32: "float32"}
    return names.get(code, _FLOAT_DTYPES.get(code, str(code)))


def _cdf_pointer(cdf: Any, name: str = "cdf") -> tuple[Any, tuple[int, ...]]:
    """The CDF tables ``[layers, channels, Lp]`` int16/uint16, contiguous -> (ptr, shape)."""
    if _torch.is_tensor(cdf):
        torch = _torch.imported()
        ok = cdf.dtype == torch.int16 or cdf.dtype == getattr(torch, "uint16", None)
        if not ok:
            raise InvalidArgumentError(f"{name}: expected int16 or uint16 CDF tables, got {cdf.dtype}")
        if cdf.dim() != 3 or not cdf.is_contiguous():
            raise InvalidArgumentError(f"{name}: expected a contiguous [layers, channels, Lp] tensor, got shape {tuple(cdf.shape)}")
        return ffi.cast("const uint16_t *", cdf.data_ptr()), tuple(cdf.shape)
    if isinstance(cdf, np.ndarray):
        if cdf.dtype not in (np.int16, np.uint16):
            raise InvalidArgumentError(f"{name}: expected int16 or uint16 CDF tables, got {cdf.dtype}")
        if cdf.ndim != 3 or not cdf.flags.c_contiguous:
            raise InvalidArgumentError(f"{name}: expected a contiguous [layers, channels, Lp] array, got shape {cdf.shape}")
        return ffi.cast("const uint16_t *", cdf.__array_interface__["data"][0]), tuple(cdf.shape)
    raise InvalidArgumentError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(cdf).__name__}")


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
            raise InvalidArgumentError(f"{name}: expected an int, a sequence of {num_layers} ints or None, got {type(bins).__name__}") from None
    if len(values) != num_layers:
        raise InvalidArgumentError(f"{name}: expected {num_layers} entries (one per layer), got {len(values)}")
    for i, b in enumerate(values):
        if not lib.KVX_CODEC_MIN_BINS <= b <= lib.KVX_CODEC_MAX_BINS:
            raise InvalidArgumentError(f"{name}[{i}]: expected {lib.KVX_CODEC_MIN_BINS}..{lib.KVX_CODEC_MAX_BINS}, got {b}")
    return values


def _same_device(*infos: ArrayInfo) -> tuple[int, int]:
    """The device the call runs on (the first array's); the others must be reachable from it."""
    return require_same_device(list(infos))


def _cdf_info(cdf: Any) -> ArrayInfo:
    """Where the CDF tables (checked by :func:`_cdf_pointer`) live, through a byte view: int16
    has no kvx dtype."""
    return describe(cdf.view(_torch.imported().uint8) if _torch.is_tensor(cdf) else cdf.view(np.uint8), "cdf")


def _int32_array(values: Sequence[int]) -> Any:
    return ffi.new("int32_t[]", list(values))


# ---------------------------------------------------------------- low level


def stream_bound(num_tokens: int) -> int:
    """Worst-case bytes of one encoded (layer, channel) stream of ``num_tokens`` symbols."""
    out = ffi.new("int64_t *")
    check(lib.kvx_codec_stream_bound(int(num_tokens), out))
    return int(out[0])


def quantize(x: Any, bins: Sequence[int]) -> tuple[Any, Any]:
    """CacheGen quantization of ``x`` ``[rows, T, C]`` (float32/float16/bfloat16, channels
    contiguous) with ``bins[rows]``. Returns symbols uint8 ``[rows, T, C]`` and scales float32
    ``[rows, T]`` (max |x| per token, exact in x's dtype), same family (torch/numpy) as x."""
    info = describe(x, "x")
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(f"x: expected float32, float16 or bfloat16, got {getattr(x, 'dtype', None)}")
    if len(info.shape) != 3:
        raise InvalidArgumentError(f"x: expected 3 dimensions [rows, tokens, channels], got shape {info.shape}")
    rows, tokens, channels = info.shape
    if channels > 1 and info.strides[2] != 1 and rows * tokens > 0:
        raise InvalidArgumentError(f"x: expected contiguous channels (last stride 1), got strides {info.strides}")
    b = _bins_list(bins, [], rows, "bins")
    symbols = _like(x, (rows, tokens, channels), "uint8")
    scales = _like(x, (rows, tokens), "float32")
    s_info, sc_info = describe(symbols, "symbols"), describe(scales, "scales")
    check(lib.kvx_codec_quantize(ffi.cast("const void *", info.ptr), info.dtype, rows, tokens, channels,
                                 info.strides[0], info.strides[1], _int32_array(b), _ptr(s_info, "uint8_t *"),
                                 _ptr(sc_info, "float *"), current_stream(info.device)))
    return symbols, scales


def dequantize(symbols: Any, scales: Any, bins: Sequence[int], dtype: Any = None) -> Any:
    """Inverse of :func:`quantize`: ``(s - MAX) / MAX * scale`` in float32, rounded to ``dtype``
    (a torch or numpy dtype; default float32). Returns ``[rows, T, C]``."""
    s_info = _symbols_info(symbols, "symbols")
    rows, tokens, channels = s_info.shape
    sc_info = _typed_info(scales, "scales", lib.KVX_DTYPE_FLOAT32, 2, "[rows, tokens] float32")
    if sc_info.shape != (rows, tokens):
        raise InvalidArgumentError(f"scales: expected shape {(rows, tokens)}, got {sc_info.shape}")
    b = _bins_list(bins, [], rows, "bins")
    device = _same_device(s_info, sc_info)
    if _torch.is_tensor(symbols):
        torch = _torch.imported()
        out = torch.empty((rows, tokens, channels), dtype=dtype or torch.float32, device=symbols.device)
    else:
        out = np.empty((rows, tokens, channels), dtype=dtype or np.float32)
    o_info = describe(out, "dtype")
    if o_info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(f"dtype: expected float32, float16 or bfloat16, got {dtype}")
    check(lib.kvx_codec_dequantize(_ptr(s_info, "const uint8_t *"), _ptr(sc_info, "const float *"), _int32_array(b),
                                   rows, tokens, channels, o_info.dtype, ffi.cast("void *", o_info.ptr),
                                   tokens * channels, channels, current_stream(device)))
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
        raise InvalidArgumentError(f"num_bins: expected 1..{lib.KVX_CODEC_MAX_BINS}, got {num_bins}")
    cdf = _like(input_sym, (layers, channels, nb + 1), "int16")
    ptr = cdf.data_ptr() if _torch.is_tensor(cdf) else cdf.__array_interface__["data"][0]
    check(lib.kvx_codec_calculate_cdf(_ptr(info, "const uint8_t *"), layers, tokens, channels, nb,
                                      ffi.cast("uint16_t *", ptr), current_stream(info.device)))
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
    o_info = _typed_info(output_buffer, "output_buffer", lib.KVX_DTYPE_UINT8, 3, "[layers, channels, capacity] uint8", writable=True)
    _same("output_buffer", o_info.shape[0], layers, "layers")
    _same("output_buffer", o_info.shape[1], channels, "channels")
    l_info = _typed_info(output_lengths, "output_lengths", lib.KVX_DTYPE_INT32, 2, "[layers, channels] int32", writable=True)
    if l_info.shape != (layers, channels):
        raise InvalidArgumentError(f"output_lengths: expected shape {(layers, channels)}, got {l_info.shape}")
    _same_device(s_info, _cdf_info(cdf), o_info, l_info)
    check(lib.kvx_codec_encode(cdf_ptr, cdf_shape[2], _ptr(s_info, "const uint8_t *"), layers, tokens, channels,
                               _ptr(o_info, "uint8_t *"), o_info.shape[2], _ptr(l_info, "int32_t *"),
                               current_stream(s_info.device)))


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
    b_info = _typed_info(bytestreams, "bytestreams", lib.KVX_DTYPE_UINT8, 3, "[layers, channels, capacity] uint8")
    _same("bytestreams", b_info.shape[0], layers, "cdf layers")
    _same("bytestreams", b_info.shape[1], channels, "cdf channels")
    l_info = _typed_info(lengths, "lengths", lib.KVX_DTYPE_INT32, 2, "[layers, channels] int32")
    if l_info.shape != (layers, channels):
        raise InvalidArgumentError(f"lengths: expected shape {(layers, channels)}, got {l_info.shape}")
    o_info = _decode_output(output, layers, channels)
    _same_device(o_info, _cdf_info(cdf), b_info, l_info)
    check(lib.kvx_codec_decode(cdf_ptr, cdf_shape[2], _ptr(b_info, "const uint8_t *"), b_info.shape[2],
                               _ptr(l_info, "const int32_t *"), layers, o_info.shape[1], channels,
                               _ptr(o_info, "uint8_t *"), current_stream(o_info.device)))


def decode_fast_prefsum(cdf: Any, bytestreams: Any, lengths_prefsum: Any, output: Any) -> None:
    """LMCache ``decode_fast_prefsum``: all streams back to back in ``bytestreams`` (1-D
    uint8); stream i = l * C + c ends at ``lengths_prefsum`` (``[L, C]`` int32/int64, inclusive
    prefix sums of the lengths). Writes symbols into ``output`` ``[L, T, C]``."""
    cdf_ptr, cdf_shape = _cdf_pointer(cdf)
    layers, channels = cdf_shape[0], cdf_shape[1]
    b_info = describe(bytestreams, "bytestreams")
    if b_info.dtype != lib.KVX_DTYPE_UINT8 or len(b_info.shape) != 1:
        raise InvalidArgumentError(f"bytestreams: expected a 1-D uint8 array, got {getattr(bytestreams, 'dtype', None)} of shape {b_info.shape}")
    _contiguous(b_info, "1-D uint8 array")
    p_info = describe(lengths_prefsum, "lengths_prefsum")
    if p_info.dtype not in (lib.KVX_DTYPE_INT32, lib.KVX_DTYPE_INT64):
        raise InvalidArgumentError(f"lengths_prefsum: expected int32 or int64, got {getattr(lengths_prefsum, 'dtype', None)}")
    if int(np.prod(p_info.shape)) != layers * channels:
        raise InvalidArgumentError(f"lengths_prefsum: expected {layers * channels} entries ([layers, channels]), got shape {p_info.shape}")
    o_info = _decode_output(output, layers, channels)
    device = _same_device(o_info, _cdf_info(cdf), b_info)
    if device[0] == DEVICE_CPU:
        ends = np.ascontiguousarray(lengths_prefsum.cpu().numpy() if _torch.is_tensor(lengths_prefsum) else lengths_prefsum, dtype=np.int64).reshape(-1)
        ends_ptr = ends.__array_interface__["data"][0]
    else:  # int64 on the device, allocated on the current stream (freed after the kernel there)
        torch = _torch.imported()
        ends = torch.as_tensor(lengths_prefsum).to(device=output.device, dtype=torch.int64).contiguous().reshape(-1)
        ends_ptr = ends.data_ptr()
    check(lib.kvx_codec_decode_prefsum(cdf_ptr, cdf_shape[2], _ptr(b_info, "const uint8_t *"), b_info.shape[0],
                                       ffi.cast("const int64_t *", ends_ptr), layers,
                                       o_info.shape[1], channels, _ptr(o_info, "uint8_t *"),
                                       current_stream(o_info.device)))


# ---------------------------------------------------------------- container


@dataclass(frozen=True)
class CodecInfo:
    """What a container holds (see :func:`inspect`)."""

    dtype: str  # "float32" | "float16" | "bfloat16"
    num_kv: int
    num_layers: int
    num_tokens: int
    num_heads: int
    head_size: int
    key_bins: list[int]
    value_bins: list[int]
    num_bins: int
    chunk_tokens: int
    num_chunks: int
    format_version: int
    decoded_bytes: int  # what decode writes: num_kv * L * T * H * D * element size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape :func:`decode` returns: ``[num_kv, num_layers, num_tokens, heads * head_size]``."""
        return (self.num_kv, self.num_layers, self.num_tokens, self.num_heads * self.head_size)


def _is_device_tensor(x: Any) -> bool:
    return _torch.is_tensor(x) and not x.is_cpu


def _kv_view(kv: Any, name: str) -> tuple[ArrayInfo, int, int]:
    """Checks a KV_2LTD-like tensor; returns its info, num_heads and head_size."""
    empty = any(n == 0 for n in getattr(kv, "shape", (1,)))
    info = describe(kv, name)
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(f"{name}: expected float32, float16 or bfloat16, got {getattr(kv, 'dtype', None)}")
    if len(info.shape) == 4:
        heads, head_size = 1, info.shape[3]
        if not empty and info.shape[3] > 1 and info.strides[3] != 1:
            raise InvalidArgumentError(f"{name}: expected contiguous channels (last stride 1), got strides {info.strides}")
    elif len(info.shape) == 5:
        heads, head_size = info.shape[3], info.shape[4]
        if not empty and ((head_size > 1 and info.strides[4] != 1) or (heads > 1 and info.strides[3] != head_size)):
            raise InvalidArgumentError(f"{name}: expected each token's heads contiguous, got strides {info.strides}")
    else:
        raise InvalidArgumentError(f"{name}: expected [num_kv, layers, tokens, channels] or [num_kv, layers, tokens, heads, head_size], got shape {info.shape}")
    if info.shape[0] not in (1, 2):
        raise InvalidArgumentError(f"{name}: expected 2 planes (K, V) or 1 (MLA) in dimension 0, got {info.shape[0]}")
    return info, heads, head_size


def _dense_desc(info: ArrayInfo, heads: int, head_size: int) -> Any:
    d = ffi.new("kvx_dense_desc *")
    d.struct_size = ffi.sizeof("kvx_dense_desc")
    d.dtype = info.dtype
    d.num_layers, d.num_kv = info.shape[1], info.shape[0]
    d.num_heads, d.head_size = heads, head_size
    d.num_tokens = info.shape[2]
    d.base = ffi.cast("void *", info.ptr)
    d.kv_stride, d.layer_stride, d.token_stride = info.strides[0], info.strides[1], info.strides[2]
    d.head_stride = head_size
    return d


def encode(kv: Any, key_bins: Bins = None, value_bins: Bins = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> bytes:
    """Compresses a dense KV cache into kvx's CacheGen container.

    kv: ``[2, L, T, H*D]`` (LMCache KV_2LTD), ``[2, L, T, H, D]``, or ``[1, L, T, D]`` (MLA);
    float32/float16/bfloat16, each token's channels contiguous (other strides free). A tensor on
    a device (GPU, NPU, MLU) is copied to host memory first (the whole tensor, synchronously):
    the container is a host byte string; the device codec is the low-level API.
    key_bins / value_bins: bins per layer (int, sequence of L ints, or None for LMCache's schedule,
    :func:`default_bins`). chunk_tokens: tokens per chunk (1..65535), each chunk with its own CDF
    tables like LMCache's 256-token chunks. Raises :class:`kvx.InvalidArgumentError` for
    non-finite values.
    """
    if _is_device_tensor(kv):
        kv = kv.to("cpu")  # staged through host memory: the container is a host byte string
    info, heads, head_size = _kv_view(kv, "kv")
    num_layers = info.shape[1]
    default_k, default_v = default_bins(num_layers)
    kb = _bins_list(key_bins, default_k, num_layers, "key_bins")
    vb = _bins_list(value_bins, default_v, num_layers, "value_bins")
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, (int, np.integer)):
        raise InvalidArgumentError(f"chunk_tokens: expected an int 1..65535, got {chunk_tokens!r}")
    desc = _dense_desc(info, heads, head_size)
    params = ffi.new("kvx_codec_params *")
    params.struct_size = ffi.sizeof("kvx_codec_params")
    kb_c, vb_c = _int32_array(kb), _int32_array(vb)
    params.key_bins, params.value_bins = kb_c, vb_c
    params.chunk_tokens = int(chunk_tokens)
    bound = ffi.new("int64_t *")
    check(lib.kvx_codec_compress_bound(desc, params, bound))
    buf = np.empty(int(bound[0]), dtype=np.uint8)
    size = ffi.new("int64_t *")
    check(lib.kvx_codec_compress(desc, params, ffi.from_buffer(buf), buf.size, size, ffi.NULL))
    return buf[: int(size[0])].tobytes()


def _blob_buffer(blob: BytesLike) -> Any:
    if _torch.is_tensor(blob):
        if blob.dtype != _torch.imported().uint8 or blob.device.type != "cpu":
            raise InvalidArgumentError(f"blob: expected a CPU uint8 tensor, got {blob.dtype} on {blob.device}")
        blob = blob.contiguous().numpy()
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8:
            raise InvalidArgumentError(f"blob: expected a uint8 array, got {blob.dtype}")
        blob = np.ascontiguousarray(blob).reshape(-1)
    try:
        return ffi.from_buffer(blob)
    except TypeError:
        raise InvalidArgumentError(f"blob: expected bytes, bytearray, memoryview or a uint8 array, got {type(blob).__name__}") from None


def inspect(blob: BytesLike) -> CodecInfo:
    """Reads a container's header (checked, CRC included) and checks its chunk table (each
    chunk's frame within the blob), without decoding anything."""
    buf = _blob_buffer(blob)
    info = ffi.new("kvx_codec_info *")
    info.struct_size = ffi.sizeof("kvx_codec_info")
    check(lib.kvx_codec_inspect(buf, len(buf), info, ffi.NULL, 0))
    bins = ffi.new("int32_t[]", info.num_kv * info.num_layers)
    check(lib.kvx_codec_inspect(buf, len(buf), info, bins, info.num_kv * info.num_layers))
    L = info.num_layers
    values = [int(b) for b in bins]
    return CodecInfo(
        dtype=_FLOAT_DTYPES[info.dtype],
        num_kv=info.num_kv,
        num_layers=L,
        num_tokens=int(info.num_tokens),
        num_heads=info.num_heads,
        head_size=info.head_size,
        key_bins=values[:L],
        value_bins=values[L:],
        num_bins=info.num_bins,
        chunk_tokens=int(info.chunk_tokens),
        num_chunks=int(info.num_chunks),
        format_version=int(info.format_version),
        decoded_bytes=int(info.decoded_bytes),
    )


def _new_output(meta: CodecInfo, as_numpy: bool) -> Any:
    torch = None if as_numpy else _torch.load()
    if torch is not None:
        return torch.empty(meta.shape, dtype=getattr(torch, meta.dtype))
    if meta.dtype == "bfloat16":
        raise InvalidArgumentError("as_numpy: numpy has no bfloat16; decode this container with torch installed and as_numpy=False")
    return np.empty(meta.shape, dtype=meta.dtype)


def decode(blob: BytesLike, out: Any = None, as_numpy: bool = False, max_bytes: int | None = None,
           max_ratio: float | None = DEFAULT_MAX_RATIO) -> Any:
    """Decodes a container made by :func:`encode`.

    Returns ``[num_kv, L, T, H*D]`` in the container's dtype: a torch tensor (numpy array when
    torch is missing or ``as_numpy``), or ``out`` filled in place when given (``[num_kv, L, T,
    H*D]`` or ``[num_kv, L, T, H, D]``, same dtype, any strides with contiguous heads; on a
    device, it is filled from a host copy).
    Damaged or hostile bytes raise :class:`kvx.CorruptInputError` naming the field.

    Before anything is allocated, the header and the chunk table are checked against the blob,
    and the decoded size the header declares is bounded, since highly compressible data (e.g.
    all-zero tokens) legitimately expands a lot while a forged header could ask for any size:

    max_bytes: largest decoded size accepted, in bytes (None: no absolute cap); a larger
        container raises :class:`kvx.InvalidArgumentError`.
    max_ratio: largest decoded size accepted, as a multiple of ``len(blob)``, applied when
        ``decode`` allocates the output (``out`` not given, or on a device). The default, 1024,
        is seven times what all-zero float32 data reaches with the default 256-token chunks;
        all-zero data in chunks of thousands of tokens can exceed it: pass a larger value, or
        None, for blobs you trust. A larger declared size raises
        :class:`kvx.CorruptInputError`.
    """
    buf = _blob_buffer(blob)
    meta = inspect(blob)
    size = meta.decoded_bytes
    if max_bytes is not None and size > max_bytes:
        raise InvalidArgumentError(f"max_bytes: the container decodes to {size} bytes, more than max_bytes = {max_bytes}")
    if max_ratio is not None and (out is None or _is_device_tensor(out)) and size > max_ratio * len(buf):
        raise CorruptInputError(f"blob: the header declares {size} decoded bytes from {len(buf)} bytes "
                                f"(ratio {size / max(len(buf), 1):.0f}), more than max_ratio = {max_ratio}; "
                                "pass a larger max_ratio (or None) for a blob you trust")
    if _is_device_tensor(out):  # staged through host memory, like encode
        require_writable(describe(out, "out"))  # the host copy would hide broadcast views
        host = decode(blob, out=_torch.imported().empty(out.shape, dtype=out.dtype), max_bytes=max_bytes, max_ratio=None)
        return out.copy_(host)
    result = out if out is not None else _new_output(meta, as_numpy)
    info, heads, head_size = _kv_view(result, "out")
    if out is not None:
        require_writable(info)
        if info.dtype != {name: code for code, name in _FLOAT_DTYPES.items()}[meta.dtype]:
            raise InvalidArgumentError(f"out: expected dtype {meta.dtype} (the container's), got {getattr(out, 'dtype', None)}")
        if heads * head_size != meta.num_heads * meta.head_size or info.shape[:3] != meta.shape[:3]:
            raise InvalidArgumentError(f"out: expected shape {meta.shape} (the container's), got {info.shape}")
    desc = _dense_desc(info, meta.num_heads, meta.head_size)
    if info.shape[3:] != (meta.num_heads, meta.head_size):
        # a [.., H*D] view with contiguous channels is the same memory as [.., H, D]
        desc.head_stride = meta.head_size
    check(lib.kvx_codec_decompress(buf, len(buf), desc, ffi.NULL))
    return result

