"""Empty inputs: zero tokens, or streams of zero bytes, with NULL for the arrays that then hold
nothing (the C API allows NULL for an array of zero elements). Each call must succeed and give
exactly what the same call gives with real pointers to empty buffers. Under clang's
UndefinedBehaviorSanitizer (tests/test_sanitizers.py) these also prove that the library forms
no pointer from NULL (NULL + 0 is undefined in C)."""

from __future__ import annotations

from typing import Any

import kvx
import numpy as np
import pytest
from kvx._native import ffi, lib

L, C, BINS = 2, 70, 16  # more than one 64-channel group: a group past the first offsets NULL
LP = BINS + 1


def ptr(a: np.ndarray, ctype: str) -> Any:
    return ffi.cast(ctype, a.__array_interface__["data"][0])


def _ok(rc: int) -> None:
    assert rc == lib.KVX_OK, kvx._native.last_error()


@pytest.fixture
def cdf() -> np.ndarray:
    rng = np.random.default_rng(5)
    symbols = rng.integers(0, BINS, size=(L, 40, C), dtype=np.uint8)
    out = np.empty((L, C, LP), dtype=np.uint16)
    _ok(
        lib.kvx_codec_calculate_cdf(
            ptr(symbols, "uint8_t *"), L, 40, C, BINS, ptr(out, "uint16_t *"), ffi.NULL
        )
    )
    return out


def _calculate_cdf(symbols: Any) -> np.ndarray:
    out = np.full((L, C, LP), 0xEEEE, dtype=np.uint16)
    _ok(lib.kvx_codec_calculate_cdf(symbols, L, 0, C, BINS, ptr(out, "uint16_t *"), ffi.NULL))
    return out


def test_calculate_cdf_of_zero_tokens_with_null_symbols() -> None:
    nothing = np.zeros(1, dtype=np.uint8)
    got = _calculate_cdf(ffi.NULL)
    np.testing.assert_array_equal(got, _calculate_cdf(ptr(nothing, "uint8_t *")))
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(LP, dtype=np.uint16), got.shape))


def _encode(cdf: np.ndarray, symbols: Any) -> tuple[np.ndarray, np.ndarray]:
    cap = 8
    streams = np.full((L, C, cap), 0xEE, dtype=np.uint8)
    lengths = np.full((L, C), -1, dtype=np.int32)
    _ok(
        lib.kvx_codec_encode(
            ptr(cdf, "uint16_t *"),
            LP,
            symbols,
            L,
            0,
            C,
            ptr(streams, "uint8_t *"),
            cap,
            ptr(lengths, "int32_t *"),
            ffi.NULL,
        )
    )
    return streams, lengths


def test_encode_of_zero_tokens_with_null_symbols(cdf) -> None:
    nothing = np.zeros(1, dtype=np.uint8)
    streams, lengths = _encode(cdf, ffi.NULL)
    expected_streams, expected_lengths = _encode(cdf, ptr(nothing, "uint8_t *"))
    np.testing.assert_array_equal(lengths, expected_lengths)
    np.testing.assert_array_equal(streams, expected_streams)
    assert bool((lengths > 0).all())  # the final flush still writes


def _decode(cdf: np.ndarray, streams: Any) -> np.ndarray:
    """Streams of zero bytes each (capacity 0): every symbol decodes from zero bits."""
    lengths = np.zeros((L, C), dtype=np.int32)
    symbols = np.full((L, 3, C), 0xEE, dtype=np.uint8)
    _ok(
        lib.kvx_codec_decode(
            ptr(cdf, "uint16_t *"),
            LP,
            streams,
            0,
            ptr(lengths, "int32_t *"),
            L,
            3,
            C,
            ptr(symbols, "uint8_t *"),
            ffi.NULL,
        )
    )
    return symbols


def test_decode_of_empty_streams_with_null_streams(cdf) -> None:
    nothing = np.zeros(1, dtype=np.uint8)
    got = _decode(cdf, ffi.NULL)
    np.testing.assert_array_equal(got, _decode(cdf, ptr(nothing, "uint8_t *")))
    assert not bool((got == 0xEE).any())


