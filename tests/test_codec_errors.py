"""Bad input: every argument of every codec entry point is rejected with an error naming it
(and its expected value), and nothing is written. C entry points are called through cffi
directly so that NULLs and raw values reach the library; the Python API is checked too."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import kvx
import numpy as np
import pytest
from kvx import codec
from kvx._native import ffi, lib
from misaligned import misaligned_copy

L, T, C, BINS = 2, 6, 4, 16
LP = BINS + 1


def ptr(a: np.ndarray, ctype: str = "void *") -> Any:
    return ffi.cast(ctype, a.__array_interface__["data"][0])


class Setup:
    """Valid arguments for every entry point, with sentinel-filled outputs."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.x = rng.standard_normal((L, T, C)).astype(np.float32)
        self.bins = np.full(L, BINS, dtype=np.int32)
        self.symbols = np.full((L, T, C), 0xEE, dtype=np.uint8)
        self.scales = np.full((L, T), -7.0, dtype=np.float32)
        self.good_symbols = rng.integers(0, BINS - 1, size=(L, T, C), dtype=np.uint8)
        self.good_scales = np.abs(rng.standard_normal((L, T))).astype(np.float32)
        self.cdf = np.full((L, C, LP), 0xEEEE, dtype=np.uint16)
        self.good_cdf = np.empty((L, C, LP), dtype=np.uint16)
        assert (
            lib.kvx_codec_calculate_cdf(
                ptr(self.good_symbols, "uint8_t *"),
                L,
                T,
                C,
                BINS,
                ptr(self.good_cdf, "uint16_t *"),
                ffi.NULL,
            )
            == 0
        )
        self.cap = 64
        self.streams = np.full((L, C, self.cap), 0xEE, dtype=np.uint8)
        self.lengths = np.full((L, C), -5, dtype=np.int32)
        good_streams = np.zeros((L, C, self.cap), dtype=np.uint8)
        good_lengths = np.zeros((L, C), dtype=np.int32)
        assert (
            lib.kvx_codec_encode(
                ptr(self.good_cdf, "uint16_t *"),
                LP,
                ptr(self.good_symbols, "uint8_t *"),
                L,
                T,
                C,
                ptr(good_streams, "uint8_t *"),
                self.cap,
                ptr(good_lengths, "int32_t *"),
                ffi.NULL,
            )
            == 0
        )
        self.good_streams, self.good_lengths = good_streams, good_lengths
        self.packed = np.concatenate(
            [good_streams[l, c, : good_lengths[l, c]] for l in range(L) for c in range(C)]
        )
        self.ends = np.cumsum(good_lengths.ravel()).astype(np.int64)
        self.out = np.full((L, T, C), 1234.0, dtype=np.float32)
        self.bound = ffi.new("int64_t *", -99)

    def outputs(self) -> list[np.ndarray]:
        return [self.symbols, self.scales, self.cdf, self.streams, self.lengths, self.out]

    def snapshot(self) -> list[bytes]:
        return [a.tobytes() for a in self.outputs()] + [bytes(ffi.buffer(self.bound))]


BAD_STREAM = ffi.new("kvx_stream *", {"device_type": 99, "device_index": 0, "handle": ffi.NULL})


