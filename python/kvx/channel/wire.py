"""The bytes of a transfer: a fixed 256-byte header before each payload, the payload in
segments each followed by a 16-byte trailer, and a 512-byte reply from the receiver
(docs/channel.md gives them byte by byte).

Everything is little-endian. Header, trailer and reply each carry a CRC-32 (zlib's) of their own
bytes; each trailer also carries the CRC-32 of its segment, so the receiver can check every byte
before it writes any of them into a paged cache. The checksums come after the bytes they cover
so that a sender can put a segment on the wire while it still gathers and checksums the next.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import WireFormatError

VERSION = 2
HEADER_MAGIC = b"KVXT"
REPLY_MAGIC = b"KVXR"
HEADER_SIZE = 256
TRAILER_SIZE = 16
REPLY_SIZE = 512
MIN_SEGMENT = 4096  # smaller segments only multiply the trailers
MAX_SEGMENT = (1 << 32) - 1  # the header's field is 32 bits
MAX_REQUEST_ID = 188  # bytes of UTF-8
MAX_MESSAGE = 304  # bytes of UTF-8 in a reply

FLAG_COMPRESSED = 1  # the payload is a kvx.codec container, not raw elements
FLAG_END = 2  # no payload: the sender closes the channel
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_END

TRAILER_ABANDONED = 1  # the sender could not produce this segment: the request fails

# Reply statuses.
LANDED = 0  # the request is in the receiver's paged cache
FAILED = 1  # the receiver refused or could not land it; the message says why
GOODBYE = 2  # answer to FLAG_END: the receiver stops reading

# magic, version, header size, flags, dtype, itemsize, layers, kv, tokens, heads, head size,
# raw bytes, payload bytes, segment bytes, request id length, reserved, request id
_HEADER = struct.Struct("<4sHHIIIIIIIIQQIHH188s")
_TRAILER = struct.Struct("<III")  # segment index, flags, segment CRC-32
_REPLY = struct.Struct("<4sHHIHH188s304s")
assert _HEADER.size == HEADER_SIZE - 4 and _REPLY.size == REPLY_SIZE - 4
assert _TRAILER.size == TRAILER_SIZE - 4


@dataclass(frozen=True)
class Header:
    """What a transfer carries, independent of either side's paged layout.

    The raw payload is ``[num_layers, num_kv, num_tokens, num_heads, head_size]`` elements of
    ``itemsize`` bytes (kvx dtype code ``dtype``), row-major; a compressed one is a
    ``kvx.codec`` container of the same elements.
    """

    request_id: str
    dtype: int
    itemsize: int
    num_layers: int
    num_kv: int
    num_tokens: int
    num_heads: int
    head_size: int
    payload_bytes: int
    segment_bytes: int
    flags: int = 0

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``[layers, kv, tokens, heads, head_size]``."""
        return (self.num_layers, self.num_kv, self.num_tokens, self.num_heads, self.head_size)

    @property
    def raw_bytes(self) -> int:
        n = self.itemsize
        for size in self.shape:
            n *= size
        return n

    @property
    def num_segments(self) -> int:
        return -(-self.payload_bytes // self.segment_bytes)

    def segment(self, index: int) -> tuple[int, int]:
        """Payload bytes ``[start, end)`` of segment ``index``: every segment but the last has
        ``segment_bytes``."""
        start = index * self.segment_bytes
        return start, min(start + self.segment_bytes, self.payload_bytes)


def request_id_bytes(request_id: str) -> bytes:
    """The request id as it travels; raises ValueError when it cannot."""
    if not isinstance(request_id, str) or not request_id:
        raise ValueError(f"request_id: expected a non-empty str, got {request_id!r}")
    data = request_id.encode("utf-8")
    if len(data) > MAX_REQUEST_ID:
        raise ValueError(
            f"request_id: at most {MAX_REQUEST_ID} bytes of UTF-8, got {len(data)} ({request_id!r})"
        )
    return data


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def pack_header(h: Header) -> bytes:
    """The 256 header bytes of ``h``."""
    rid = request_id_bytes(h.request_id)
    body = _HEADER.pack(
        HEADER_MAGIC, VERSION, HEADER_SIZE, h.flags, h.dtype, h.itemsize,
        h.num_layers, h.num_kv, h.num_tokens, h.num_heads, h.head_size,
        h.raw_bytes, h.payload_bytes, h.segment_bytes, len(rid), 0, rid,
    )  # fmt: skip
    return _with_crc(body)


def end_header() -> bytes:
    """The header that tells the receiver the sender is done (no payload follows)."""
    return _with_crc(_HEADER.pack(HEADER_MAGIC, VERSION, HEADER_SIZE, FLAG_END, *([0] * 12), b""))


def _check_frame(data: bytes, size: int, magic: bytes, what: str) -> bytes:
    """The body of a header or reply, after checking its size, magic, version and CRC."""
    if len(data) != size:
        raise WireFormatError(f"{what}: expected {size} bytes, got {len(data)}")
    if data[:4] != magic:
        raise WireFormatError(f"{what}: not a kvx channel {what} (magic {bytes(data[:4])!r})")
    version, declared = struct.unpack_from("<HH", data, 4)
    if version != VERSION:
        raise WireFormatError(
            f"{what}: wire format version {version}, this kvx speaks version {VERSION}"
        )
    if declared != size:
        raise WireFormatError(f"{what}: declares {declared} bytes, version {VERSION} has {size}")
    body, (crc,) = data[:-4], struct.unpack_from("<I", data, size - 4)
    if zlib.crc32(body) != crc:
        raise WireFormatError(f"{what}: CRC-32 mismatch (damaged in transit)")
    return bytes(body)


def _request_id(raw: bytes, length: int, what: str) -> str:
    if length > MAX_REQUEST_ID or any(raw[length:]):
        raise WireFormatError(f"{what}: bad request id field (length {length})")
    try:
        return raw[:length].decode("utf-8")
    except UnicodeDecodeError:
        raise WireFormatError(f"{what}: request id is not UTF-8") from None


def parse_header(data: bytes) -> Header:
    """Checks and decodes 256 header bytes; raises :class:`WireFormatError` naming the field."""
    body = _check_frame(data, HEADER_SIZE, HEADER_MAGIC, "header")
    fields = _HEADER.unpack(body)
    flags, dtype, itemsize, layers, kv, tokens, heads, head_size = fields[3:11]
    raw_bytes, payload_bytes, segment_bytes, id_len, reserved, rid = fields[11:]
    if flags & ~_KNOWN_FLAGS or reserved:
        raise WireFormatError(f"header: unknown flags {flags:#x} or reserved bits {reserved:#x}")
    request_id = _request_id(rid, id_len, "header")
    h = Header(request_id, dtype, itemsize, layers, kv, tokens, heads, head_size,
               payload_bytes, segment_bytes, flags)  # fmt: skip
    if flags & FLAG_END:
        return h
    if not request_id:
        raise WireFormatError("header: empty request id")
    if (
        itemsize not in (1, 2, 4, 8)
        or kv not in (1, 2)
        or min(layers, tokens, heads, head_size) < 1
    ):
        raise WireFormatError(
            f"header: impossible shape [layers, kv, tokens, heads, head_size] = {list(h.shape)}, "
            f"itemsize {itemsize}",
            request_id,
        )
    if raw_bytes != h.raw_bytes:
        raise WireFormatError(
            f"header: raw size {raw_bytes} disagrees with its shape ({h.raw_bytes})", request_id
        )
    if not h.compressed and payload_bytes != raw_bytes:
        raise WireFormatError(
            f"header: a raw payload of {payload_bytes} bytes for {raw_bytes} bytes of KV",
            request_id,
        )
    if payload_bytes < 1 or segment_bytes < MIN_SEGMENT:
        raise WireFormatError(
            f"header: {payload_bytes} payload bytes in segments of {segment_bytes} bytes (at "
            f"least {MIN_SEGMENT})",
            request_id,
        )
    return h


@dataclass(frozen=True)
class Trailer:
    """What follows each segment of a payload."""

    index: int
    crc: int  # of the segment's bytes
    abandoned: bool = False


def pack_trailer(t: Trailer) -> bytes:
    """The 16 trailer bytes of ``t``."""
    flags = TRAILER_ABANDONED if t.abandoned else 0
    return _with_crc(_TRAILER.pack(t.index, flags, t.crc))


def parse_trailer(data: bytes, index: int, request_id: str) -> Trailer:
    """Checks and decodes the 16 bytes that must be segment ``index``'s trailer."""
    if len(data) != TRAILER_SIZE:
        raise WireFormatError(
            f"trailer: expected {TRAILER_SIZE} bytes, got {len(data)}", request_id
        )
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, TRAILER_SIZE - 4)[0]:
        raise WireFormatError(
            f"trailer of segment {index}: CRC-32 mismatch (damaged in transit)", request_id
        )
    got, flags, crc = _TRAILER.unpack_from(data)
    if got != index or flags & ~TRAILER_ABANDONED:
        raise WireFormatError(
            f"trailer of segment {index}: says segment {got}, flags {flags:#x}", request_id
        )
    return Trailer(index, crc, bool(flags & TRAILER_ABANDONED))


def pack_reply(request_id: str, status: int, message: str = "") -> bytes:
    """The 512 reply bytes; a long message is cut to what fits."""
    rid = request_id.encode("utf-8")[:MAX_REQUEST_ID]
    msg = message.encode("utf-8")[:MAX_MESSAGE].decode("utf-8", "ignore").encode("utf-8")
    body = _REPLY.pack(REPLY_MAGIC, VERSION, REPLY_SIZE, status, len(rid), len(msg), rid, msg)
    return _with_crc(body)


@dataclass(frozen=True)
class Reply:
    request_id: str
    status: int
    message: str


def parse_reply(data: bytes) -> Reply:
    """Checks and decodes 512 reply bytes."""
    body = _check_frame(data, REPLY_SIZE, REPLY_MAGIC, "reply")
    _, _, _, status, id_len, msg_len, rid, msg = _REPLY.unpack(body)
    if status not in (LANDED, FAILED, GOODBYE) or msg_len > MAX_MESSAGE:
        raise WireFormatError(f"reply: bad status {status} or message length {msg_len}")
    message = msg[:msg_len].decode("utf-8", "replace")
    return Reply(_request_id(rid, id_len, "reply"), status, message)
