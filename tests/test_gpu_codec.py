"""The CacheGen codec on a CUDA/HIP GPU, where it differs from the other backends: data errors
found on the device and reported by kvx.synchronize, and ordering on a side stream. LMCache's
golden vectors and random data through every codec function and the container, byte for byte
with the CPU backend, are in tests/test_conformance.py. Skips unless this libkvx has the GPU
backend and torch sees a device (the kernels' logic is also checked on the host, without a GPU,
by tests/test_gpu_codec_core.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import kvx  # noqa: E402
from kvx import codec  # noqa: E402

_GPU = any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())
pytestmark = [
    pytest.mark.skipif(
        not _GPU, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"
    ),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


# ---------------------------------------------------------------- errors found on the device


def test_non_finite_token_is_skipped_and_reported():
    x = torch.randn(2, 5, 16, device="cuda")
    x[1, 3, 7] = float("nan")
    symbols, _scales = codec.quantize(x, [16, 16])
    with pytest.raises(kvx.InvalidArgumentError, match=r"row 1 token 3"):
        kvx.synchronize(symbols)
    kvx.synchronize(symbols)  # the error was consumed
    want, _ = codec.quantize(x.cpu().nan_to_num(0.0), [16, 16])
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3] = False
    assert torch.equal(symbols.cpu()[mask], want[mask])


def test_encode_overflow_and_bad_tables_are_reported():
    symbols = torch.randint(0, 16, (1, 200, 4), dtype=torch.uint8, device="cuda")
    cdf = codec.calculate_cdf(symbols, 16)
    out = torch.full((1, 4, 8), 0xAB, dtype=torch.uint8, device="cuda")
    lengths = torch.zeros((1, 4), dtype=torch.int32, device="cuda")
    codec.encode_fast_new(cdf, symbols, out, lengths)
    with pytest.raises(kvx.BufferTooSmallError, match="stream_capacity"):
        kvx.synchronize(out)
    assert (lengths.cpu() == 8).all()  # truncated at the capacity, nothing past it
    bad = cdf.clone()
    bad[0, 2, 5] = bad[0, 2, 4]
    codec.encode_streams(bad, symbols)
    with pytest.raises(kvx.InvalidArgumentError, match=r"cdf\[2\]"):
        kvx.synchronize(symbols)


def test_decode_bad_lengths_are_reported():
    symbols = torch.randint(0, 16, (1, 20, 3), dtype=torch.uint8, device="cuda")
    cdf = codec.calculate_cdf(symbols, 16)
    streams, lengths = codec.encode_streams(cdf, symbols)
    lengths[0, 1] = streams.shape[2] + 1
    out = torch.zeros_like(symbols)
    codec.decode_fast_new(cdf, streams, lengths, out)
    with pytest.raises(kvx.InvalidArgumentError, match=r"lengths\[1\]"):
        kvx.synchronize(out)


def test_runs_on_the_current_stream():
    symbols = torch.randint(0, 32, (8, 512, 1024), dtype=torch.uint8, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cdf = codec.calculate_cdf(symbols, 32)
        streams, lengths = codec.encode_streams(cdf, symbols)
        out = torch.empty_like(symbols)
        codec.decode_fast_new(cdf, streams, lengths, out)
        copy = out.clone()  # ordered after the decode on the same stream
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(copy, symbols)