def _decode_prefsum(cdf: np.ndarray, data: Any) -> np.ndarray:
    ends = np.zeros(L * C, dtype=np.int64)
    symbols = np.full((L, 3, C), 0xEE, dtype=np.uint8)
    _ok(
        lib.kvx_codec_decode_prefsum(
            ptr(cdf, "uint16_t *"),
            LP,
            data,
            0,
            ptr(ends, "int64_t *"),
            L,
            3,
            C,
            ptr(symbols, "uint8_t *"),
            ffi.NULL,
        )
    )
    return symbols


def test_decode_prefsum_of_zero_bytes_with_null_bytes(cdf) -> None:
    nothing = np.zeros(1, dtype=np.uint8)
    got = _decode_prefsum(cdf, ffi.NULL)
    np.testing.assert_array_equal(got, _decode_prefsum(cdf, ptr(nothing, "uint8_t *")))
    np.testing.assert_array_equal(got, _decode(cdf, ffi.NULL))


def _kv_desc(base: Any) -> Any:
    d = ffi.new("kvx_dense_desc *")
    d.struct_size = ffi.sizeof("kvx_dense_desc")
    d.dtype = lib.KVX_DTYPE_FLOAT32
    d.num_kv, d.num_layers, d.num_tokens, d.num_heads, d.head_size = 2, L, 0, 1, C
    d.base = base
    d.kv_stride, d.layer_stride, d.token_stride, d.head_stride = L * C, C, L * C, C
    return d


def _compress(base: Any) -> bytes:
    bins = ffi.new("int32_t[]", [BINS] * L)
    params = ffi.new("kvx_codec_params *")
    params.struct_size = ffi.sizeof("kvx_codec_params")
    params.key_bins = params.value_bins = bins
    params.chunk_tokens = 4
    buf = np.full(4096, 0xEE, dtype=np.uint8)
    size = ffi.new("int64_t *", -1)
    _ok(
        lib.kvx_codec_compress(_kv_desc(base), params, ptr(buf, "void *"), buf.size, size, ffi.NULL)
    )
    return buf[: size[0]].tobytes()


def test_compress_and_decompress_zero_tokens_with_null_bases() -> None:
    nothing = np.zeros(1, dtype=np.float32)
    blob = _compress(ffi.NULL)
    assert blob == _compress(ptr(nothing, "void *"))
    data = np.frombuffer(blob, dtype=np.uint8)
    _ok(lib.kvx_codec_decompress(ptr(data, "void *"), data.size, _kv_desc(ffi.NULL), ffi.NULL))


def test_compress_into_a_null_buffer_of_zero_bytes_reports_the_size() -> None:
    """dst = NULL with dst_capacity 0: a size query, answered with the size needed."""
    rng = np.random.default_rng(9)
    kv = rng.standard_normal((2, L, 5, C)).astype(np.float32)
    bins = ffi.new("int32_t[]", [BINS] * L)
    params = ffi.new("kvx_codec_params *")
    params.struct_size = ffi.sizeof("kvx_codec_params")
    params.key_bins = params.value_bins = bins
    params.chunk_tokens = 4
    desc = _kv_desc(ptr(kv, "void *"))
    desc.num_tokens = 5
    size = ffi.new("int64_t *", -1)
    assert (
        lib.kvx_codec_compress(desc, params, ffi.NULL, 0, size, ffi.NULL)
        == lib.KVX_ERR_BUFFER_TOO_SMALL
    )
    needed = int(kvx._native.last_error().split("expected >= ")[1].split()[0])
    buf = np.zeros(needed, dtype=np.uint8)
    _ok(lib.kvx_codec_compress(desc, params, ptr(buf, "void *"), needed, size, ffi.NULL))
    assert size[0] == needed


def test_an_empty_container_from_a_null_pointer_is_rejected_as_corrupt() -> None:
    info = ffi.new("kvx_codec_info *")
    info.struct_size = ffi.sizeof("kvx_codec_info")
    assert lib.kvx_codec_inspect(ffi.NULL, 0, info, ffi.NULL, 0) == lib.KVX_ERR_CORRUPT_INPUT
    assert (
        lib.kvx_codec_decompress(ffi.NULL, 0, _kv_desc(ffi.NULL), ffi.NULL)
        == lib.KVX_ERR_CORRUPT_INPUT
    )
