"""Plain numpy reference of the CacheGen codec: the test oracle for ``kvx.codec``.

Slow (pure Python range coder) and written for clarity, not speed. Semantics are LMCache's:

- quantization per (layer, token): ``scale = max|x|`` over channels (in the KV dtype),
  ``MAX = bins // 2 - 1``, ``symbol = round_half_even(x * float32(MAX / scale) + MAX)`` with the
  multiply and the add rounded separately in float32; a zero scale gives the symbol ``MAX``;
- CDF per (layer, channel): ``cdf[i] = (65535 - num_bins) * cum[i] // total + i`` where ``cum[i]``
  counts the symbols below ``i``; ``num_bins + 1`` entries;
- 32-bit range coder over that CDF (implicit top 65536), MSB-first bits, LMCache's final flush,
  bytes past a stream's end read as zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MASK32 = 0xFFFFFFFF


def default_bins(num_layers: int) -> tuple[list[int], list[int]]:
    """LMCache's bin schedule (``CacheGenConfig``): 32 bins for the first 10 K layers and the
    first 2 V layers, 16 after; models with fewer than 10 layers use 32 everywhere."""
    if num_layers < 10:
        return [32] * num_layers, [32] * num_layers
    return [32 if i < 10 else 16 for i in range(num_layers)], [
        32 if i < 2 else 16 for i in range(num_layers)
    ]


def abs_max(x: np.ndarray) -> np.ndarray:
    """``max|x|`` over the last axis, in x's dtype, keepdims (``[rows, T, 1]``)."""
    return np.max(np.abs(x), axis=-1, keepdims=True)


