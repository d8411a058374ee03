"""kvx's CacheGen container (``docs/codec-container.md``): :func:`encode` a dense KV cache into
one host byte string, :func:`inspect` its header, :func:`decode` it back (see :mod:`kvx.codec`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _torch
from ._codec_arrays import _FLOAT_DTYPES, Bins, _bins_list, _int32_array
from ._errors import CorruptInputError, InvalidArgumentError
from ._native import check, ffi, lib
from ._tensors import ArrayInfo, describe, require_writable
from .reference_codec import default_bins
from .reference_rotated import default_rotated_bins

BytesLike = bytes | bytearray | memoryview | np.ndarray | Any

DEFAULT_CHUNK_TOKENS = 256
# The rotated method's default: longer chunks carry fewer CDF tables for the same streams.
DEFAULT_ROTATED_CHUNK_TOKENS = 512
METHODS = ("cachegen", "rotated")  # index = enum kvx_codec_method
# decode's default bound on the decoded size, as a multiple of the blob's size (see decode).
DEFAULT_MAX_RATIO = 1024


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
    method: str = "cachegen"  # "cachegen" | "rotated"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape :func:`decode` returns: ``[num_kv, num_layers, num_tokens, heads * head_size]``."""
        return (self.num_kv, self.num_layers, self.num_tokens, self.num_heads * self.head_size)


def _method_code(method: str) -> int:
    if method not in METHODS:
        raise InvalidArgumentError(f"method: expected one of {METHODS}, got {method!r}")
    return METHODS.index(method)


def _is_device_tensor(x: Any) -> bool:
    return _torch.is_tensor(x) and not x.is_cpu


def _kv_view(kv: Any, name: str) -> tuple[ArrayInfo, int, int]:
    """Checks a KV_2LTD-like tensor; returns its info, num_heads and head_size."""
    empty = any(n == 0 for n in getattr(kv, "shape", (1,)))
    info = describe(kv, name)
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(
            f"{name}: expected float32, float16 or bfloat16, got {getattr(kv, 'dtype', None)}"
        )
    if len(info.shape) == 4:
        heads, head_size = 1, info.shape[3]
        if not empty and info.shape[3] > 1 and info.strides[3] != 1:
            raise InvalidArgumentError(
                f"{name}: expected contiguous channels (last stride 1), got strides {info.strides}"
            )
    elif len(info.shape) == 5:
        heads, head_size = info.shape[3], info.shape[4]
        if not empty and (
            (head_size > 1 and info.strides[4] != 1) or (heads > 1 and info.strides[3] != head_size)
        ):
            raise InvalidArgumentError(
                f"{name}: expected each token's heads contiguous, got strides {info.strides}"
            )
    else:
        raise InvalidArgumentError(
            f"{name}: expected [num_kv, layers, tokens, channels] or "
            f"[num_kv, layers, tokens, heads, head_size], got shape {info.shape}"
        )
    if info.shape[0] not in (1, 2):
        raise InvalidArgumentError(
            f"{name}: expected 2 planes (K, V) or 1 (MLA) in dimension 0, got {info.shape[0]}"
        )
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


def _split_heads(heads: int, head_size: int, split: int | None) -> tuple[int, int]:
    """(heads, head_size) after ``head_size=split`` divides a flat ``[.., H*D]`` input's heads."""
    if split is None:
        return heads, head_size
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or split < 1:
        raise InvalidArgumentError(f"head_size: expected a positive int or None, got {split!r}")
    channels = heads * head_size
    if channels % split or (heads > 1 and split != head_size):
        raise InvalidArgumentError(
            f"head_size: expected a divisor of the {channels} channels that keeps kv's heads "
            f"({heads} x {head_size}), got {split}"
        )
    return channels // int(split), int(split)


