"""The container (docs/codec-container.md): layout as documented, and hostile input. Truncation
at every byte boundary, bit flips in every field, and forged blobs whose checksums are valid all
give kvx.CorruptInputError naming the field, never a crash or a wrong-shaped result."""

from __future__ import annotations

import struct
import zlib

import kvx
import numpy as np
import pytest
from kvx import codec
from kvx import reference_codec as ref


@pytest.fixture(scope="module")
def kv() -> np.ndarray:
    rng = np.random.default_rng(11)
    return (rng.standard_normal((2, 2, 11, 6)) * 3).astype(np.float32)


@pytest.fixture(scope="module")
def blob(kv) -> bytes:
    return codec.encode(kv, key_bins=[16, 8], value_bins=[8, 6], chunk_tokens=4)


def _decode_fails(data: bytes, field: str | None = None) -> str:
    with pytest.raises(kvx.CorruptInputError) as err:
        codec.decode(data, as_numpy=True)
    message = str(err.value)
    if field is not None:
        assert field in message, message
    return message


def _fix_crcs(data: bytearray, original: bytes) -> bytearray:
    """Recomputes every checksum where the original blob's layout puts them."""
    info = ref.parse_container(original)
    hdr = ref.HEADER_SIZE + 2 * len(info["bins"])
    data[hdr : hdr + 4] = struct.pack("<I", zlib.crc32(bytes(data[:hdr])))
    for c in info["chunks"]:
        data[c["end"] : c["end"] + 4] = struct.pack(
            "<I", zlib.crc32(bytes(data[c["start"] : c["end"]]))
        )
    return data


