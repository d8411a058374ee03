"""The range coder on whole groups of 16 streams, which the AVX2 build codes one stream per vector
lane (the scalar loops code them on a CPU without AVX2, with KVX_CPU_ISA=baseline, and narrower
groups), against the Python reference coder: pending-bit runs on both sides of what a lane
holds, the widest renormalisations, 256 bins, tight capacities and damaged streams. Most channel
counts are 16 * k + r, so that a case also has a narrow group."""

from __future__ import annotations

import re

import kvx
import numpy as np
import pytest
from kvx import codec
from kvx import reference_codec as ref

# Symbol 2 holds the middle half of the range (one pending bit each); symbols 0 and 4 hold
# 1/65536 of it (the most bits one symbol can shift out: 18), 1 and 3 the rest.
PENDING_TABLE = np.array([0, 1, 16384, 49152, 65535, 65535], np.uint16)


def _reference_streams(cdf: np.ndarray, symbols: np.ndarray) -> list[bytes]:
    layers, _, channels = symbols.shape
    return [
        ref.encode_stream(cdf[l, c], symbols[l, :, c])
        for l in range(layers)
        for c in range(channels)
    ]


def _kvx_streams(cdf: np.ndarray, symbols: np.ndarray) -> list[bytes]:
    streams, lengths = codec.encode_streams(cdf, symbols)
    streams, lengths = np.asarray(streams), np.asarray(lengths)
    layers, channels = lengths.shape
    return [
        streams[l, c, : lengths[l, c]].tobytes() for l in range(layers) for c in range(channels)
    ]


def _check_round_trip(cdf: np.ndarray, symbols: np.ndarray) -> None:
    expected = _reference_streams(cdf, symbols)
    got = _kvx_streams(cdf, symbols)
    bad = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not bad, f"streams {bad[:5]} differ from the reference coder"
    streams, lengths = codec.encode_streams(cdf, symbols)
    decoded = np.zeros_like(symbols)
    codec.decode_fast_new(cdf, streams, lengths, decoded)
    np.testing.assert_array_equal(decoded, symbols)


def test_pending_runs_around_a_lanes_capacity() -> None:
    """Channel c repeats runs of c middle symbols closed by an edge symbol, most often one of the
    rarest: runs of 0 .. 36 pending bits then up to 18 more shifted-out bits, so streams cross
    what a lane holds (32 bits at once) and come back, at different tokens in each lane."""
    layers, tokens, channels = 2, 400, 37
    symbols = np.full((layers, tokens, channels), 2, np.uint8)
    rng = np.random.default_rng(5)
    for l in range(layers):
        for c in range(channels):
            closing = np.arange(c + l, tokens, c + 1)
            symbols[l, closing, c] = rng.choice(
                np.array([0, 4, 0, 4, 1, 3], np.uint8), closing.size
            )
    cdf = np.tile(PENDING_TABLE, (layers, channels, 1))
    _check_round_trip(cdf, symbols)


def test_widest_renormalisations_and_256_bins() -> None:
    """256 bins whose first and last symbols hold 1/65536 of the range each: coding them shifts
    the range by the most bits a symbol can (18), between runs of ordinary symbols."""
    layers, tokens, channels = 2, 300, 19
    inner = np.linspace(1, 65535, 256).astype(np.int64)[:-1]  # entries 1 .. 255: 1 ... 65279
    table = np.concatenate([[0], inner[:-1], [65535], [65535]]).astype(np.uint16)
    assert np.all(np.diff(table[:-1].astype(np.int64)) > 0) and table[1] == 1
    cdf = np.tile(table, (layers, channels, 1))
    rng = np.random.default_rng(6)
    symbols = rng.integers(0, 256, (layers, tokens, channels)).astype(np.uint8)
    extremes = rng.random((layers, tokens, channels)) < 0.4
    symbols[extremes] = rng.choice(np.array([0, 255], np.uint8), int(extremes.sum()))
    _check_round_trip(cdf, symbols)


@pytest.mark.parametrize("short", [1, 2, 5, 11])
def test_tight_capacity_names_a_stream_and_writes_nothing_past_the_slots(short: int) -> None:
    """A few bytes short for the longest stream, the last one (short of its final flush, or of
    whole words before it): the call fails naming a stream that does not fit and the bytes it
    needs, leaves the lengths alone and writes nothing past the last slot."""
    layers, tokens, channels = 2, 120, 32  # the last stream in a whole group
    rng = np.random.default_rng(7)
    symbols = rng.integers(6, 10, (layers, tokens, channels)).astype(np.uint8)
    cdf = np.asarray(codec.calculate_cdf(symbols, 16)).view(np.uint16).copy()
    # The last stream: symbols its table makes rarest, so it needs the most bytes.
    symbols[-1, :, -1] = rng.choice(np.array([0, 15], np.uint8), tokens)
    needed = np.array([len(s) for s in _reference_streams(cdf, symbols)])
    assert needed.argmax() == needed.size - 1
    capacity = int(needed.max()) - short
    memory = np.full(layers * channels * capacity + 64, 0xA5, np.uint8)
    streams = memory[: layers * channels * capacity].reshape(layers, channels, capacity)
    lengths = np.full((layers, channels), -7, np.int32)
    with pytest.raises(kvx.BufferTooSmallError) as error:
        codec.encode_fast_new(cdf, symbols, streams, lengths)
    found = re.search(r"stream (\d+) .* needs (\d+) bytes, got (\d+)", str(error.value))
    assert found, str(error.value)
    stream, size, got = map(int, found.groups())
    assert needed[stream] > capacity and size == needed[stream] and got == capacity
    assert np.all(lengths == -7)
    assert np.all(memory[streams.size :] == 0xA5), "written past the last slot"


def test_damaged_streams_decode_as_the_reference_does() -> None:
    """Random bytes of random lengths (some empty, some shorter than a word): the decoder reads
    bytes past each end as zero and gives the reference decoder's symbols."""
    layers, tokens, channels, capacity = 2, 90, 34, 24
    rng = np.random.default_rng(8)
    symbols = rng.integers(0, 32, (layers, tokens, channels)).astype(np.uint8)
    cdf = np.asarray(codec.calculate_cdf(symbols, 32)).view(np.uint16)
    data = rng.integers(0, 256, (layers, channels, capacity)).astype(np.uint8)
    lengths = rng.integers(0, capacity + 1, (layers, channels)).astype(np.int32)
    lengths[0, :4] = [0, 1, 2, 3]
    decoded = np.zeros((layers, tokens, channels), np.uint8)
    codec.decode_fast_new(cdf, data, lengths, decoded)
    for l in range(layers):
        for c in range(channels):
            stream = data[l, c, : lengths[l, c]].tobytes()
            expected = ref.decode_stream(cdf[l, c], stream, tokens)
            np.testing.assert_array_equal(decoded[l, :, c], expected, err_msg=f"stream {l}, {c}")