def quantize(x: np.ndarray, bins: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """x: ``[rows, T, C]`` float16/float32 (bf16 given as float32 holding bf16 values).
    Returns symbols uint8 ``[rows, T, C]`` and scales float32 ``[rows, T]``."""
    rows = x.shape[0]
    scales = abs_max(x).astype(np.float32)[..., 0]
    xf = x.astype(np.float32)
    symbols = np.empty(x.shape, dtype=np.uint8)
    for r in range(rows):
        m = np.float32(bins[r] // 2 - 1)
        s = scales[r][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(s > 0, m / np.where(s > 0, s, np.float32(1)), np.float32(0)).astype(
                np.float32
            )
        y = (xf[r] * factor).astype(np.float32)
        y = (y + m).astype(np.float32)
        symbols[r] = np.rint(y).astype(np.uint8)
    return symbols, scales


def dequantize(symbols: np.ndarray, scales: np.ndarray, bins: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`quantize`, float32 ``[rows, T, C]``: ``(s - MAX) / MAX * scale``."""
    out = np.empty(symbols.shape, dtype=np.float32)
    for r in range(symbols.shape[0]):
        m = np.float32(bins[r] // 2 - 1)
        table = ((np.arange(256, dtype=np.float32) - m) / m).astype(np.float32)
        out[r] = table[symbols[r]] * scales[r][:, None]
    return out


def calculate_cdf(symbols: np.ndarray, num_bins: int) -> np.ndarray:
    """symbols ``[L, T, C]`` (values < num_bins) -> uint16 ``[L, C, num_bins + 1]``."""
    L, _T, C = symbols.shape
    cdf = np.zeros((L, C, num_bins + 1), dtype=np.uint16)
    top = 0xFFFF - num_bins
    for layer in range(L):
        for c in range(C):
            hist = np.bincount(symbols[layer, :, c].astype(np.int64), minlength=num_bins)[:num_bins]
            cum = np.concatenate([[0], np.cumsum(hist)]).astype(np.int64)
            total = max(int(cum[-1]), 1)
            cdf[layer, c] = (top * cum) // total + np.arange(num_bins + 1)
    return cdf


def encode_stream(cdf_row: np.ndarray, syms: np.ndarray) -> bytes:
    """One (layer, channel) stream: cdf_row uint16 ``[Lp]``, syms ``[T]`` -> bytes."""
    cdf = [int(v) for v in cdf_row]
    max_symbol = len(cdf) - 2
    low, high, pending = 0, MASK32, 0
    bits: list[int] = []

    def emit(bit: int) -> None:
        nonlocal pending
        bits.append(bit)
        bits.extend([1 - bit] * pending)
        pending = 0

    for s in syms:
        s = int(s)
        span = high - low + 1
        c_low = cdf[s]
        c_high = 0x10000 if s == max_symbol else cdf[s + 1]
        high = (low - 1 + ((span * c_high) >> 16)) & MASK32
        low = (low + ((span * c_low) >> 16)) & MASK32
        while True:
            if high < 0x80000000:
                emit(0)
            elif low >= 0x80000000:
                emit(1)
            elif low >= 0x40000000 and high < 0xC0000000:
                pending += 1
                low, high = (low << 1) & 0x7FFFFFFF, ((high << 1) | 0x80000001) & MASK32
                continue
            else:
                break
            low, high = (low << 1) & MASK32, ((high << 1) | 1) & MASK32
    pending += 1
    emit(0 if low < 0x40000000 else 1)
    bits.extend([0] * (-len(bits) % 8))
    return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def decode_stream(cdf_row: np.ndarray, data: bytes, num_tokens: int) -> np.ndarray:
    """Inverse of :func:`encode_stream`; bytes past the end of ``data`` read as zero."""
    cdf = [int(v) for v in cdf_row]
    max_symbol = len(cdf) - 2
    padded = bytes(data) + b"\0" * 4

    def byte(i: int) -> int:
        return padded[i] if i < len(data) else 0

    value = (byte(0) << 24) | (byte(1) << 16) | (byte(2) << 8) | byte(3)
    bitpos = 32
    low, high = 0, MASK32
    out = np.zeros(num_tokens, dtype=np.uint8)

    def next_bit() -> int:
        nonlocal bitpos
        b = (byte(bitpos >> 3) >> (7 - (bitpos & 7))) & 1
        bitpos += 1
        return b

    for i in range(num_tokens):
        span = high - low + 1
        count = (((value - low) & MASK32) + 1) * 0x10000 - 1
        count //= span
        s = 0
        while s < max_symbol and cdf[s + 1] <= count:
            s += 1
        out[i] = s
        if i == num_tokens - 1:
            break
        c_low = cdf[s]
        c_high = 0x10000 if s == max_symbol else cdf[s + 1]
        high = (low - 1 + ((span * c_high) >> 16)) & MASK32
        low = (low + ((span * c_low) >> 16)) & MASK32
        while True:
            if low >= 0x80000000 or high < 0x80000000:
                low, high = (low << 1) & MASK32, ((high << 1) | 1) & MASK32
                value = ((value << 1) | next_bit()) & MASK32
            elif low >= 0x40000000 and high < 0xC0000000:
                low, high = (low << 1) & 0x7FFFFFFF, ((high << 1) | 0x80000001) & MASK32
                value = (((value - 0x40000000) << 1) | next_bit()) & MASK32
            else:
                break
    return out


def encode(cdf: np.ndarray, symbols: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """cdf ``[L, C, Lp]``, symbols ``[L, T, C]`` -> streams (layer-major) and lengths ``[L, C]``."""
    L, _T, C = symbols.shape
    streams = [
        encode_stream(cdf[layer, c], symbols[layer, :, c]) for layer in range(L) for c in range(C)
    ]
    return streams, np.array([len(s) for s in streams], dtype=np.int32).reshape(L, C)


def decode(cdf: np.ndarray, streams: Sequence[bytes], num_tokens: int) -> np.ndarray:
    """Inverse of :func:`encode`: symbols uint8 ``[L, T, C]``."""
    L, C = cdf.shape[:2]
    out = np.zeros((L, num_tokens, C), dtype=np.uint8)
    for layer in range(L):
        for c in range(C):
            out[layer, :, c] = decode_stream(cdf[layer, c], streams[layer * C + c], num_tokens)
    return out


# ---------------------------------------------------------------- container
# The byte layout is docs/codec-container.md.

HEADER_FIELDS = (  # name, offset, size: the fixed 60-byte header, little-endian
    ("magic", 0, 4),
    ("version", 4, 2),
    ("header_size", 6, 2),
    ("dtype", 8, 4),
    ("num_kv", 12, 4),
    ("num_layers", 16, 4),
    ("num_heads", 20, 4),
    ("head_size", 24, 4),
    ("num_bins", 28, 4),
    ("num_tokens", 32, 8),
    ("chunk_tokens", 40, 4),
    ("num_chunks", 44, 4),
    ("method", 48, 4),  # 0 CacheGen, 1 rotated (kvx.reference_rotated)
    ("reserved", 52, 8),
)
CHUNK_FIELDS = (
    ("index", 0, 4),
    ("tokens", 4, 4),
    ("counts_size", 8, 8),
    ("lengths_size", 16, 8),
    ("payload_size", 24, 8),
)
HEADER_SIZE = 60
CHUNK_HEADER_SIZE = 32


def _varints(data: bytes, count: int) -> tuple[list[int], int]:
    out, pos = [], 0
    for _ in range(count):
        value = shift = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(value)
    return out, pos


def parse_container(blob: bytes) -> dict:
    """Parses a kvx codec container following docs/codec-container.md, independently of the C
    parser (trusting the input: for tests). Returns the header fields, ``bins``, ``header_crc``
    and ``chunks``: dicts with the chunk fields, ``start`` / ``end`` (byte range, CRC excluded),
    ``scales`` float32 ``[rows, tokens]`` (stored as bfloat16 by the rotated method),
    ``counts`` (per stream, the count of every symbol ``0 .. bins[row] - 2``, or None where
    the rotated method stored a model), ``models`` (per stream, ``(center, spread)`` of that
    Gaussian model, or None; see ``kvx.reference_rotated.model_cdf``), ``lengths``,
    ``payload`` bytes and ``crc``."""
    import zlib

    info: dict = {}
    for name, off, size in HEADER_FIELDS:
        raw = blob[off : off + size]
        info[name] = raw if name == "magic" else int.from_bytes(raw, "little")
    rows = info["num_kv"] * info["num_layers"]
    channels = info["num_heads"] * info["head_size"]
    pos = HEADER_SIZE
    info["bins"] = [
        int.from_bytes(blob[pos + 2 * i : pos + 2 * i + 2], "little") for i in range(rows)
    ]
    pos += 2 * rows
    info["header_crc"] = int.from_bytes(blob[pos : pos + 4], "little")
    info["header_crc_ok"] = info["header_crc"] == zlib.crc32(blob[:pos])
    pos += 4
    chunks = []
    for _ in range(info["num_chunks"]):
        chunk = {"start": pos}
        for name, off, size in CHUNK_FIELDS:
            chunk[name] = int.from_bytes(blob[pos + off : pos + off + size], "little")
        pos += CHUNK_HEADER_SIZE
        t = chunk["tokens"]
        size = 2 if info["method"] == 1 else 4  # the rotated method stores bfloat16 scales
        raw = np.frombuffer(blob[pos : pos + size * rows * t], dtype="<u2" if size == 2 else "<f4")
        if size == 2:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        chunk["scales"] = raw.reshape(rows, t)
        pos += size * rows * t
        counts_raw = blob[pos : pos + chunk["counts_size"]]
        pos += chunk["counts_size"]
        counts, models, k = [], [], 0
        for r in range(rows):
            for _c in range(channels):
                (head,), used = _varints(counts_raw[k:], 1)
                k += used
                if info["method"] == 1 and head & 1:  # the rotated method's Gaussian model
                    counts.append(None)
                    models.append((head >> 1, counts_raw[k]))
                    k += 1
                    continue
                first = head >> 1 if info["method"] == 1 else head
                (n,), used = _varints(counts_raw[k:], 1)
                k += used
                run, used = _varints(counts_raw[k:], n)
                k += used
                full = [0] * (info["bins"][r] - 1)
                full[first : first + n] = run
                counts.append(full)
                models.append(None)
        assert k == len(counts_raw)
        chunk["counts"] = counts
        chunk["models"] = models
        chunk["lengths"], used = _varints(blob[pos : pos + chunk["lengths_size"]], rows * channels)
        pos += chunk["lengths_size"]
        chunk["payload"] = blob[pos : pos + chunk["payload_size"]]
        pos += chunk["payload_size"]
        chunk["end"] = pos
        chunk["crc"] = int.from_bytes(blob[pos : pos + 4], "little")
        chunk["crc_ok"] = chunk["crc"] == zlib.crc32(blob[chunk["start"] : pos])
        pos += 4
        chunks.append(chunk)
    info["chunks"] = chunks
    info["size"] = pos
    return info


def cdf_from_counts(counts: Sequence[int], num_bins: int, tokens: int) -> np.ndarray:
    """The CDF table the container's counts stand for (same formula as :func:`calculate_cdf`)."""
    full = np.zeros(num_bins, dtype=np.int64)
    full[: len(counts)] = counts
    cum = np.concatenate([[0], np.cumsum(full)])
    return ((0xFFFF - num_bins) * cum // max(tokens, 1) + np.arange(num_bins + 1)).astype(np.uint16)
