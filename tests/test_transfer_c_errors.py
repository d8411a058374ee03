"""kvx_transfer called directly through the C ABI with each descriptor field out of range: the
status, the message (naming the field, the expected range and the value), and nothing written."""

import re

import numpy as np
import pytest
from kvx._native import ffi, last_error, lib
from misaligned import misaligned_copy

L, NB, BS, H, D, T = 2, 3, 4, 2, 5, 4


@pytest.fixture
def call():
    cache = np.arange(L * 2 * NB * BS * H * D, dtype=np.float32).reshape(L, 2, NB, BS, H, D)
    dense = np.full((2, L, T, H * D), -1.0, dtype=np.float32)
    slots = np.array([0, 5, -1, 11], dtype=np.int64)
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

    class Call:
        def run(
            self, slot_ptr=None, direction=lib.KVX_PAGED_TO_DENSE, stream=ffi.NULL, p=paged, d=desc
        ):
            before = dense.copy(), cache.copy()
            ptr = ffi.cast("int64_t *", slots.ctypes.data) if slot_ptr is None else slot_ptr
            status = lib.kvx_transfer(p, d, ptr, direction, stream)
            untouched = np.array_equal(before[0], dense) and np.array_equal(before[1], cache)
            return status, last_error(), untouched

    c = Call()
    c.paged, c.dense_desc, c.slots, c.bases = paged, desc, slots, bases
    c.dense, c.cache = dense, cache
    return c


def test_valid_call_succeeds(call):
    status, message, untouched = call.run()
    assert status == lib.KVX_OK and message == "" and not untouched


@pytest.mark.parametrize(
    "field,value,match",
    [
        (
            "struct_size",
            2,
            r"paged->struct_size: expected sizeof\(kvx_paged_desc\) \(\d+; .*\), got 2",
        ),
        (
            "struct_size",
            97,
            r"paged->struct_size: expected sizeof\(kvx_paged_desc\) \(\d+; .*\), got 97",
        ),
        ("reserved0", 5, r"paged->reserved0: expected 0, got 5"),
        ("dtype", 99, r"paged->dtype: expected a kvx_dtype, got 99"),
        ("num_layers", 0, r"paged->num_layers: expected 1\.\.\d+, got 0"),
        ("num_kv", 3, r"paged->num_kv: expected 1\.\.2, got 3"),
        ("num_heads", -1, r"paged->num_heads: expected 1\.\.\d+, got -1"),
        ("head_size", 0, r"paged->head_size: expected 1\.\.\d+, got 0"),
        ("block_size", 0, r"paged->block_size: expected 1\.\.\d+, got 0"),
        ("num_blocks", -2, r"paged->num_blocks: expected 0\.\.\d+, got -2"),
        (
            "num_bases",
            3,
            r"paged->num_bases: expected num_layers \(2\) or num_kv \* num_layers \(4\), got 3",
        ),
        ("block_stride", -40, r"paged->block_stride: expected a non-negative stride, got -40"),
        ("token_stride", 2**62, r"paged->token_stride: stride \d+ overflows 64-bit offsets"),
    ],
)
def test_paged_fields(call, field, value, match):
    setattr(call.paged, field, value)
    status, message, untouched = call.run()
    assert status == lib.KVX_ERR_INVALID_ARGUMENT and untouched
    assert re.search(match, message), message


