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
