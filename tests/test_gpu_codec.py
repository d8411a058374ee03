"""The CacheGen codec on a CUDA/HIP GPU, where it differs from the other backends: data errors
found on the device and reported by kvx.synchronize, and ordering on a side stream. LMCache's
golden vectors and random data through every codec function and the container, byte for byte
with the CPU backend, are in tests/test_conformance.py. Runs on a GPU or in host execution
(tests/gpu_target.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import conformance_cases as cc  # noqa: E402
import kvx  # noqa: E402
import numpy as np  # noqa: E402
from kvx import codec  # noqa: E402

# ---------------------------------------------------------------- errors found on the device


def test_non_finite_token_is_skipped_and_reported(gpu):
    x = torch.randn(2, 5, 16, device=gpu.device)
    x[1, 3, 7] = float("nan")
    with gpu.running():
        symbols, _scales = codec.quantize(x, [16, 16])
        with pytest.raises(kvx.InvalidArgumentError, match=r"row 1 token 3"):
            kvx.synchronize(symbols)
        kvx.synchronize(symbols)  # the error was consumed
    want, _ = codec.quantize(gpu.back(x).nan_to_num(0.0), [16, 16])
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3] = False
    assert torch.equal(gpu.back(symbols)[mask], want[mask])


def test_encode_overflow_and_bad_tables_are_reported(gpu):
    symbols = torch.randint(0, 16, (1, 200, 4), dtype=torch.uint8, device=gpu.device)
    out = torch.full((1, 4, 8), 0xAB, dtype=torch.uint8, device=gpu.device)
    lengths = torch.zeros((1, 4), dtype=torch.int32, device=gpu.device)
    with gpu.running():
        cdf = codec.calculate_cdf(symbols, 16)
        codec.encode_fast_new(cdf, symbols, out, lengths)
        with pytest.raises(kvx.BufferTooSmallError, match="stream_capacity"):
            kvx.synchronize(out)
        assert (gpu.back(lengths) == 8).all()  # truncated at the capacity, nothing past it
        bad = cdf.clone()
        bad[0, 2, 5] = bad[0, 2, 4]
        codec.encode_streams(bad, symbols)
        with pytest.raises(kvx.InvalidArgumentError, match=r"cdf\[2\]"):
            kvx.synchronize(symbols)


def test_encode_bursts_into_odd_and_short_slots(gpu):
    """Bursts of pending bits larger than the encoder's staging ring (the thread writes its own
    ring then), into slots of sizes that leave them unaligned, some too short: each stream is
    the CPU's, cut at its slot, lengths are min(needed, capacity), the overflow is reported, and
    the encoder writes nothing past a stream's end (what this GPU encoder promises, beyond the
    API: those bytes are unspecified)."""
    symbols, cdf = cc.pending_bursts(2, 3000, 67, seed=5)
    full, needed = codec.encode_streams(cdf, symbols)  # numpy in, numpy out: the CPU
    for capacity in (int(needed.max()) + 1, int(needed.max()) + 4, int(np.median(needed)) | 1):
        out = torch.full((2, 67, capacity), 0xAB, dtype=torch.uint8, device=gpu.device)
        lengths = torch.zeros((2, 67), dtype=torch.int32, device=gpu.device)
        with gpu.running():
            codec.encode_fast_new(
                gpu.put(torch.from_numpy(cdf.view(np.int16))),
                gpu.put(torch.from_numpy(symbols)),
                out,
                lengths,
            )
            if capacity < needed.max():
                with pytest.raises(kvx.BufferTooSmallError, match="stream_capacity"):
                    kvx.synchronize(out)
            else:
                kvx.synchronize(out)
        got, got_lengths = gpu.back(out).numpy(), gpu.back(lengths).numpy()
        np.testing.assert_array_equal(got_lengths, np.minimum(needed, capacity))
        for (l, c), n in np.ndenumerate(got_lengths):
            assert got[l, c, :n].tobytes() == full[l, c, :n].tobytes(), (capacity, l, c)
            assert (got[l, c, n:] == 0xAB).all(), (capacity, l, c)


def test_decode_bad_lengths_are_reported(gpu):
    symbols = torch.randint(0, 16, (1, 20, 3), dtype=torch.uint8, device=gpu.device)
    with gpu.running():
        cdf = codec.calculate_cdf(symbols, 16)
        streams, lengths = codec.encode_streams(cdf, symbols)
        lengths[0, 1] = streams.shape[2] + 1
        out = torch.zeros_like(symbols)
        codec.decode_fast_new(cdf, streams, lengths, out)
        with pytest.raises(kvx.InvalidArgumentError, match=r"lengths\[1\]"):
            kvx.synchronize(out)


def test_runs_on_the_current_stream(gpu):
    symbols = torch.randint(0, 32, (8, 512, 1024), dtype=torch.uint8, device=gpu.device)
    with gpu.running(), gpu.side_stream():
        cdf = codec.calculate_cdf(symbols, 32)
        streams, lengths = codec.encode_streams(cdf, symbols)
        out = torch.empty_like(symbols)
        codec.decode_fast_new(cdf, streams, lengths, out)
        copy = out.clone()  # ordered after the decode on the same stream
    assert torch.equal(gpu.back(copy), gpu.back(symbols))


# ---------------------------------------------------------------- the rotated method

ROTATED_CASES = [
    # (rows, tokens, channels, head_size): the transform's passes (groups of fewer than 8, of 8,
    # two spans a pass, a last single span), tokens held in shared memory whole or in pieces
    # (more than 4096 channels; the last piece shorter), one head of the largest size a block
    # holds, and more rows than one launch takes
    (3, 7, 64, 1),
    (3, 7, 64, 4),
    (2, 5, 128, 8),
    (2, 5, 256, 32),
    (2, 3, 512, 64),
    (2, 3, 256, 128),
    (1, 3, 5120, 64),
    (1, 2, 16384, 8192),
    (1030, 1, 8, 8),
]


def _rotated_x(rows: int, tokens: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(rows * tokens + channels)
    x = torch.randn((rows, tokens, channels), generator=g)
    x[..., ::7] *= 40.0  # outlier channels
    x[0, tokens // 2] = 0.0  # an all-zero token
    return x.to(dtype)


@pytest.mark.parametrize("rows,tokens,channels,head_size", ROTATED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_rotated_matches_the_cpu_bit_for_bit(gpu, rows, tokens, channels, head_size, dtype):
    x = _rotated_x(rows, tokens, channels, dtype)
    bins = [4 + 2 * (r % 126) for r in range(rows)]
    method = dict(method="rotated", head_size=head_size)
    want_symbols, want_scales = codec.quantize(x, bins, **method)
    want = codec.dequantize(want_symbols, want_scales, bins, dtype, **method)
    with gpu.running():
        symbols, scales = codec.quantize(gpu.put(x), bins, **method)
        back = codec.dequantize(symbols, scales, bins, dtype, **method)
        kvx.synchronize(back)
    assert torch.equal(gpu.back(symbols), want_symbols)
    assert torch.equal(gpu.back(scales), want_scales)
    assert torch.equal(gpu.back(back).view(torch.uint8), want.view(torch.uint8))


def test_rotated_reads_strided_tokens(gpu):
    x = _rotated_x(2, 9, 64, torch.float32)
    want = codec.quantize(x[:, ::4], [12, 6], method="rotated", head_size=16)
    with gpu.running():
        got = codec.quantize(gpu.put(x)[:, ::4], [12, 6], method="rotated", head_size=16)
        kvx.synchronize(got[0])
    assert all(torch.equal(gpu.back(g), w) for g, w in zip(got, want, strict=True))


LIMIT_8 = 3.4028234663852886e38 / 16  # float32's largest / (2 * head_size), head_size 8


@pytest.mark.parametrize(
    "bad",
    [
        (1, 3, 7, float("nan")),
        (0, 4, 0, float("-inf")),
        (1, 0, 15, LIMIT_8 * 1.001),  # a value above the limit
        (0, 2, None, LIMIT_8),  # a head full of the limit: its scale rounds up past it
        (1027, 0, 2, float("inf")),  # the error names rows of the second launch right
    ],
    ids=["nan", "-inf", "above", "scale", "row-1027"],
)
def test_rotated_refused_token_is_skipped_and_reported(gpu, bad):
    row, token, channel, value = bad
    x = _rotated_x(1030 if row > 2 else 2, 5, 16, torch.float32)
    x[row, token, slice(0, 8) if channel is None else channel] = value
    bins = [16] * x.shape[0]
    with gpu.running():
        symbols, scales = codec.quantize(gpu.put(x), bins, method="rotated", head_size=8)
        with pytest.raises(
            kvx.InvalidArgumentError, match=rf"row {row} token {token} \(found on the device"
        ):
            kvx.synchronize(symbols)
        kvx.synchronize(symbols)  # the error was consumed
    with pytest.raises(kvx.InvalidArgumentError, match=rf"row {row} token {token} \["):
        codec.quantize(x, bins, method="rotated", head_size=8)  # the CPU refuses it up front
    x[row, token] = 0.0
    want_symbols, want_scales = codec.quantize(x, bins, method="rotated", head_size=8)
    kept = torch.ones(x.shape[:2], dtype=torch.bool)
    kept[row, token] = False
    assert torch.equal(gpu.back(symbols)[kept], want_symbols[kept])
    assert torch.equal(gpu.back(scales)[kept], want_scales[kept])


def test_rotated_head_larger_than_shared_memory_is_unsupported(gpu):
    x = torch.zeros(1, 1, 16384, device=gpu.device)
    symbols = torch.zeros(1, 1, 16384, dtype=torch.uint8, device=gpu.device)
    scales = torch.ones(1, 1, device=gpu.device)
    with gpu.running():
        with pytest.raises(kvx.UnsupportedError, match=r"head_size: .* up to 8192"):
            codec.quantize(x, [16], method="rotated", head_size=16384)
        with pytest.raises(kvx.UnsupportedError, match=r"head_size: .* up to 8192"):
            codec.dequantize(symbols, scales, [16], method="rotated", head_size=16384)
    assert codec.quantize(x, [16], method="rotated", head_size=16384)[1].item() == 0.0  # CPU