@pytest.mark.parametrize(
    "field,value,match",
    [
        (
            "struct_size",
            0,
            r"dense->struct_size: expected sizeof\(kvx_dense_desc\) \(\d+; .*\), got 0",
        ),
        (
            "struct_size",
            1 << 20,
            r"dense->struct_size: expected sizeof\(kvx_dense_desc\) \(\d+; .*\), got 1048576",
        ),
        ("dtype", lib.KVX_DTYPE_FLOAT16, r"dense->dtype: expected 1 \(paged->dtype\), got 2"),
        ("num_layers", 3, r"dense->num_layers: expected 2 \(paged->num_layers\), got 3"),
        ("head_size", 4, r"dense->head_size: expected 5 \(paged->head_size\), got 4"),
        ("num_tokens", -1, r"dense->num_tokens: expected >= 0, got -1"),
        ("layer_stride", -1, r"dense->layer_stride: expected a non-negative stride, got -1"),
        ("head_stride", 2**62, r"dense: strides address more than 2\^63 bytes"),
        (
            "token_stride",
            2**62,
            r"dense->token_stride: stride \d+ overflows 64-bit offsets over 4 items",
        ),
    ],
)
def test_dense_fields(call, field, value, match):
    setattr(call.dense_desc, field, value)
    status, message, untouched = call.run()
    assert status == lib.KVX_ERR_INVALID_ARGUMENT and untouched
    assert re.search(match, message), message


def test_older_paged_desc_reads_missing_fields_as_zero(call):
    """A struct_size that ends before head_stride (a caller built against an older kvx.h) is read
    as far as it goes and head_stride as 0: the same copy as an explicit 0, although the bytes
    past the declared size hold a stride that would fail the call if they were read."""
    call.paged.head_stride = 0
    assert call.run()[0] == lib.KVX_OK
    explicit_zero = call.dense.copy()
    call.dense[...] = -1.0
    call.paged.head_stride = -1
    call.paged.struct_size = ffi.offsetof("kvx_paged_desc", "head_stride")
    status, message, _ = call.run()
    assert status == lib.KVX_OK, message
    np.testing.assert_array_equal(call.dense, explicit_zero)


def test_null_pointers(call):
    assert call.run(p=ffi.NULL)[:2] == (
        lib.KVX_ERR_INVALID_ARGUMENT,
        "paged: expected a kvx_paged_desc, got NULL",
    )
    assert call.run(d=ffi.NULL)[:2] == (
        lib.KVX_ERR_INVALID_ARGUMENT,
        "dense: expected a kvx_dense_desc, got NULL",
    )
    status, message, untouched = call.run(slot_ptr=ffi.NULL)
    assert (status, message, untouched) == (
        lib.KVX_ERR_INVALID_ARGUMENT,
        "slot_mapping: expected 4 int64 entries, got NULL",
        True,
    )
    call.bases[1] = ffi.NULL
    assert call.run()[:2] == (
        lib.KVX_ERR_INVALID_ARGUMENT,
        "paged->bases[1]: expected a pointer, got NULL",
    )
    call.paged.bases = ffi.NULL
    assert call.run()[:2] == (
        lib.KVX_ERR_INVALID_ARGUMENT,
        "paged->bases: expected 2 pointers, got NULL",
    )
    call.dense_desc.base = ffi.NULL
    call.paged.bases = call.bases


@pytest.mark.parametrize(
    "name,dtype,offset,alignment",
    [
        ("paged->bases[1]", lib.KVX_DTYPE_FLOAT32, 2, "4 bytes (float32)"),
        ("paged->bases[0]", lib.KVX_DTYPE_FLOAT16, 1, "2 bytes (float16)"),
        ("dense->base", lib.KVX_DTYPE_FLOAT32, 1, "4 bytes (float32)"),
        ("dense->base", lib.KVX_DTYPE_BFLOAT16, 3, "2 bytes (bfloat16)"),
        ("slot_mapping", lib.KVX_DTYPE_FLOAT32, 4, "8 bytes (int64)"),
    ],
)
@pytest.mark.parametrize("direction", [lib.KVX_PAGED_TO_DENSE, lib.KVX_DENSE_TO_PAGED])
def test_misaligned_pointers(call, name, dtype, offset, alignment, direction):
    """Refused before a backend is chosen (an unknown device type gets the same message),
    naming the argument; nothing written, the misaligned copy included."""
    call.paged.dtype = call.dense_desc.dtype = dtype
    slot_ptr = None
    if name.startswith("paged"):
        layer = int(name[-2])
        buf, address = misaligned_copy(call.cache[layer], offset)
        call.bases[layer] = ffi.cast("void *", address)
    elif name == "dense->base":
        buf, address = misaligned_copy(call.dense, offset)
        call.dense_desc.base = ffi.cast("void *", address)
    else:
        buf, address = misaligned_copy(call.slots, offset)
        slot_ptr = ffi.cast("int64_t *", address)
    before = buf.copy()
    want = f"{name}: expected an address aligned to {alignment}, got {address:#x}"
    unknown = ffi.new("kvx_stream *", {"device_type": 77})
    for stream in (ffi.NULL, unknown):
        status, message, untouched = call.run(slot_ptr, direction, stream)
        assert (status, message, untouched) == (lib.KVX_ERR_INVALID_ARGUMENT, want, True)
    np.testing.assert_array_equal(buf, before)