def encode(
    kv: Any,
    key_bins: Bins = None,
    value_bins: Bins = None,
    chunk_tokens: int | None = None,
    method: str = "cachegen",
    head_size: int | None = None,
) -> bytes:
    """Compresses a dense KV cache into kvx's container.

    kv: ``[2, L, T, H*D]`` (LMCache KV_2LTD), ``[2, L, T, H, D]``, or ``[1, L, T, D]`` (MLA);
    float32/float16/bfloat16, each token's channels contiguous (other strides free). A tensor on
    a device (GPU, NPU, MLU) is copied to host memory first (the whole tensor, synchronously):
    the container is a host byte string; the device codec is the low-level API.
    method: ``"cachegen"`` (LMCache's CacheGen, bit for bit) or ``"rotated"`` (each head
    Walsh-Hadamard rotated before quantization: fewer bits for the same next-token quality,
    see docs/codec-quality.md; needs a power-of-two head size, given by a 5-dimensional kv or
    ``head_size``). key_bins / value_bins: bins per layer (int, sequence of L ints, or None for
    the method's schedule: :func:`default_bins` for CacheGen, :func:`default_rotated_bins`).
    chunk_tokens: tokens per chunk (1..65535), each chunk with its own CDF tables; None: 256
    (LMCache's) for CacheGen, 512 for the rotated method. head_size: splits a flat
    ``[.., H*D]`` kv into heads of that size. Raises :class:`kvx.InvalidArgumentError` for
    non-finite values.
    """
    if _is_device_tensor(kv):
        kv = kv.to("cpu")  # staged through host memory: the container is a host byte string
    info, heads, size = _kv_view(kv, "kv")
    heads, size = _split_heads(heads, size, head_size)
    code = _method_code(method)
    num_layers = info.shape[1]
    default_k, default_v = default_rotated_bins(num_layers) if code else default_bins(num_layers)
    kb = _bins_list(key_bins, default_k, num_layers, "key_bins")
    vb = _bins_list(value_bins, default_v, num_layers, "value_bins")
    if chunk_tokens is None:
        chunk_tokens = DEFAULT_ROTATED_CHUNK_TOKENS if code else DEFAULT_CHUNK_TOKENS
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, (int, np.integer)):
        raise InvalidArgumentError(f"chunk_tokens: expected an int 1..65535, got {chunk_tokens!r}")
    desc = _dense_desc(info, heads, size)
    params = ffi.new("kvx_codec_params *")
    params.struct_size = ffi.sizeof("kvx_codec_params")
    params.method = code
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
            raise InvalidArgumentError(
                f"blob: expected a CPU uint8 tensor, got {blob.dtype} on {blob.device}"
            )
        blob = blob.contiguous().numpy()
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8:
            raise InvalidArgumentError(f"blob: expected a uint8 array, got {blob.dtype}")
        blob = np.ascontiguousarray(blob).reshape(-1)
    try:
        return ffi.from_buffer(blob)
    except TypeError:
        raise InvalidArgumentError(
            "blob: expected bytes, bytearray, memoryview or a uint8 array, "
            f"got {type(blob).__name__}"
        ) from None


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
        method=METHODS[info.method],
    )


def _new_output(meta: CodecInfo, as_numpy: bool) -> Any:
    torch = None if as_numpy else _torch.load()
    if torch is not None:
        return torch.empty(meta.shape, dtype=getattr(torch, meta.dtype))
    if meta.dtype == "bfloat16":
        raise InvalidArgumentError(
            "as_numpy: numpy has no bfloat16; decode this container with torch installed and "
            "as_numpy=False"
        )
    return np.empty(meta.shape, dtype=meta.dtype)


def decode(
    blob: BytesLike,
    out: Any = None,
    as_numpy: bool = False,
    max_bytes: int | None = None,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
) -> Any:
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
        raise InvalidArgumentError(
            f"max_bytes: the container decodes to {size} bytes, more than max_bytes = {max_bytes}"
        )
    if (
        max_ratio is not None
        and (out is None or _is_device_tensor(out))
        and size > max_ratio * len(buf)
    ):
        raise CorruptInputError(
            f"blob: the header declares {size} decoded bytes from {len(buf)} bytes "
            f"(ratio {size / max(len(buf), 1):.0f}), more than max_ratio = {max_ratio}; "
            "pass a larger max_ratio (or None) for a blob you trust"
        )
    if _is_device_tensor(out):  # staged through host memory, like encode
        require_writable(describe(out, "out"))  # the host copy would hide broadcast views
        host = decode(
            blob,
            out=_torch.imported().empty(out.shape, dtype=out.dtype),
            max_bytes=max_bytes,
            max_ratio=None,
        )
        return out.copy_(host)
    result = out if out is not None else _new_output(meta, as_numpy)
    info, heads, head_size = _kv_view(result, "out")
    if out is not None:
        require_writable(info)
        if info.dtype != {name: code for code, name in _FLOAT_DTYPES.items()}[meta.dtype]:
            raise InvalidArgumentError(
                f"out: expected dtype {meta.dtype} (the container's), "
                f"got {getattr(out, 'dtype', None)}"
            )
        if heads * head_size != meta.num_heads * meta.head_size or info.shape[:3] != meta.shape[:3]:
            raise InvalidArgumentError(
                f"out: expected shape {meta.shape} (the container's), got {info.shape}"
            )
    desc = _dense_desc(info, meta.num_heads, meta.head_size)
    if info.shape[3:] != (meta.num_heads, meta.head_size):
        # a [.., H*D] view with contiguous channels is the same memory as [.., H, D]
        desc.head_stride = meta.head_size
    check(lib.kvx_codec_decompress(buf, len(buf), desc, ffi.NULL))
    return result
