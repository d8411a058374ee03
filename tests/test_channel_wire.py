"""kvx.channel's wire format (python/kvx/channel/wire.py, docs/channel.md): headers, segment
trailers and replies round-trip, and every damaged, foreign or other-version byte string is
refused with a WireFormatError that says what is wrong."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from kvx.channel import WireFormatError, wire


def _header(**changes: object) -> wire.Header:
    fields = dict(
        request_id="cmpl-42", dtype=3, itemsize=2, num_layers=32, num_kv=2, num_tokens=4096,
        num_heads=8, head_size=128, payload_bytes=32 * 2 * 4096 * 8 * 128 * 2,
        segment_bytes=16 << 20, flags=0,
    )  # fmt: skip
    fields.update(changes)
    return wire.Header(**fields)  # type: ignore[arg-type]


def _recrc(data: bytes) -> bytes:
    """``data`` with its trailing CRC-32 made right again (to reach the checks behind it)."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def test_header_round_trips_and_has_its_documented_layout() -> None:
    h = _header()
    data = wire.pack_header(h)
    assert len(data) == wire.HEADER_SIZE == 256
    assert wire.parse_header(data) == h
    assert data[:4] == b"KVXT" and struct.unpack_from("<HH", data, 4) == (2, 256)
    assert struct.unpack_from("<5I", data, 20) == (32, 2, 4096, 8, 128)
    assert struct.unpack_from("<QQI", data, 40) == (h.raw_bytes, h.payload_bytes, 16 << 20)
    assert data[64 : 64 + 7] == b"cmpl-42" and not any(data[71:252])
    assert struct.unpack_from("<I", data, 252)[0] == zlib.crc32(data[:252])


def test_segments_cut_the_payload_in_order() -> None:
    h = _header()
    assert h.num_segments == 32 and h.segment(0) == (0, 16 << 20)
    assert h.segment(31) == (31 << 24, 32 << 24)
    odd = _header(flags=wire.FLAG_COMPRESSED, payload_bytes=10000, segment_bytes=4096)
    assert odd.num_segments == 3 and odd.segment(2) == (8192, 10000)


def test_trailer_round_trips_and_has_its_documented_layout() -> None:
    data = wire.pack_trailer(wire.Trailer(7, 0xCAFEF00D))
    assert len(data) == wire.TRAILER_SIZE == 16
    assert struct.unpack("<IIII", data) == (7, 0, 0xCAFEF00D, zlib.crc32(data[:12]))
    assert wire.parse_trailer(data, 7, "r") == wire.Trailer(7, 0xCAFEF00D)
    abandoned = wire.pack_trailer(wire.Trailer(3, 0, abandoned=True))
    assert struct.unpack_from("<I", abandoned, 4)[0] == 1
    assert wire.parse_trailer(abandoned, 3, "r").abandoned


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (wire.pack_trailer(wire.Trailer(8, 1)), "says segment 8"),  # out of order
        (_recrc(struct.pack("<IIII", 7, 2, 1, 0)), "flags 0x2"),
        (bytes(16), "CRC-32 mismatch"),
        (wire.pack_trailer(wire.Trailer(7, 1))[:15], "expected 16 bytes"),
    ],
)
def test_each_bad_trailer_is_refused_naming_segment_and_request(data: bytes, words: str) -> None:
    with pytest.raises(WireFormatError, match=words) as caught:
        wire.parse_trailer(data, 7, "cmpl-42")
    assert caught.value.request_id == "cmpl-42"


def test_compressed_header_and_end_marker() -> None:
    h = _header(flags=wire.FLAG_COMPRESSED, payload_bytes=1000)
    assert wire.parse_header(wire.pack_header(h)).compressed
    end = wire.parse_header(wire.end_header())
    assert end.flags == wire.FLAG_END


def test_reply_round_trips() -> None:
    data = wire.pack_reply("cmpl-42", wire.FAILED, "payload CRC-32 mismatch")
    assert len(data) == wire.REPLY_SIZE == 512
    reply = wire.parse_reply(data)
    assert (reply.request_id, reply.status, reply.message) == (
        "cmpl-42",
        wire.FAILED,
        "payload CRC-32 mismatch",
    )
    long = wire.parse_reply(wire.pack_reply("r", wire.FAILED, "é" * 400))
    assert long.message == "é" * (wire.MAX_MESSAGE // 2)


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (0, b"KVXC", "magic"),
        (4, struct.pack("<H", 1), "version 1, this kvx speaks version 2"),
        (4, struct.pack("<H", 3), "version 3"),
        (6, struct.pack("<H", 512), "declares 512 bytes"),
        (8, struct.pack("<I", 4), "unknown flags"),
        (24, struct.pack("<I", 3), "impossible shape"),
        (40, struct.pack("<Q", 7), "raw size"),
        (48, struct.pack("<Q", 7), "raw payload"),
        (56, struct.pack("<I", 4095), "segments of 4095 bytes"),
        (60, struct.pack("<H", 200), "request id"),
        (64, b"\xff\xfe", "UTF-8"),
    ],
)
def test_each_bad_field_is_named(offset: int, value: bytes, words: str) -> None:
    data = bytearray(wire.pack_header(_header()))
    data[offset : offset + len(value)] = value
    with pytest.raises(WireFormatError, match=words):
        wire.parse_header(_recrc(bytes(data)))


def test_every_single_bit_flip_is_caught() -> None:
    data = wire.pack_header(_header())
    for bit in range(8 * len(data)):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireFormatError):
            wire.parse_header(bytes(damaged))


def test_garbage_and_short_input_are_refused() -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 255, 256, 257):
        for _ in range(50):
            with pytest.raises(WireFormatError):
                wire.parse_header(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    with pytest.raises(WireFormatError, match="reply"):
        wire.parse_reply(wire.pack_header(_header()))


def test_request_ids_that_cannot_travel() -> None:
    for bad in ("", "x" * 189, 42):
        with pytest.raises(ValueError, match="request_id"):
            wire.request_id_bytes(bad)  # type: ignore[arg-type]
    assert wire.request_id_bytes("é" * 94) == "é".encode() * 94