def quantize(s: Setup, **kw: Any) -> int:
    a = dict(
        x=ptr(s.x),
        dtype=lib.KVX_DTYPE_FLOAT32,
        rows=L,
        tokens=T,
        channels=C,
        row_stride=T * C,
        token_stride=C,
        bins=ptr(s.bins, "int32_t *"),
        symbols=ptr(s.symbols, "uint8_t *"),
        scales=ptr(s.scales, "float *"),
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_quantize(*a.values())


def dequantize(s: Setup, **kw: Any) -> int:
    a = dict(
        symbols=ptr(s.good_symbols, "uint8_t *"),
        scales=ptr(s.good_scales, "float *"),
        bins=ptr(s.bins, "int32_t *"),
        rows=L,
        tokens=T,
        channels=C,
        dtype=lib.KVX_DTYPE_FLOAT32,
        out=ptr(s.out),
        row_stride=T * C,
        token_stride=C,
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_dequantize(*a.values())


def calculate_cdf(s: Setup, **kw: Any) -> int:
    a = dict(
        symbols=ptr(s.good_symbols, "uint8_t *"),
        layers=L,
        tokens=T,
        channels=C,
        num_bins=BINS,
        cdf=ptr(s.cdf, "uint16_t *"),
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_calculate_cdf(*a.values())


def stream_bound(s: Setup, **kw: Any) -> int:
    a = dict(tokens=T, bytes=s.bound)
    a.update(kw)
    return lib.kvx_codec_stream_bound(*a.values())


def encode(s: Setup, **kw: Any) -> int:
    a = dict(
        cdf=ptr(s.good_cdf, "uint16_t *"),
        cdf_len=LP,
        symbols=ptr(s.good_symbols, "uint8_t *"),
        layers=L,
        tokens=T,
        channels=C,
        streams=ptr(s.streams, "uint8_t *"),
        capacity=s.cap,
        lengths=ptr(s.lengths, "int32_t *"),
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_encode(*a.values())


def decode(s: Setup, **kw: Any) -> int:
    a = dict(
        cdf=ptr(s.good_cdf, "uint16_t *"),
        cdf_len=LP,
        streams=ptr(s.good_streams, "uint8_t *"),
        capacity=s.cap,
        lengths=ptr(s.good_lengths, "int32_t *"),
        layers=L,
        tokens=T,
        channels=C,
        symbols=ptr(s.symbols, "uint8_t *"),
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_decode(*a.values())


def decode_prefsum(s: Setup, **kw: Any) -> int:
    a = dict(
        cdf=ptr(s.good_cdf, "uint16_t *"),
        cdf_len=LP,
        bytes=ptr(s.packed, "uint8_t *"),
        num_bytes=s.packed.size,
        ends=ptr(s.ends, "int64_t *"),
        layers=L,
        tokens=T,
        channels=C,
        symbols=ptr(s.symbols, "uint8_t *"),
        stream=ffi.NULL,
    )
    a.update(kw)
    return lib.kvx_codec_decode_prefsum(*a.values())


def _bad_cdf(s: Setup) -> Any:
    bad = s.good_cdf.copy()
    bad[1, 2, 5] = bad[1, 2, 4]  # not strictly increasing
    s.keep = bad
    return ptr(bad, "uint16_t *")


def _with(array_attr: str, index: tuple, value: Any, ctype: str) -> Callable[[Setup], Any]:
    def make(s: Setup) -> Any:
        a = getattr(s, array_attr).copy()
        a[index] = value
        s.keep = a
        return ptr(a, ctype)

    return make


def _x_with(value: float) -> Callable[[Setup], Any]:
    return _with("x", (1, T - 1, 2), value, "void *")


# (entry point, argument, bad value or factory, expected status, text the message must contain)
INVALID = lib.KVX_ERR_INVALID_ARGUMENT
CASES = [
    (quantize, "x", ffi.NULL, INVALID, "x: expected a pointer"),
    (quantize, "x", _x_with(np.inf), INVALID, "x: expected finite values"),
    (quantize, "x", _x_with(np.nan), INVALID, "row 1 token 5"),
    (quantize, "dtype", lib.KVX_DTYPE_UINT8, INVALID, "dtype: expected KVX_DTYPE_FLOAT32"),
    (quantize, "rows", 0, INVALID, "num_rows: expected 1.."),
    (quantize, "tokens", -1, INVALID, "num_tokens: expected 0.."),
    (
        quantize,
        "tokens",
        lib.KVX_CODEC_MAX_TOKENS + 1,
        INVALID,
        "num_tokens: expected 0..954437176",
    ),
    (quantize, "channels", 0, INVALID, "num_channels: expected 1.."),
    (quantize, "row_stride", -1, INVALID, "x: expected non-negative strides"),
    (quantize, "token_stride", -4, INVALID, "x: expected non-negative strides"),
    (quantize, "bins", ffi.NULL, INVALID, "bins: expected a pointer to 2"),
    (
        quantize,
        "bins",
        _with("bins", (1,), 3, "int32_t *"),
        INVALID,
        "bins[1]: expected 4..256, got 3",
    ),
    (
        quantize,
        "bins",
        _with("bins", (0,), 257, "int32_t *"),
        INVALID,
        "bins[0]: expected 4..256, got 257",
    ),
    (quantize, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (quantize, "scales", ffi.NULL, INVALID, "scales: expected a pointer"),
    (quantize, "stream", BAD_STREAM, None, ""),
    (dequantize, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (dequantize, "scales", ffi.NULL, INVALID, "scales: expected a pointer"),
    (dequantize, "bins", _with("bins", (1,), 2, "int32_t *"), INVALID, "bins[1]: expected 4..256"),
    (dequantize, "rows", -3, INVALID, "num_rows: expected 1.."),
    (dequantize, "tokens", -1, INVALID, "num_tokens"),
    (dequantize, "channels", 0, INVALID, "num_channels"),
    (dequantize, "dtype", 99, INVALID, "dtype: expected"),
    (dequantize, "out", ffi.NULL, INVALID, "out: expected a pointer"),
    (dequantize, "row_stride", -1, INVALID, "out: expected non-negative strides"),
    (dequantize, "token_stride", 2**62, INVALID, "out: strides address more than 2^63 bytes"),
    (dequantize, "stream", BAD_STREAM, None, ""),
    (calculate_cdf, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (
        calculate_cdf,
        "symbols",
        _with("good_symbols", (1, 3, 2), BINS, "uint8_t *"),
        INVALID,
        "symbols[1, 3, 2]: expected 0..15, got 16",
    ),
    (calculate_cdf, "layers", 0, INVALID, "num_layers: expected 1.."),
    (calculate_cdf, "tokens", -2, INVALID, "num_tokens"),
    (calculate_cdf, "channels", -1, INVALID, "num_channels"),
    (calculate_cdf, "num_bins", 0, INVALID, "num_bins: expected 1..256, got 0"),
    (calculate_cdf, "num_bins", 257, INVALID, "num_bins: expected 1..256, got 257"),
    (calculate_cdf, "cdf", ffi.NULL, INVALID, "cdf: expected a pointer"),
    (calculate_cdf, "stream", BAD_STREAM, None, ""),
    (stream_bound, "tokens", -1, INVALID, "num_tokens: expected 0.."),
    (stream_bound, "tokens", 2**40, INVALID, "num_tokens"),
    (stream_bound, "bytes", ffi.NULL, INVALID, "bytes: expected a pointer"),
    (encode, "cdf", ffi.NULL, INVALID, "cdf: expected a pointer"),
    (encode, "cdf", _bad_cdf, INVALID, "cdf[6]: expected strictly increasing"),
    (encode, "cdf_len", 2, INVALID, "cdf_len: expected 3..257, got 2"),
    (encode, "cdf_len", 258, INVALID, "cdf_len: expected 3..257"),
    (encode, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (
        encode,
        "symbols",
        _with("good_symbols", (0, 5, 3), LP - 1, "uint8_t *"),
        INVALID,
        "symbols[0, 5, 3]: expected 0..15, got 16",
    ),
    (encode, "layers", 0, INVALID, "num_layers"),
    (encode, "tokens", -1, INVALID, "num_tokens"),
    (encode, "channels", 0, INVALID, "num_channels"),
    (encode, "streams", ffi.NULL, INVALID, "streams: expected a pointer"),
    (encode, "capacity", 0, INVALID, "stream_capacity: expected 1..2147483647, got 0"),
    (encode, "capacity", 1, lib.KVX_ERR_BUFFER_TOO_SMALL, "needs 2 bytes, got 1"),
    (encode, "lengths", ffi.NULL, INVALID, "lengths: expected a pointer"),
    (encode, "stream", BAD_STREAM, None, ""),
    (decode, "cdf", ffi.NULL, INVALID, "cdf: expected a pointer"),
    (decode, "cdf", _bad_cdf, INVALID, "cdf[6]: expected strictly increasing"),
    (decode, "cdf_len", 0, INVALID, "cdf_len: expected 3..257"),
    (decode, "streams", ffi.NULL, INVALID, "streams: expected a pointer"),
    (decode, "capacity", -1, INVALID, "stream_capacity: expected 0.."),
    (decode, "lengths", ffi.NULL, INVALID, "lengths: expected a pointer"),
    (
        decode,
        "lengths",
        _with("good_lengths", (1, 1), 65, "int32_t *"),
        INVALID,
        "lengths[5]: expected 0..64 (stream_capacity), got 65",
    ),
    (
        decode,
        "lengths",
        _with("good_lengths", (0, 1), -1, "int32_t *"),
        INVALID,
        "lengths[1]: expected 0..64",
    ),
    (decode, "layers", 0, INVALID, "num_layers"),
    (decode, "tokens", -1, INVALID, "num_tokens"),
    (decode, "channels", 0, INVALID, "num_channels"),
    (decode, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (decode, "stream", BAD_STREAM, None, ""),
    (decode_prefsum, "cdf", _bad_cdf, INVALID, "cdf[6]"),
    (decode_prefsum, "cdf_len", 300, INVALID, "cdf_len"),
    (decode_prefsum, "bytes", ffi.NULL, INVALID, "bytes: expected a pointer"),
    (decode_prefsum, "num_bytes", -1, INVALID, "num_bytes: expected 0.."),
    (decode_prefsum, "num_bytes", 3, INVALID, "(non-decreasing, at most num_bytes)"),
    (decode_prefsum, "ends", ffi.NULL, INVALID, "end_offsets: expected a pointer"),
    (
        decode_prefsum,
        "ends",
        _with("ends", (3,), 0, "int64_t *"),
        INVALID,
        "end_offsets[3]: expected",
    ),
    (decode_prefsum, "layers", -1, INVALID, "num_layers"),
    (decode_prefsum, "tokens", -1, INVALID, "num_tokens"),
    (decode_prefsum, "channels", 0, INVALID, "num_channels"),
    (decode_prefsum, "symbols", ffi.NULL, INVALID, "symbols: expected a pointer"),
    (decode_prefsum, "stream", BAD_STREAM, None, ""),
]


@pytest.mark.parametrize(
    "fn,arg,bad,status,text",
    CASES,
    ids=[f"{c[0].__name__}-{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_low_level_rejects_bad_argument(fn, arg, bad, status, text) -> None:
    s = Setup()
    assert fn(s) == 0, kvx._native.last_error()  # the unmodified call is valid
    s = Setup()
    before = s.snapshot()
    value = bad(s) if isinstance(bad, types.FunctionType) else bad
    rc = fn(s, **{arg: value})
    message = kvx._native.last_error()
    if status is None:  # an unknown device type: whatever the status, an error that says so
        assert rc < 0 and "99" in message, message
    else:
        assert rc == status, (rc, message)
        assert text in message, message
    after = s.snapshot()
    if rc == lib.KVX_ERR_BUFFER_TOO_SMALL:  # slots are scratch: the streams may have been filled
        streams = [i for i, a in enumerate(s.outputs()) if a is s.streams]
        after = [b for i, b in enumerate(after) if i not in streams]
        before = [b for i, b in enumerate(before) if i not in streams]
    assert after == before, "an output was written"


# ---------------------------------------------------------------- container entry points


def _desc(kv: np.ndarray, **kw: Any) -> Any:
    d = ffi.new("kvx_dense_desc *")
    d.struct_size = ffi.sizeof("kvx_dense_desc")
    d.dtype = lib.KVX_DTYPE_FLOAT32
    d.num_kv, d.num_layers, d.num_tokens = kv.shape[0], kv.shape[1], kv.shape[2]
    d.num_heads, d.head_size = 1, kv.shape[3]
    d.base = ptr(kv)
    d.kv_stride, d.layer_stride, d.token_stride, d.head_stride = (s // 4 for s in kv.strides)
    for k, v in kw.items():
        setattr(d, k, v)
    return d


_KEEP_ALIVE: list = []  # cffi structs do not own what their pointer fields point to


def _params(bins: Any, **kw: Any) -> Any:
    _KEEP_ALIVE.append(bins)
    p = ffi.new("kvx_codec_params *")
    p.struct_size = ffi.sizeof("kvx_codec_params")
    p.key_bins = p.value_bins = bins
    p.chunk_tokens = 4
    for k, v in kw.items():
        setattr(p, k, v)
    return p


DESC_CASES = [
    ("struct_size", 2, "kv->struct_size: expected sizeof(kvx_dense_desc) ("),
    ("struct_size", 1000, "kv->struct_size: expected sizeof(kvx_dense_desc) ("),
    ("dtype", lib.KVX_DTYPE_INT8, "kv->dtype: expected KVX_DTYPE_FLOAT32"),
    ("num_kv", 3, "kv->num_kv: expected 1 or 2, got 3"),
    ("num_layers", 0, "expected num_layers, num_heads, head_size >= 1"),
    ("num_heads", 0, "expected num_layers, num_heads, head_size >= 1"),
    ("head_size", -1, "expected num_layers, num_heads, head_size >= 1"),
    ("num_tokens", -1, "num_tokens: expected 0.."),
    ("base", ffi.NULL, "kv->base: expected a pointer"),
    ("kv_stride", -1, "kv: expected non-negative strides"),
    ("layer_stride", -1, "kv: expected non-negative strides"),
    ("token_stride", 2**61, "kv: strides address more than 2^63 bytes"),
]
PARAM_CASES = [
    ("struct_size", 0, "params->struct_size: expected sizeof(kvx_codec_params) ("),
    ("struct_size", 33, "params->struct_size: expected sizeof(kvx_codec_params) ("),
    ("method", 2, "params->method: expected KVX_CODEC_METHOD_CACHEGEN (0) or "),
    ("key_bins", ffi.NULL, "params->key_bins: expected a pointer to 2"),
    ("value_bins", ffi.NULL, "params->value_bins: expected a pointer to 2"),
    ("chunk_tokens", 0, "params->chunk_tokens: expected 1..65535, got 0"),
    ("chunk_tokens", 65536, "params->chunk_tokens: expected 1..65535, got 65536"),
]


@pytest.fixture
def kv() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, L, 10, C)).astype(np.float32)


def _compress(
    kv: np.ndarray,
    desc: Any = None,
    params: Any = None,
    dst: Any = None,
    cap: int | None = None,
    size: Any = None,
) -> tuple[int, str, np.ndarray, Any]:
    bins = ffi.new("int32_t[]", [8] * L)
    buf = np.full(1 << 16, 0xEE, dtype=np.uint8)
    size = ffi.new("int64_t *", -42) if size is None else size
    rc = lib.kvx_codec_compress(
        desc if desc is not None else _desc(kv),
        params if params is not None else _params(bins),
        ptr(buf) if dst is None else dst,
        buf.size if cap is None else cap,
        size,
        ffi.NULL,
    )
    return rc, kvx._native.last_error(), buf, size


@pytest.mark.parametrize("field,value,text", DESC_CASES)
def test_compress_rejects_bad_kv_desc(kv, field, value, text) -> None:
    rc, msg, buf, size = _compress(kv, desc=_desc(kv, **{field: value}))
    assert rc == INVALID and text in msg, msg
    assert (buf == 0xEE).all() and size[0] == -42
    bins = ffi.new("int32_t[]", [8] * L)
    bound = ffi.new("int64_t *", -1)
    assert (
        lib.kvx_codec_compress_bound(_desc(kv, **{field: value}), _params(bins), bound) == INVALID
    )
    assert text in kvx._native.last_error() and bound[0] == -1


def test_compress_rejects_split_heads(kv) -> None:
    d = _desc(kv, num_heads=2, head_size=2, head_stride=3)
    rc, msg, _buf, _ = _compress(kv, desc=d)
    assert rc == INVALID and "kv->head_stride: expected head_size (2)" in msg


@pytest.mark.parametrize("field,value,text", PARAM_CASES)
def test_compress_rejects_bad_params(kv, field, value, text) -> None:
    bins = ffi.new("int32_t[]", [8] * L)
    rc, msg, buf, size = _compress(kv, params=_params(bins, **{field: value}))
    assert rc == INVALID and text in msg, msg
    assert (buf == 0xEE).all() and size[0] == -42


def test_compress_rejects_bad_bins_value(kv) -> None:
    bins = ffi.new("int32_t[]", [8, 300])
    rc, msg, buf, _ = _compress(kv, params=_params(bins))
    assert rc == INVALID and "params->key_bins[1]: expected 4..256, got 300" in msg
    assert (buf == 0xEE).all()


def test_compress_rejects_bad_outputs(kv) -> None:
    for kwargs, text in [
        (dict(dst=ffi.NULL), "dst: expected a pointer"),
        (dict(cap=-1), "dst_capacity: expected 0.."),
        (dict(size=ffi.NULL), "dst_size: expected a pointer"),
    ]:
        rc, msg, buf, _ = _compress(kv, **kwargs)
        assert rc == INVALID and text in msg, msg
        assert (buf == 0xEE).all()
    rc, msg, _, size = _compress(kv, cap=100)
    assert (
        rc == lib.KVX_ERR_BUFFER_TOO_SMALL
        and "dst_capacity: expected >= " in msg
        and size[0] == -42
    )
    rc = lib.kvx_codec_compress_bound(_desc(kv), _params(ffi.new("int32_t[]", [8] * L)), ffi.NULL)
    assert rc == INVALID and "bound: expected a pointer" in kvx._native.last_error()


def test_compress_rejects_non_finite(kv) -> None:
    kv[1, 0, 7, 2] = np.inf
    rc, msg, _, size = _compress(kv)
    assert rc == INVALID and "kv (plane 1, chunk from token 4): x: expected finite values" in msg, (
        msg
    )
    assert "row 0 token 3" in msg and size[0] == -42


def test_inspect_and_decompress_reject_bad_arguments(kv) -> None:
    blob = codec.encode(kv, key_bins=8, value_bins=8, chunk_tokens=4)
    src = ffi.from_buffer(blob)
    info = ffi.new("kvx_codec_info *")
    info.struct_size = ffi.sizeof("kvx_codec_info")
    assert lib.kvx_codec_inspect(ffi.NULL, 10, info, ffi.NULL, 0) == INVALID
    assert "src: expected a pointer" in kvx._native.last_error()
    assert lib.kvx_codec_inspect(src, -1, info, ffi.NULL, 0) == INVALID
    assert "src_size: expected 0.." in kvx._native.last_error()
    assert lib.kvx_codec_inspect(src, len(blob), ffi.NULL, ffi.NULL, 0) == INVALID
    assert kvx._native.last_error() == "info: expected a kvx_codec_info, got NULL"
    small = ffi.new("kvx_codec_info *")
    small.struct_size = 3
    assert lib.kvx_codec_inspect(src, len(blob), small, ffi.NULL, 0) == INVALID
    assert "info->struct_size: expected sizeof(kvx_codec_info) (" in kvx._native.last_error()
    bins = ffi.new("int32_t[]", [-1] * 4)
    assert lib.kvx_codec_inspect(src, len(blob), info, bins, 3) == INVALID
    assert "bins_capacity: expected >= 4" in kvx._native.last_error() and list(bins) == [-1] * 4

    out = np.full(kv.shape, 99.0, dtype=np.float32)
    assert lib.kvx_codec_decompress(src, len(blob), ffi.NULL, ffi.NULL) == INVALID
    assert "out: expected a kvx_dense_desc" in kvx._native.last_error()
    for field, value in [
        ("dtype", lib.KVX_DTYPE_FLOAT16),
        ("num_layers", 1),
        ("num_tokens", 9),
        ("num_kv", 1),
        ("head_size", 2),
    ]:
        assert (
            lib.kvx_codec_decompress(src, len(blob), _desc(out, **{field: value}), ffi.NULL)
            == INVALID
        )
        msg = kvx._native.last_error()
        assert f"out->{field}: expected" in msg or "out: expected num_layers" in msg, msg
        assert (out == 99.0).all()
    assert lib.kvx_codec_decompress(ffi.NULL, 5, _desc(out), ffi.NULL) == INVALID
    assert lib.kvx_codec_decompress(src, len(blob), _desc(out), BAD_STREAM) < 0
    assert (out == 99.0).all()
    assert lib.kvx_codec_decompress(src, len(blob), _desc(out), ffi.NULL) == 0


# ---------------------------------------------------------------- alignment

F32, F16, BF16 = lib.KVX_DTYPE_FLOAT32, lib.KVX_DTYPE_FLOAT16, lib.KVX_DTYPE_BFLOAT16
# (entry point, argument, the Setup array it points to, its C type, bytes past an aligned
# address, the float dtype passed (quantize, dequantize), the name and alignment the message says)
MISALIGNED = [
    (quantize, "x", "x", "void *", 2, F32, "x", "4 bytes (float32)"),
    (quantize, "x", "x", "void *", 1, F16, "x", "2 bytes (float16)"),
    (quantize, "bins", "bins", "int32_t *", 2, F32, "bins", "4 bytes (int32)"),
    (quantize, "scales", "scales", "float *", 1, F32, "scales", "4 bytes (float32)"),
    (dequantize, "scales", "good_scales", "float *", 2, F32, "scales", "4 bytes (float32)"),
    (dequantize, "bins", "bins", "int32_t *", 1, F32, "bins", "4 bytes (int32)"),
    (dequantize, "out", "out", "void *", 2, F32, "out", "4 bytes (float32)"),
    (dequantize, "out", "out", "void *", 3, BF16, "out", "2 bytes (bfloat16)"),
    (calculate_cdf, "cdf", "cdf", "uint16_t *", 1, None, "cdf", "2 bytes (uint16)"),
    (encode, "cdf", "good_cdf", "uint16_t *", 1, None, "cdf", "2 bytes (uint16)"),
    (encode, "lengths", "lengths", "int32_t *", 2, None, "lengths", "4 bytes (int32)"),
    (decode, "cdf", "good_cdf", "uint16_t *", 3, None, "cdf", "2 bytes (uint16)"),
    (decode, "lengths", "good_lengths", "int32_t *", 1, None, "lengths", "4 bytes (int32)"),
    (decode_prefsum, "cdf", "good_cdf", "uint16_t *", 1, None, "cdf", "2 bytes (uint16)"),
    (decode_prefsum, "ends", "ends", "int64_t *", 4, None, "end_offsets", "8 bytes (int64)"),
]


@pytest.mark.parametrize(
    "fn,arg,array,ctype,offset,dtype,name,alignment",
    MISALIGNED,
    ids=[f"{m[0].__name__}-{m[1]}-{m[4]}" for m in MISALIGNED],
)
def test_low_level_rejects_misaligned_arrays(fn, arg, array, ctype, offset, dtype, name, alignment):
    """Refused before a backend is chosen (an unknown device type gets the same message),
    naming the argument; nothing written, the misaligned copy included."""
    s = Setup()
    before = s.snapshot()
    buf, address = misaligned_copy(getattr(s, array), offset)
    buf_before = buf.copy()
    kw = {arg: ffi.cast(ctype, address)}
    if dtype is not None:
        kw["dtype"] = dtype
    want = f"{name}: expected an address aligned to {alignment}, got {address:#x}"
    for stream in (ffi.NULL, BAD_STREAM):
        assert fn(s, stream=stream, **kw) == INVALID
        assert kvx._native.last_error() == want
    assert s.snapshot() == before and np.array_equal(buf, buf_before), "an output was written"


def test_container_rejects_misaligned_arrays(kv) -> None:
    # the _buffers are kept (as locals) while the descriptors point into them
    _kv_buf, kv_address = misaligned_copy(kv, 2)
    desc = _desc(kv, base=ffi.cast("void *", kv_address))
    rc, msg, buf, size = _compress(kv, desc=desc)
    assert (rc, msg) == (
        INVALID,
        f"kv->base: expected an address aligned to 4 bytes (float32), got {kv_address:#x}",
    )
    assert (buf == 0xEE).all() and size[0] == -42
    _bins_buf, bins_address = misaligned_copy(np.full(L, 8, dtype=np.int32), 1)
    params = _params(ffi.cast("int32_t *", bins_address))
    bound = ffi.new("int64_t *", -1)
    assert lib.kvx_codec_compress_bound(_desc(kv), params, bound) == INVALID
    assert kvx._native.last_error() == (
        f"params->key_bins: expected an address aligned to 4 bytes (int32), got {bins_address:#x}"
    )
    assert bound[0] == -1

    blob = codec.encode(kv, key_bins=8, value_bins=8, chunk_tokens=4)
    out = np.full(kv.shape, 99.0, dtype=np.float32)
    out_buf, out_address = misaligned_copy(out, 1)
    out_before = out_buf.copy()
    desc = _desc(out, base=ffi.cast("void *", out_address))
    assert lib.kvx_codec_decompress(ffi.from_buffer(blob), len(blob), desc, ffi.NULL) == INVALID
    assert kvx._native.last_error() == (
        f"out->base: expected an address aligned to 4 bytes (float32), got {out_address:#x}"
    )
    assert np.array_equal(out_buf, out_before)


# ---------------------------------------------------------------- Python API


def test_python_encode_rejects_bad_arguments() -> None:
    kv = np.zeros((2, 3, 4, 8), dtype=np.float32)
    cases = [
        (lambda: codec.encode([1, 2, 3]), "kv: expected a torch.Tensor or numpy.ndarray"),
        (lambda: codec.encode(kv.astype(np.int32)), "kv: expected float32, float16 or bfloat16"),
        (lambda: codec.encode(kv[0]), "kv: expected [num_kv, layers, tokens, channels]"),
        (
            lambda: codec.encode(np.zeros((3, 3, 4, 8), np.float32)),
            "kv: expected 2 planes (K, V) or 1 (MLA)",
        ),
        (lambda: codec.encode(kv[..., ::2]), "kv: expected contiguous channels"),
        (lambda: codec.encode(kv, key_bins=[32, 32]), "key_bins: expected 3 entries"),
        (lambda: codec.encode(kv, value_bins=[32, 2, 16]), "value_bins[1]: expected 4..256, got 2"),
        (
            lambda: codec.encode(kv, key_bins="x"),
            "key_bins: expected an int, a sequence of 3 ints or None",
        ),
        (
            lambda: codec.encode(kv, chunk_tokens=0),
            "params->chunk_tokens: expected 1..65535, got 0",
        ),
        (lambda: codec.encode(kv, chunk_tokens=2.5), "chunk_tokens: expected an int 1..65535"),
    ]
    for call, text in cases:
        with pytest.raises(kvx.InvalidArgumentError) as err:
            call()
        assert text in str(err.value), str(err.value)
    with pytest.raises(kvx.InvalidArgumentError, match="x: expected finite values"):
        codec.encode(np.full((2, 1, 2, 4), np.nan, dtype=np.float32))


def test_python_decode_rejects_bad_arguments() -> None:
    kv = np.ones((2, 1, 3, 4), dtype=np.float32)
    blob = codec.encode(kv)
    with pytest.raises(kvx.InvalidArgumentError, match="blob: expected bytes"):
        codec.decode(12345)
    with pytest.raises(kvx.InvalidArgumentError, match="blob: expected a uint8 array"):
        codec.decode(np.zeros(10, dtype=np.int16))
    with pytest.raises(kvx.InvalidArgumentError, match=r"out: expected dtype float32"):
        codec.decode(blob, out=np.zeros((2, 1, 3, 4), dtype=np.float16))
    with pytest.raises(kvx.InvalidArgumentError, match=r"out: expected shape \(2, 1, 3, 4\)"):
        codec.decode(blob, out=np.zeros((2, 1, 2, 4), dtype=np.float32))
    ro = np.zeros((2, 1, 3, 4), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(kvx.InvalidArgumentError, match="out: expected a writable array"):
        codec.decode(blob, out=ro)
    with pytest.raises(kvx.CorruptInputError, match=r"header\.magic"):
        codec.decode(b"not a container at all")


def test_python_decode_rejects_an_out_tracked_by_autograd() -> None:
    torch = pytest.importorskip("torch")
    blob = codec.encode(np.ones((2, 1, 3, 4), dtype=np.float32))
    tracked = torch.zeros((2, 1, 3, 4), dtype=torch.float32, requires_grad=True)
    with pytest.raises(
        kvx.InvalidArgumentError, match="out: expected a tensor that does not require grad"
    ):
        codec.decode(blob, out=tracked)
    assert not tracked.detach().any()


def test_python_low_level_rejects_bad_arguments() -> None:
    sym = np.zeros((2, 5, 3), dtype=np.uint8)
    cdf = codec.calculate_cdf(sym, 16)
    with pytest.raises(kvx.InvalidArgumentError, match="input_sym: expected int8 or uint8 symbols"):
        codec.calculate_cdf(sym.astype(np.int32), 16)
    with pytest.raises(kvx.InvalidArgumentError, match=r"num_bins: expected 1\.\.256, got 300"):
        codec.calculate_cdf(sym, 300)
    with pytest.raises(kvx.InvalidArgumentError, match="cdf: expected int16 or uint16"):
        codec.encode_streams(cdf.astype(np.int32), sym)
    with pytest.raises(kvx.InvalidArgumentError, match="cdf: expected input_sym layers = 2, got 1"):
        codec.encode_streams(cdf[:1].copy(), sym)
    with pytest.raises(kvx.InvalidArgumentError, match="input_sym: expected a contiguous"):
        codec.encode_streams(cdf, np.zeros((2, 5, 6), np.uint8)[:, :, ::2])
    streams, lengths = codec.encode_streams(cdf, sym)
    with pytest.raises(kvx.InvalidArgumentError, match=r"lengths: expected shape \(2, 3\)"):
        codec.decode_fast_new(cdf, streams, lengths[:1].copy(), sym.copy())
    with pytest.raises(kvx.InvalidArgumentError, match="output: expected cdf channels = 3"):
        codec.decode_fast_new(cdf, streams, lengths, np.zeros((2, 5, 4), np.uint8))
    with pytest.raises(kvx.InvalidArgumentError, match="lengths_prefsum: expected int32 or int64"):
        codec.decode_fast_prefsum(
            cdf, np.zeros(4, np.uint8), np.zeros((2, 3), np.float32), sym.copy()
        )
    with pytest.raises(kvx.InvalidArgumentError, match="bins: expected 2 entries"):
        codec.quantize(np.zeros((2, 5, 3), np.float32), [16])
    with pytest.raises(kvx.InvalidArgumentError, match="scales: expected shape"):
        codec.dequantize(sym, np.zeros((2, 4), np.float32), [16, 16])
