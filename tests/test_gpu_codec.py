"""The CacheGen codec on a CUDA/HIP GPU against the CPU backend, byte for byte: LMCache's golden
vectors and random data through kvx.codec's low-level functions (quantize, dequantize,
calculate_cdf, encode, decode, prefix-sum decode) on device tensors; data errors found on the
device and reported by kvx.synchronize; ordering on a side stream. Skips unless this libkvx has the
GPU backend and torch sees a device (the kernels' logic is also checked on the host, without a
GPU, by tests/test_gpu_codec_core.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kvx  # noqa: E402
from kvx import codec  # noqa: E402

from test_codec_golden import CASES, Case  # noqa: E402

_GPU = any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())
pytestmark = [
    pytest.mark.skipif(not _GPU, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


def _packed(streams, lengths) -> bytes:
    s, n = streams.cpu().numpy(), lengths.cpu().numpy()
    return b"".join(s[l, c, : n[l, c]].tobytes() for l in range(n.shape[0]) for c in range(n.shape[1]))


def _bits(x: torch.Tensor) -> np.ndarray:
    return x.cpu().contiguous().view(torch.uint8).numpy()


# ---------------------------------------------------------------- golden vectors


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def case(request) -> Case:
    return Case(request.param)


def test_golden_quantize(case):
    symbols, scales = codec.quantize(case.rows().cuda(), case.bins)
    kvx.synchronize(symbols)
    assert symbols.is_cuda and scales.is_cuda
    np.testing.assert_array_equal(symbols.cpu().numpy(), case.symbols)
    np.testing.assert_array_equal(scales.cpu().numpy(), case.scales)


def test_golden_cdf(case):
    cdf = codec.calculate_cdf(torch.from_numpy(case.symbols).cuda(), max(case.bins))
    kvx.synchronize(cdf)
    np.testing.assert_array_equal(cdf.cpu().numpy(), case.cdf)


def test_golden_encode(case):
    streams, lengths = codec.encode_streams(torch.from_numpy(case.cdf).cuda(), torch.from_numpy(case.symbols).cuda())
    kvx.synchronize(streams)
    np.testing.assert_array_equal(lengths.cpu().numpy(), case.lengths)
    assert _packed(streams, lengths) == case.streams


def test_golden_decode_slots(case):
    cap = int(case.lengths.max()) + 3
    buf = np.full((2 * case.L, case.C, cap), 0xFF, dtype=np.uint8)  # past a length: reads as zero
    ends = np.cumsum(case.lengths.ravel())
    for i, (end, n) in enumerate(zip(ends, case.lengths.ravel())):
        buf.reshape(-1, cap)[i, :n] = np.frombuffer(case.streams[end - n : end], dtype=np.uint8)
    out = torch.zeros((2 * case.L, case.T, case.C), dtype=torch.uint8, device="cuda")
    codec.decode_fast_new(torch.from_numpy(case.cdf).cuda(), torch.from_numpy(buf).cuda(),
                          torch.from_numpy(case.lengths).cuda(), out)
    kvx.synchronize(out)
    np.testing.assert_array_equal(out.cpu().numpy(), case.symbols)


@pytest.mark.parametrize("prefix_dtype", [torch.int32, torch.int64], ids=str)
def test_golden_decode_prefsum(case, prefix_dtype):
    ends = torch.from_numpy(np.cumsum(case.lengths.ravel()).reshape(case.lengths.shape)).to(prefix_dtype).cuda()
    out = torch.zeros((2 * case.L, case.T, case.C), dtype=torch.int8, device="cuda")
    codec.decode_fast_prefsum(torch.from_numpy(case.cdf).cuda(),
                              torch.frombuffer(bytearray(case.streams), dtype=torch.uint8).cuda(), ends, out)
    kvx.synchronize(out)
    np.testing.assert_array_equal(out.cpu().numpy().view(np.uint8), case.symbols)


# ---------------------------------------------------------------- random data against the CPU backend


def _random_kv(gen, rows, tokens, channels, dtype):
    x = torch.randn((rows, tokens, channels), generator=gen) * torch.exp(3 * torch.randn((rows, tokens, 1), generator=gen))
    if tokens > 2:
        x[:, 1] = 0.0
        x[:, 2, ::3] = 1e-40 if dtype == torch.float32 else 3e-6
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 37, 5), (2, 64, 129), (1, 1, 1), (4, 300, 1024), (1100, 3, 7)], ids=str)
def test_quantize_dequantize_match_cpu(dtype, shape):
    """(1100, 3, 7): more rows than one launch carries bins for."""
    gen = torch.Generator().manual_seed(sum(shape))
    rows, tokens, channels = shape
    x = _random_kv(gen, rows, tokens, channels, dtype)
    bins = torch.randint(4, 257, (rows,), generator=gen).tolist()
    want_symbols, want_scales = codec.quantize(x, bins)
    symbols, scales = codec.quantize(x.cuda(), bins)
    forged = torch.randint(0, 256, (rows, tokens, channels), generator=gen, dtype=torch.uint8)
    out = codec.dequantize(forged.cuda(), want_scales.cuda(), bins, dtype)
    kvx.synchronize(out)
    np.testing.assert_array_equal(symbols.cpu().numpy(), want_symbols.numpy())
    np.testing.assert_array_equal(scales.cpu().numpy(), want_scales.numpy())
    np.testing.assert_array_equal(_bits(out), _bits(codec.dequantize(forged, want_scales, bins, dtype)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_tiny_scales_match_cpu(dtype):
    """MAX / scale overflows to inf below ~4e-37: a GPU's float-to-int conversion saturates where
    the CPU's gives INT_MIN; the kernels spell out the CPU's result."""
    x = torch.tensor([[[1e-38, -1e-38, 0.0, 5e-39, 1e-45], [3e-37, -3e-37, 0.0, 1e-37, 2e-37]]]).to(dtype)
    want, want_scales = codec.quantize(x, [256])
    got, scales = codec.quantize(x.cuda(), [256])
    kvx.synchronize(got)
    assert torch.equal(got.cpu(), want) and torch.equal(scales.cpu(), want_scales)


def test_quantize_strided_view():
    gen = torch.Generator().manual_seed(5)
    base = _random_kv(gen, 4, 40, 96, torch.bfloat16)
    view = base[::2, 3:, 10:74]  # row and token strides of the parent, channels contiguous
    bins = [16, 32]
    want, want_scales = codec.quantize(view, bins)
    got, scales = codec.quantize(base.cuda()[::2, 3:, 10:74], bins)
    kvx.synchronize(got)
    np.testing.assert_array_equal(got.cpu().numpy(), want.numpy())
    np.testing.assert_array_equal(scales.cpu().numpy(), want_scales.numpy())


@pytest.mark.parametrize("shape,nb", [((2, 37, 7), 8), ((3, 256, 1024), 32), ((1, 1000, 3), 256), ((2, 0, 4), 16), ((1, 1, 1), 2)], ids=str)
def test_cdf_encode_decode_match_cpu(shape, nb):
    gen = torch.Generator().manual_seed(nb)
    layers, tokens, channels = shape
    centre = torch.randint(0, nb, (1, 1, channels), generator=gen)
    symbols = (centre + 2 * torch.randn(shape, generator=gen)).round().clamp(0, nb - 1).to(torch.uint8)
    want_cdf = codec.calculate_cdf(symbols, nb)
    cdf = codec.calculate_cdf(symbols.cuda(), nb)
    want_streams, want_lengths = codec.encode_streams(want_cdf, symbols)
    streams, lengths = codec.encode_streams(cdf, symbols.cuda())
    out = torch.full(shape, 0xEE, dtype=torch.uint8, device="cuda")
    codec.decode_fast_new(cdf, streams, lengths, out)
    kvx.synchronize(out)
    np.testing.assert_array_equal(cdf.cpu().numpy(), want_cdf.numpy())
    np.testing.assert_array_equal(lengths.cpu().numpy(), want_lengths.numpy())
    assert _packed(streams, lengths) == _packed(want_streams, want_lengths)
    np.testing.assert_array_equal(out.cpu().numpy(), symbols.numpy())


def test_damaged_streams_decode_like_the_cpu():
    gen = torch.Generator().manual_seed(3)
    layers, tokens, channels, nb, cap = 2, 50, 11, 32, 40
    symbols = torch.randint(0, nb, (layers, tokens, channels), generator=gen, dtype=torch.uint8)
    cdf = codec.calculate_cdf(symbols, nb)
    data = torch.randint(0, 256, (layers, channels, cap), generator=gen, dtype=torch.uint8)
    lengths = torch.randint(0, cap + 1, (layers, channels), generator=gen, dtype=torch.int32)
    want = torch.zeros((layers, tokens, channels), dtype=torch.uint8)
    codec.decode_fast_new(cdf, data, lengths, want)
    got = torch.zeros_like(want, device="cuda")
    codec.decode_fast_new(cdf.cuda(), data.cuda(), lengths.cuda(), got)
    kvx.synchronize(got)
    assert torch.equal(got.cpu(), want)


# ---------------------------------------------------------------- errors found on the device


def test_non_finite_token_is_skipped_and_reported():
    x = torch.randn(2, 5, 16, device="cuda")
    x[1, 3, 7] = float("nan")
    symbols, scales = codec.quantize(x, [16, 16])
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


def test_container_of_a_device_tensor_goes_through_host_memory():
    """The high-level API takes device tensors: encode copies to the host, decode fills a device
    `out` from a host copy; bytes and values equal the CPU path's."""
    kv = torch.randn(2, 3, 40, 64).to(torch.bfloat16)
    blob = codec.encode(kv.cuda())
    assert blob == codec.encode(kv)
    out = torch.empty(2, 3, 40, 64, dtype=torch.bfloat16, device="cuda")
    assert codec.decode(blob, out=out) is out
    assert torch.equal(out.cpu().view(torch.int16), codec.decode(blob).view(torch.int16))