def test_layout_matches_the_documentation(kv, blob) -> None:
    info = ref.parse_container(blob)
    assert info["magic"] == b"KVXC" and info["version"] == 1 and info["header_size"] == 60
    assert (
        info["dtype"],
        info["num_kv"],
        info["num_layers"],
        info["num_heads"],
        info["head_size"],
    ) == (1, 2, 2, 1, 6)
    assert (info["num_bins"], info["num_tokens"], info["chunk_tokens"], info["num_chunks"]) == (
        16,
        11,
        4,
        3,
    )
    assert info["bins"] == [16, 8, 8, 6] and info["method"] == 0 and info["reserved"] == 0
    assert info["header_crc_ok"] and all(c["crc_ok"] for c in info["chunks"])
    assert info["size"] == len(blob)
    assert [c["tokens"] for c in info["chunks"]] == [4, 4, 3] and [
        c["index"] for c in info["chunks"]
    ] == [0, 1, 2]
    # every chunk decodes with the reference coder from the documented pieces
    out = np.empty((4, 11, 6), dtype=np.float32)
    for k, c in enumerate(info["chunks"]):
        t = c["tokens"]
        ends = np.cumsum(c["lengths"])
        streams = [c["payload"][e - n : e] for e, n in zip(ends, c["lengths"], strict=True)]
        assert sum(c["lengths"]) == len(c["payload"])
        for row in range(4):
            for ch in range(6):
                i = row * 6 + ch
                assert sum(c["counts"][i]) == t
                table = ref.cdf_from_counts(c["counts"][i], info["num_bins"], t)
                syms = ref.decode_stream(table, streams[i], t)
                maxv = np.float32(info["bins"][row] // 2 - 1)
                vals = ((syms.astype(np.float32) - maxv) / maxv).astype(np.float32) * c["scales"][
                    row
                ]
                out[row, 4 * k : 4 * k + t, ch] = vals
    np.testing.assert_array_equal(out.reshape(kv.shape), codec.decode(blob, as_numpy=True))


def test_header_truncated_at_every_byte(blob) -> None:
    header_end = ref.HEADER_SIZE + 2 * 4 + 4
    for n in range(header_end + ref.CHUNK_HEADER_SIZE + 1):
        message = _decode_fails(blob[:n])
        assert "truncat" in message or "src_size" in message or "header." in message, (n, message)


def test_truncated_anywhere(blob) -> None:
    for n in range(len(blob)):
        _decode_fails(blob[:n])
    _decode_fails(blob + b"\0", "src_size: 1 bytes follow the last chunk")


@pytest.mark.parametrize("name,offset,size", ref.HEADER_FIELDS)
def test_bit_flips_in_each_header_field(blob, name, offset, size) -> None:
    for byte in range(offset, offset + size):
        for bit in (0, 3, 7):
            data = bytearray(blob)
            data[byte] ^= 1 << bit
            _decode_fails(bytes(data))  # the header CRC catches every flip
            fixed = bytes(_fix_crcs(data, blob)) if name not in ("magic",) else bytes(data)
            # with a recomputed checksum the field's own check must fire, naming the field
            # (or a later consistency check when the flipped value is still in range)
            message = _decode_fails(fixed) if not _still_valid(fixed) else None
            if message is not None and name in (
                "magic",
                "version",
                "header_size",
                "dtype",
                "reserved",
            ):
                assert f"header.{name}" in message, message


def _still_valid(data: bytes) -> bool:
    try:
        codec.decode(data, as_numpy=True)
    except kvx.CorruptInputError:
        return False
    except kvx.InvalidArgumentError:
        return False
    return True


def test_every_single_bit_flip_is_detected(blob) -> None:
    for byte in range(len(blob)):
        data = bytearray(blob)
        data[byte] ^= 1 << (byte % 8)
        _decode_fails(bytes(data))


@pytest.mark.parametrize("field", [f[0] for f in ref.CHUNK_FIELDS])
def test_forged_chunk_fields_with_valid_crc(blob, field) -> None:
    info = ref.parse_container(blob)
    chunk = info["chunks"][1]
    offset, size = {f[0]: (f[1], f[2]) for f in ref.CHUNK_FIELDS}[field]
    for delta in (1, -1, 1 << 20, 1 << 40):
        data = bytearray(blob)
        pos = chunk["start"] + offset
        old = int.from_bytes(data[pos : pos + size], "little")
        value = (old + delta) % (1 << (8 * size))
        if value == old:
            continue
        data[pos : pos + size] = value.to_bytes(size, "little")
        message = _decode_fails(bytes(_fix_crcs(data, blob)))
        assert "chunk" in message, message


def test_forged_counts_and_scales(blob) -> None:
    info = ref.parse_container(blob)
    chunk = info["chunks"][0]
    rows = 4
    counts_at = chunk["start"] + ref.CHUNK_HEADER_SIZE + 4 * rows * chunk["tokens"]
    first, n = blob[counts_at], blob[counts_at + 1]
    assert first < 0x80 and 0 < n < 0x80  # one-byte varints: first symbol, run length
    data = bytearray(blob)
    data[counts_at + 2] = (data[counts_at + 2] + 1) & 0x7F  # stream 0's counts no longer sum to 4
    _decode_fails(
        bytes(_fix_crcs(data, blob)), "chunk[0].counts[0]: expected symbol counts summing to 4"
    )
    data = bytearray(blob)
    data[counts_at] = 0x7F  # a run starting past the row's last symbol (bins 16: 0..14)
    _decode_fails(
        bytes(_fix_crcs(data, blob)), "chunk[0].counts[0]: expected a run of symbols within 0..14"
    )
    for bad in (-1.0, float("inf"), float("nan")):
        data = bytearray(blob)
        scale_at = chunk["start"] + ref.CHUNK_HEADER_SIZE + 4 * 5
        data[scale_at : scale_at + 4] = struct.pack("<f", bad)
        _decode_fails(
            bytes(_fix_crcs(data, blob)), "chunk[0].scales[5]: expected a finite value >= 0"
        )


def test_forged_lengths(blob) -> None:
    info = ref.parse_container(blob)
    chunk = info["chunks"][2]
    at = chunk["start"] + ref.CHUNK_HEADER_SIZE + 4 * 4 * chunk["tokens"] + chunk["counts_size"]
    data = bytearray(blob)
    data[at] = 0x7F  # first stream now claims 127 bytes
    message = _decode_fails(bytes(_fix_crcs(data, blob)))
    assert "chunk[2].lengths" in message or "chunk[2].payload_size" in message, message


def test_forged_payload_bytes_decode_to_something_valid(kv, blob) -> None:
    """Garbage streams under a valid checksum are not detectable; they must still decode
    safely to a finite tensor of the right shape."""
    info = ref.parse_container(blob)
    rng = np.random.default_rng(5)
    for chunk in info["chunks"]:
        data = bytearray(blob)
        start = chunk["end"] - len(chunk["payload"])
        data[start : chunk["end"]] = rng.integers(
            0, 256, size=len(chunk["payload"]), dtype=np.uint8
        ).tobytes()
        out = codec.decode(bytes(_fix_crcs(data, blob)), as_numpy=True)
        assert out.shape == kv.shape and np.isfinite(out).all()


def _header(**overrides: int) -> bytes:
    """A container header (with bins and a valid header CRC) for one row of the given shape."""
    fields = dict(
        magic=b"KVXC",
        version=1,
        header_size=60,
        dtype=1,
        num_kv=1,
        num_layers=1,
        num_heads=1,
        head_size=1,
        num_bins=16,
        num_tokens=0,
        chunk_tokens=65535,
        num_chunks=0,
        method=0,
        reserved=0,
    )
    fields.update(overrides)
    fields["num_chunks"] = -(-fields["num_tokens"] // fields["chunk_tokens"])
    head = bytearray(60)
    for name, off, size in ref.HEADER_FIELDS:
        v = fields[name]
        head[off : off + size] = v if isinstance(v, bytes) else v.to_bytes(size, "little")
    head += struct.pack("<H", 16) * (fields["num_kv"] * fields["num_layers"])
    return bytes(head + struct.pack("<I", zlib.crc32(bytes(head))))


def test_huge_declared_sizes_fail_before_allocating() -> None:
    """A 100-byte blob claiming 2^29 tokens of 2^31 channels must fail on size, not allocate."""
    head = _header(num_kv=2, num_heads=65536, head_size=32767, num_tokens=2**29)
    _decode_fails(head + b"\0" * 40, "src_size: the header declares 536870912 tokens")
    with pytest.raises(kvx.CorruptInputError):
        codec.inspect(head)


def test_decode_bomb_fails_on_the_chunk_table_before_allocating() -> None:
    """A 6 MB blob whose header (valid CRC, least size satisfied) declares 6 chunks of 65535
    tokens of 2^17 float32 channels, 206 GB decoded: the chunk table is checked before the
    output is allocated, so the caller gets CorruptInputError, not torch's or numpy's
    out-of-memory error."""
    head = _header(num_heads=1024, head_size=128, num_tokens=6 * 65535)
    blob = head + bytes(6_000_000)
    for as_numpy in (True, False):
        with pytest.raises(
            kvx.CorruptInputError, match=r"chunk\[0\]\.tokens: expected 65535, got 0"
        ):
            codec.decode(blob, as_numpy=as_numpy, max_ratio=None)
    with pytest.raises(kvx.CorruptInputError, match=r"chunk\[0\]\.tokens"):
        codec.inspect(blob)


def _forged_chunk(tokens: int, streams: int, index: int = 0) -> bytes:
    """A chunk whose frame is well formed (sizes add up) but whose contents are zeros."""
    sizes = (3 * streams, streams, streams)
    frame = struct.pack("<IIQQQ", index, tokens, *sizes) + bytes(4 * tokens + sum(sizes))
    return frame + struct.pack("<I", 0)


def test_declared_size_is_bounded_relative_to_the_blob() -> None:
    """A forged blob with a well-formed chunk table declaring ~1900x its own size is refused by
    decode's default max_ratio before anything is allocated; max_ratio=None lets decode allocate
    and the chunk checksum then fails."""
    head = _header(dtype=2, num_heads=32, head_size=128, num_tokens=65535)
    blob = head + _forged_chunk(65535, 4096)
    meta = codec.inspect(blob)  # the frame is well formed
    assert meta.num_tokens == 65535
    for as_numpy in (True, False):
        with pytest.raises(kvx.CorruptInputError, match="more than max_ratio = 1024"):
            codec.decode(blob, as_numpy=as_numpy)
    with pytest.raises(kvx.CorruptInputError, match=r"chunk\[0\]\.crc32"):
        codec.decode(blob, as_numpy=True, max_ratio=None)
    with pytest.raises(
        kvx.CorruptInputError, match=r"chunk\[0\]\.crc32"
    ):  # out given: no allocation, no ratio
        codec.decode(blob, out=np.empty(meta.shape, np.float16))


def test_default_ratio_admits_all_zero_data() -> None:
    """All-zero float32 tokens in the default 256-token chunks expand ~150x: within the default."""
    kv = np.zeros((2, 2, 600, 512), np.float32)
    blob = codec.encode(kv)
    assert kv.nbytes > 100 * len(blob)
    assert (codec.decode(blob, as_numpy=True) == 0).all()


def test_inspect_checks_the_chunk_table(blob) -> None:
    for cut in (1, 5, 40):
        with pytest.raises(kvx.CorruptInputError, match=r"chunk|src_size"):
            codec.inspect(blob[:-cut])
    with pytest.raises(kvx.CorruptInputError, match="bytes follow the last chunk"):
        codec.inspect(blob + b"\0")


def test_inspect_reports_header(blob) -> None:
    meta = codec.inspect(blob)
    assert meta.shape == (2, 2, 11, 6) and meta.key_bins == [16, 8] and meta.value_bins == [8, 6]
    assert meta.num_chunks == 3 and meta.dtype == "float32" and meta.format_version == 1


@pytest.mark.parametrize("data", [b"", b"KVXC", b"\0" * 200, bytes(range(256)) * 3])
def test_arbitrary_bytes(data) -> None:
    _decode_fails(data)


def test_random_bytes_with_valid_header(blob) -> None:
    rng = np.random.default_rng(9)
    hdr = ref.HEADER_SIZE + 2 * 4 + 4
    for _ in range(200):
        tail = rng.integers(0, 256, size=int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
        _decode_fails(blob[:hdr] + tail)


def test_max_bytes_caps_the_decoded_size(blob) -> None:
    with pytest.raises(
        kvx.InvalidArgumentError, match="max_bytes: the container decodes to 1056 bytes"
    ):
        codec.decode(blob, max_bytes=1000)
    assert codec.decode(blob, as_numpy=True, max_bytes=1056).nbytes == 1056
