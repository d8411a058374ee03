"""The container's rotated method (docs/codec-container.md, method 1): bit for bit the numpy
reference (kvx.reference_rotated) in every dtype, the documented layout, its argument checks,
and hostile input (every bit flip caught, forged scales refused, forged streams decoding to
finite values)."""

from __future__ import annotations

import struct
import zlib

import kvx
import numpy as np
import pytest
from kvx import codec
from kvx import reference_codec as ref
from kvx import reference_rotated as rr
from test_codec_container import _decode_fails, _fix_crcs

torch = pytest.importorskip("torch")


def _kv(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """KV with per-channel scales and a few outlier channels, as real keys have."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn((1, shape[1], 1, *shape[3:]), generator=g))
    scale[..., :1] *= 20.0
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _expected(kv: torch.Tensor, info: codec.CodecInfo) -> np.ndarray:
    """What decode must return, from the reference: [rows, T, C] float32."""
    rows, tokens = info.num_kv * info.num_layers, info.num_tokens
    x = kv.float().reshape(rows, tokens, -1).numpy()
    bins = info.key_bins + info.value_bins
    back = rr.dequantize(*rr.quantize(x, info.head_size, bins), info.head_size, bins)
    if kv.dtype == torch.bfloat16:
        return rr.narrow_bf16(back)
    if kv.dtype == torch.float16:
        return rr.narrow_f16(back).astype(np.float32)
    return back


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk", [None, 3, 700])
def test_matches_the_reference_bit_for_bit(dtype: torch.dtype, chunk: int | None) -> None:
    kv = _kv((2, 3, 37, 2, 16), dtype)
    blob = codec.encode(kv, chunk_tokens=chunk, method="rotated")
    info = codec.inspect(blob)
    assert info.method == "rotated" and info.head_size == 16 and info.num_heads == 2
    got = codec.decode(blob).float().reshape(6, 37, 32).numpy()
    np.testing.assert_array_equal(got, _expected(kv, info))


def test_flat_input_split_into_heads_and_zero_tokens() -> None:
    kv = _kv((2, 2, 9, 32), torch.float32, seed=1)
    kv[:, :, 4] = 0.0  # an all-zero token: scale 0, every symbol MAX
    blob = codec.encode(kv, key_bins=[12, 64], value_bins=[6, 4], method="rotated", head_size=8)
    info = codec.inspect(blob)
    assert (info.num_heads, info.head_size, info.key_bins, info.value_bins) == (
        4,
        8,
        [12, 64],
        [6, 4],
    )
    out = codec.decode(blob)
    np.testing.assert_array_equal(out.reshape(4, 9, 32).numpy(), _expected(kv, info))
    assert not out[:, :, 4].any()
    empty = codec.encode(kv[:, :, :0], method="rotated", head_size=8)
    assert codec.decode(empty).shape == (2, 2, 0, 32)


def test_fewer_bits_than_cachegen_on_outlier_channels() -> None:
    """Not the quality claim (that is bench/codec_quality.py's, on real KV), only that the
    method does what it is for: with the same bins, the rotation spreads the outlier channels
    and the error drops."""
    kv = _kv((2, 4, 64, 4, 32), torch.float32, seed=2)
    bins = dict(key_bins=16, value_bins=16)
    rotated = codec.decode(codec.encode(kv, method="rotated", **bins)).numpy()
    plain = codec.decode(codec.encode(kv, **bins)).numpy().reshape(kv.shape)
    x = kv.numpy()
    assert np.linalg.norm(rotated - x.reshape(rotated.shape)) < 0.7 * np.linalg.norm(plain - x)


@pytest.mark.parametrize(
    "kwargs,text",
    [
        (dict(method="zip"), "method: expected one of ('cachegen', 'rotated'), got 'zip'"),
        (dict(method="rotated"), "kv->head_size: the rotated method expects a power of two"),
        (dict(method="rotated", head_size=5), "head_size: expected a divisor of the 24 channels"),
        (dict(method="rotated", head_size=0), "head_size: expected a positive int or None"),
    ],
)
def test_bad_arguments(kwargs: dict, text: str) -> None:
    kv = _kv((2, 1, 4, 24), torch.float32)  # 24 channels: no power-of-two head without a split
    with pytest.raises(kvx.InvalidArgumentError) as err:
        codec.encode(kv, **kwargs)
    assert text in str(err.value)


def test_values_beyond_the_method_range_are_refused() -> None:
    kv = torch.zeros((2, 1, 3, 16))
    kv[1, 0, 2, 5] = 3e38  # finite, but its transform could overflow float32
    with pytest.raises(kvx.InvalidArgumentError) as err:
        codec.encode(kv, method="rotated")
    assert "kv (plane 1, layer 0, token 2): the rotated method expects finite values" in str(
        err.value
    )
    kv[1, 0, 2, 5] = float("nan")
    with pytest.raises(kvx.InvalidArgumentError):
        codec.encode(kv, method="rotated")
    # A head of equal values just below the limit: its first coefficient is that value, and the
    # scale's rounding up to bfloat16 would pass the limit, which a reader refuses: refused.
    limit = np.float32(3.4028234663852886e38 / (2 * 16))
    kv[1, 0, 2] = float(np.nextafter(limit, np.float32(0)))
    with pytest.raises(kvx.InvalidArgumentError):
        codec.encode(kv, method="rotated")
    kv[1, 0, 2] = float(limit) / 2  # well inside: encodes, and decodes
    assert codec.decode(codec.encode(kv, method="rotated")).shape == kv.shape


# ---------------------------------------------------------------- the bytes


@pytest.fixture(scope="module")
def kv() -> torch.Tensor:
    return _kv((2, 2, 11, 2, 4), torch.float32, seed=3)


@pytest.fixture(scope="module")
def blob(kv) -> bytes:
    return codec.encode(kv, key_bins=[16, 8], value_bins=[8, 6], chunk_tokens=4, method="rotated")


def test_layout_matches_the_documentation(kv, blob) -> None:
    info = ref.parse_container(blob)
    assert info["method"] == 1 and (info["num_heads"], info["head_size"]) == (2, 4)
    assert all(c["crc_ok"] for c in info["chunks"]) and info["header_crc_ok"]
    # the scales are bfloat16, two bytes each: the reference's (max |coefficient|, rounded up)
    x = kv.reshape(4, 11, 8).numpy()
    _, scales = rr.quantize(x, 4, [16, 8, 8, 6])
    stored = np.concatenate([c["scales"] for c in info["chunks"]], axis=1)
    np.testing.assert_array_equal(stored, scales)
    first = info["chunks"][0]
    assert first["end"] - first["start"] == (
        ref.CHUNK_HEADER_SIZE
        + 2 * 4 * first["tokens"]
        + first["counts_size"]
        + first["lengths_size"]
        + first["payload_size"]
    )


def test_every_single_bit_flip_is_detected(blob) -> None:
    for byte in range(len(blob)):
        data = bytearray(blob)
        data[byte] ^= 1 << (byte % 8)
        _decode_fails(bytes(data))


def test_truncated_anywhere(blob) -> None:
    for n in range(len(blob)):
        _decode_fails(blob[:n])


def test_forged_scales_are_refused(blob) -> None:
    chunk = ref.parse_container(blob)["chunks"][0]
    at = chunk["start"] + ref.CHUNK_HEADER_SIZE + 2 * 3
    limit = np.float32(3.4028234663852886e38 / (2 * 4))
    for bad in (-1.0, float("inf"), float("nan"), float(limit) * 2):
        data = bytearray(blob)
        bits = np.array([bad], np.float32).view(np.uint32)[0] >> 16
        data[at : at + 2] = struct.pack("<H", int(bits))
        _decode_fails(bytes(_fix_crcs(data, blob)), "chunk[0].scales[3]: expected a finite value")


def test_forged_streams_decode_to_finite_values(kv, blob) -> None:
    """Garbage streams under valid checksums, with the largest scales a reader accepts: the
    inverse transform saturates instead of overflowing."""
    info = ref.parse_container(blob)
    rng = np.random.default_rng(5)
    largest = np.array([3.4028234663852886e38 / 8], np.float32).view(np.uint32)[0] >> 16
    while (np.array([largest << 16], np.uint32).view(np.float32)[0]) > 3.4028234663852886e38 / 8:
        largest -= 1
    data = bytearray(blob)
    for chunk in info["chunks"]:
        start = chunk["end"] - len(chunk["payload"])
        data[start : chunk["end"]] = rng.integers(0, 256, len(chunk["payload"]), np.uint8).tobytes()
        at = chunk["start"] + ref.CHUNK_HEADER_SIZE
        data[at : at + 2 * 4 * chunk["tokens"]] = struct.pack("<H", int(largest)) * (
            4 * chunk["tokens"]
        )
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        forged = bytearray(_fix_crcs(bytearray(data), blob))
        forged[8:12] = struct.pack(
            "<I", {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}[dtype]
        )
        hdr = ref.HEADER_SIZE + 2 * 4
        forged[hdr : hdr + 4] = struct.pack("<I", zlib.crc32(bytes(forged[:hdr])))
        out = codec.decode(bytes(forged))
        assert out.shape == (2, 2, 11, 8) and bool(torch.isfinite(out.float()).all())


# ---------------------------------------------------------------- stream tables


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _stream_cdfs(info: dict, chunk: dict) -> list[np.ndarray]:
    """Each stream's CDF table, from its documented counts or model (reference code only)."""
    channels = info["num_heads"] * info["head_size"]
    tables = []
    for i, (counts, model) in enumerate(zip(chunk["counts"], chunk["models"], strict=True)):
        bins = info["bins"][i // channels]
        if model is None:
            tables.append(ref.cdf_from_counts(counts, info["num_bins"], chunk["tokens"]))
        else:
            tables.append(rr.model_cdf(*model, 2 * (bins // 2 - 1), info["num_bins"]))
    return tables


def _mixed_kv() -> torch.Tensor:
    """Gaussian-like keys and values, except one coefficient of the first key head, which
    takes two values only (+-a): a Gaussian describes it badly, its counts well."""
    kv = _kv((2, 2, 160, 2, 16), torch.float32, seed=7) * 0.01
    hadamard = rr.hadamard_heads(np.eye(16, dtype=np.float32), 16)
    signs = torch.from_numpy(np.where(np.arange(160) % 3 == 0, 1.0, -1.0).astype(np.float32))
    kv[0, 0, :, 0] += signs[:, None] * torch.from_numpy(hadamard[5]) * 3.0
    return kv


def test_every_stream_decodes_from_its_documented_table() -> None:
    """The writer picks counts or a Gaussian model per stream; either, rebuilt by the reference
    from the documented bytes, range-decodes the stream to the reference's symbols."""
    kv = _mixed_kv()
    blob = codec.encode(kv, key_bins=12, value_bins=6, chunk_tokens=100, method="rotated")
    info = ref.parse_container(blob)
    x = kv.reshape(4, 160, 32).numpy()
    symbols, _ = rr.quantize(x, 16, info["bins"])
    kinds = set()
    for k, chunk in enumerate(info["chunks"]):
        ends = np.cumsum(chunk["lengths"])
        tables = _stream_cdfs(info, chunk)
        for i, (end, n) in enumerate(zip(ends, chunk["lengths"], strict=True)):
            row, c = divmod(i, 32)
            got = ref.decode_stream(tables[i], chunk["payload"][end - n : end], chunk["tokens"])
            want = symbols[row, 100 * k : 100 * k + chunk["tokens"], c]
            np.testing.assert_array_equal(got, want, err_msg=f"chunk {k} stream {i}")
            kinds.add("model" if chunk["models"][i] else "counts")
    assert kinds == {"model", "counts"}
    # the two-valued coefficient keeps its counts in the 100-token chunk: +-MAX only
    first = info["chunks"][0]
    assert first["models"][5] is None and np.count_nonzero(first["counts"][5]) == 2


def _chunk_with_models(info: dict, chunk: dict, symbols: np.ndarray, rng) -> bytes:
    """``chunk`` rewritten with a random Gaussian model for every stream and its symbols coded
    under it by the reference coder: a chunk the writer would not make, that readers must take."""
    channels = info["num_heads"] * info["head_size"]
    t = chunk["tokens"]
    tables, streams = bytearray(), []
    for i in range(len(chunk["lengths"])):
        top = 2 * (info["bins"][i // channels] // 2 - 1)
        center, spread = int(rng.integers(0, 16 * top + 1)), int(rng.integers(0, 256))
        tables += _varint(2 * center + 1) + bytes([spread])
        cdf = rr.model_cdf(center, spread, top, info["num_bins"])
        streams.append(ref.encode_stream(cdf, symbols[i // channels, :, i % channels]))
    lengths = b"".join(_varint(len(s)) for s in streams)
    payload = b"".join(streams)
    scales = (np.asarray(chunk["scales"], np.float32).view(np.uint32) >> 16).astype("<u2")
    body = struct.pack("<IIQQQ", chunk["index"], t, len(tables), len(lengths), len(payload))
    body += scales.tobytes() + bytes(tables) + lengths + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_any_model_decodes() -> None:
    """Models over the whole range of centres and spreads (the narrowest, whose table gives the
    centre almost everything, and the widest) decode like the reference's tables."""
    kv = _kv((2, 2, 50, 2, 16), torch.float32, seed=8)
    blob = codec.encode(kv, key_bins=[12, 40], value_bins=[6, 256], method="rotated")
    info = ref.parse_container(blob)
    symbols, _ = rr.quantize(kv.reshape(4, 50, 32).numpy(), 16, info["bins"])
    rng = np.random.default_rng(9)
    start = info["chunks"][0]["start"]
    for _ in range(4):
        forged = blob[:start] + _chunk_with_models(info, info["chunks"][0], symbols, rng)
        got = codec.decode(forged).float().reshape(4, 50, 32).numpy()
        np.testing.assert_array_equal(got, _expected(kv, codec.inspect(blob)))


def test_model_table_is_the_documented_one() -> None:
    assert rr.MODEL_PHI[0] == 1 << 30 and rr.MODEL_PHI[512] == 1 << 31
    assert zlib.crc32(struct.pack("<513I", *rr.MODEL_PHI)) == 0xE5CE1EC8
    assert rr.SIGMA_FRACTIONS[0] == 65536 and rr.SIGMA_FRACTIONS[15] == 125515


def test_model_centre_beyond_the_row_is_refused() -> None:
    kv = _kv((2, 1, 30, 16), torch.float32, seed=4)
    blob = codec.encode(kv, key_bins=12, value_bins=6, method="rotated")
    info = ref.parse_container(blob)
    chunk = info["chunks"][0]
    symbols, _ = rr.quantize(kv.reshape(2, 30, 16).numpy(), 16, info["bins"])
    forged = bytearray(_chunk_with_models(info, chunk, symbols, np.random.default_rng(1)))
    # the first stream's head varint: centre 16 * 10 + 1 in a 12-bin row (top symbol 10)
    at = ref.CHUNK_HEADER_SIZE + 2 * 2 * 30
    head = _varint(2 * (16 * 10 + 1) + 1)
    assert len(head) == 2 and forged[at] >= 0x80 > forged[at + 1]  # the stored head: 2 bytes
    forged[at : at + 2] = head
    forged[-4:] = struct.pack("<I", zlib.crc32(bytes(forged[:-4])))
    _decode_fails(blob[: chunk["start"]] + bytes(forged), "expected a model centre within 0..160")