def test_one_byte_elements_need_no_alignment(call):
    """The same copy as bytes (uint8, strides and head_size in bytes), with the cache and the
    dense buffer at odd addresses: accepted, and byte-exact."""
    status, message, _ = call.run()
    assert status == lib.KVX_OK, message
    expected = call.dense.copy()
    call.dense[...] = -1.0
    copies = [misaligned_copy(call.cache[l], 1 + 2 * l) for l in range(L)]
    dense_buf, dense_address = misaligned_copy(call.dense, 3)
    for l, (_, address) in enumerate(copies):
        call.bases[l] = ffi.cast("void *", address)
    p, d = call.paged, call.dense_desc
    p.dtype = d.dtype = lib.KVX_DTYPE_UINT8
    p.head_size = d.head_size = 4 * D
    for desc, fields in (
        (p, ("kv_stride", "block_stride", "token_stride", "head_stride")),
        (d, ("kv_stride", "layer_stride", "token_stride", "head_stride")),
    ):
        for field in fields:
            setattr(desc, field, 4 * getattr(desc, field))
    d.base = ffi.cast("void *", dense_address)
    status, message, _ = call.run()
    assert status == lib.KVX_OK, message
    start = dense_address - dense_buf.ctypes.data
    got = dense_buf[start : start + expected.nbytes].view(np.float32).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_direction(call):
    status, message, untouched = call.run(direction=7)
    assert status == lib.KVX_ERR_INVALID_ARGUMENT and untouched
    assert message == "direction: expected KVX_PAGED_TO_DENSE (0) or KVX_DENSE_TO_PAGED (1), got 7"


@pytest.mark.parametrize("slot", [NB * BS, 2**62])
@pytest.mark.parametrize("direction", [lib.KVX_PAGED_TO_DENSE, lib.KVX_DENSE_TO_PAGED])
def test_slot_out_of_range(call, slot, direction):
    call.slots[3] = slot
    status, message, untouched = call.run(direction=direction)
    assert status == lib.KVX_ERR_INVALID_ARGUMENT and untouched
    assert message.startswith(
        f"slot_mapping[3]: slot {slot} is out of range; the paged cache holds 12 slots"
    )


def test_unknown_device_type(call):
    stream = ffi.new("kvx_stream *", {"device_type": 77})
    status, message, untouched = call.run(stream=stream)
    assert status == lib.KVX_ERR_NOT_AVAILABLE and untouched
    assert "no backend for device type 77" in message


def test_status_names_and_threads():
    assert ffi.string(lib.kvx_status_name(lib.KVX_ERR_CORRUPT_INPUT)) == b"KVX_ERR_CORRUPT_INPUT"
    assert ffi.string(lib.kvx_status_name(-1234)) == b"KVX_UNKNOWN_STATUS"
    assert lib.kvx_set_num_threads(-1) == lib.KVX_ERR_INVALID_ARGUMENT
    assert last_error() == "num_threads: expected 0 (default) to 256, got -1"
    assert lib.kvx_dtype_size(lib.KVX_DTYPE_BFLOAT16) == 2 and lib.kvx_dtype_size(0) == 0
