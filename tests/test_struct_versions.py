"""Versioned structs: a caller built against an older (smaller) kvx.h passes a smaller
struct_size; the library reads only those bytes and takes the fields past them as zero. Output
structs get only the bytes their struct_size declares."""

import kvx
import numpy as np
from kvx._native import ffi, last_error, lib

L, NB, BS, H, D, T = 2, 3, 4, 1, 8, 4


def _transfer_call():
    cache = np.arange(L * 2 * NB * BS * H * D, dtype=np.float32).reshape(L, 2, NB, BS, H, D)
    dense = np.zeros((2, L, T, H * D), dtype=np.float32)
    slots = np.array([0, 5, 7, 11], dtype=np.int64)
    bases = ffi.new("void *[]", [ffi.cast("void *", cache[l].ctypes.data) for l in range(L)])
    paged = ffi.new(
        "kvx_paged_desc *",
        dict(
            struct_size=ffi.sizeof("kvx_paged_desc"),
            dtype=lib.KVX_DTYPE_FLOAT32,
            num_layers=L,
            num_kv=2,
            num_heads=H,
            head_size=D,
            num_bases=L,
            bases=bases,
            block_size=BS,
            num_blocks=NB,
            kv_stride=NB * BS * H * D,
            block_stride=BS * H * D,
            token_stride=H * D,
            head_stride=D,
        ),
    )
    desc = ffi.new(
        "kvx_dense_desc *",
        dict(
            struct_size=ffi.sizeof("kvx_dense_desc"),
            dtype=lib.KVX_DTYPE_FLOAT32,
            num_layers=L,
            num_kv=2,
            num_heads=H,
            head_size=D,
            num_tokens=T,
            base=ffi.cast("void *", dense.ctypes.data),
            kv_stride=L * T * H * D,
            layer_stride=T * H * D,
            token_stride=H * D,
            head_stride=D,
        ),
    )
    expected = cache.transpose(1, 0, 2, 3, 4, 5).reshape(2, L, NB * BS, H * D)[:, :, slots]
    return paged, desc, slots, dense, expected, (bases, cache)


def test_older_paged_desc_reads_missing_fields_as_zero():
    """head_stride is the last field: a struct that ends before it must not have it read. The
    bytes past the declared size hold a stride that would fail the call if it were read."""
    paged, desc, slots, dense, expected, _ = _transfer_call()
    paged.head_stride = -1
    paged.struct_size = ffi.offsetof("kvx_paged_desc", "head_stride")
    status = lib.kvx_transfer(
        paged, desc, ffi.cast("int64_t *", slots.ctypes.data), lib.KVX_PAGED_TO_DENSE, ffi.NULL
    )
    assert status == lib.KVX_OK, last_error()
    np.testing.assert_array_equal(dense, expected)


def test_newer_struct_is_refused():
    paged, desc, slots, dense, _, _ = _transfer_call()
    desc.struct_size = ffi.sizeof("kvx_dense_desc") + 8
    status = lib.kvx_transfer(
        paged, desc, ffi.cast("int64_t *", slots.ctypes.data), lib.KVX_PAGED_TO_DENSE, ffi.NULL
    )
    assert status == lib.KVX_ERR_INVALID_ARGUMENT
    assert last_error().startswith("dense->struct_size: expected sizeof(kvx_dense_desc) (")
    assert not dense.any()


def test_older_codec_info_gets_only_its_bytes():
    kv = np.random.default_rng(0).standard_normal((2, 2, 8, 16)).astype(np.float32)
    blob = kvx.codec.encode(kv, key_bins=16, value_bins=16, chunk_tokens=4)
    info = ffi.new("kvx_codec_info *")
    ffi.memmove(info, b"\xab" * ffi.sizeof("kvx_codec_info"), ffi.sizeof("kvx_codec_info"))
    declared = ffi.offsetof("kvx_codec_info", "num_tokens")
    info.struct_size = declared
    src = ffi.from_buffer(blob)
    assert lib.kvx_codec_inspect(src, len(blob), info, ffi.NULL, 0) == lib.KVX_OK, last_error()
    raw = bytes(ffi.buffer(info))
    assert info.struct_size == declared and info.num_layers == 2 and info.head_size == 16
    assert raw[declared:] == b"\xab" * (len(raw) - declared)
