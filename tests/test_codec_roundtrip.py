"""Round trips: symbols exact, values within half a quantization step (per layer), agreement with
the numpy reference, long streams, skewed CDFs, zero tokens and capacity limits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")  # bf16 inputs and outputs need torch

import kvx  # noqa: E402
from kvx import codec  # noqa: E402
from kvx import reference_codec as ref  # noqa: E402
from machine import cpu_flags  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _kv(rng: np.random.Generator, shape, dtype) -> torch.Tensor:
    x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 30.0)
    return torch.from_numpy(x).to(dtype)


def _half_step_bound(kv: torch.Tensor, key_bins, value_bins) -> torch.Tensor:
    """Per (plane, layer, token): scale / (2 * MAX) plus the output dtype's rounding."""
    scale = kv.float().abs().amax(dim=-1, keepdim=True)
    bins = torch.tensor([key_bins, value_bins][: kv.shape[0]], dtype=torch.float32)
    maxv = (bins // 2 - 1)[:, :, None, None]
    eps = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[kv.dtype]
    return scale / (2 * maxv) * (1 + 1e-5) + scale * eps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.integers(1, 3),
    tokens=st.integers(0, 70),
    heads=st.integers(1, 3),
    head_size=st.integers(1, 9),
    dtype=st.sampled_from(sorted(DTYPES)),
    chunk=st.integers(1, 80),
    data=st.data(),
)
def test_container_round_trip(layers, tokens, heads, head_size, dtype, chunk, data) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kv = _kv(rng, (2, layers, tokens, heads * head_size), DTYPES[dtype])
    kb = data.draw(st.lists(st.integers(4, 256), min_size=layers, max_size=layers))
    vb = data.draw(st.lists(st.integers(4, 256), min_size=layers, max_size=layers))
    blob = codec.encode(kv, kb, vb, chunk_tokens=chunk)
    out = codec.decode(blob)
    assert out.dtype == kv.dtype and tuple(out.shape) == tuple(kv.shape)
    # Symbols exact: re-quantizing the reference's reconstruction equals what kvx decoded.
    rows = kv.reshape(2 * layers, tokens, heads * head_size)
    symbols, scales = codec.quantize(rows, kb + vb)
    expect = codec.dequantize(symbols, scales, kb + vb, dtype=kv.dtype)
    assert torch.equal(out.reshape(expect.shape), expect)
    err = (out.float() - kv.float()).abs()
    assert bool((err <= _half_step_bound(kv, kb, vb)).all())
    meta = codec.inspect(blob)
    assert (meta.key_bins, meta.value_bins, meta.num_tokens, meta.chunk_tokens) == (
        kb,
        vb,
        tokens,
        chunk,
    )


def test_matches_numpy_reference_float32(rng) -> None:
    kv = _kv(rng, (2, 3, 200, 24), torch.float32)
    kb, vb = [32, 16, 8], [48, 16, 4]
    x = kv.reshape(6, 200, 24).numpy()
    symbols, scales = ref.quantize(x, kb + vb)
    expect = ref.dequantize(symbols, scales, kb + vb).reshape(kv.shape)
    out = codec.decode(codec.encode(kv, kb, vb, chunk_tokens=64), as_numpy=True)
    np.testing.assert_array_equal(out, expect)


def test_numpy_in_numpy_out(rng) -> None:
    kv = rng.standard_normal((2, 2, 40, 8)).astype(np.float16)
    out = codec.decode(codec.encode(kv), as_numpy=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float16 and out.shape == kv.shape


def test_error_bound_per_layer_default_schedule(rng) -> None:
    """LMCache's schedule: 32 bins (MAX 15) on the first 10 K / 2 V layers, 16 (MAX 7) after."""
    kv = _kv(rng, (2, 12, 64, 32), torch.bfloat16)
    out = codec.decode(codec.encode(kv))
    kb, vb = codec.default_bins(12)
    assert kb == [32] * 10 + [16] * 2 and vb == [32] * 2 + [16] * 10
    err = (out.float() - kv.float()).abs()
    assert bool((err <= _half_step_bound(kv, kb, vb)).all())
    # and the coarse layers really are coarser: the bound is tight up to rounding
    assert err[0, :10].amax() < err[0, 10:].amax()


def test_default_bins_small_models() -> None:
    assert codec.default_bins(4) == ([32] * 4, [32] * 4)


def test_five_d_input_and_out_parameter(rng) -> None:
    kv = _kv(rng, (2, 2, 30, 4, 8), torch.float16)
    blob = codec.encode(kv)
    out = torch.full((2, 2, 30, 4, 8), float("nan"), dtype=torch.float16)
    assert codec.decode(blob, out=out) is out
    assert torch.equal(out.reshape(2, 2, 30, 32), codec.decode(blob))


def test_strided_input(rng) -> None:
    """KV_T2D-style storage viewed as [2, L, T, C]: non-contiguous planes, layers and tokens."""
    base = _kv(rng, (3, 50, 2, 40), torch.float32)  # [L, T, 2, C]
    kv = base.permute(2, 0, 1, 3)
    assert not kv.is_contiguous()
    assert torch.equal(codec.decode(codec.encode(kv)), codec.decode(codec.encode(kv.contiguous())))


def test_all_zero_tokens_and_mla(rng) -> None:
    kv = _kv(rng, (1, 2, 20, 16), torch.bfloat16)  # MLA: one plane
    kv[0, 1, 5] = 0
    kv[0, 0, :] = 0
    symbols, scales = codec.quantize(kv.reshape(2, 20, 16), [32, 16])
    assert bool((symbols[0] == 15).all()) and bool((symbols[1, 5] == 7).all())
    assert float(scales[0].abs().max()) == 0.0
    out = codec.decode(codec.encode(kv, key_bins=[32, 16]))
    assert not bool(out.float().isnan().any())
    assert bool((out[0, 0] == 0).all()) and bool((out[0, 1, 5] == 0).all())


def test_zero_tokens() -> None:
    kv = torch.zeros((2, 3, 0, 8), dtype=torch.bfloat16)
    blob = codec.encode(kv)
    assert codec.inspect(blob).num_chunks == 0
    assert tuple(codec.decode(blob).shape) == (2, 3, 0, 8)


@pytest.mark.parametrize("tokens", [1, 255, 256, 257, 5000])
def test_long_streams_no_256_limit(rng, tokens) -> None:
    symbols = torch.from_numpy(rng.integers(0, 31, size=(2, tokens, 8), dtype=np.uint8))
    cdf = codec.calculate_cdf(symbols, 32)
    streams, lengths = codec.encode_streams(cdf, symbols)
    assert streams.shape[2] == codec.stream_bound(tokens)
    out = torch.empty_like(symbols)
    codec.decode_fast_new(cdf, streams, lengths, out)
    assert torch.equal(out, symbols)
    if tokens == 5000:
        assert int(lengths.max()) > 256  # streams longer than LMCache's 256-byte buffers


def _random_cdf(rng, layers, channels, lp, skew: bool) -> np.ndarray:
    """Strictly increasing tables starting at 0, some with 1/65536 symbols."""
    out = np.empty((layers, channels, lp), dtype=np.uint16)
    for i in range(layers * channels):
        if skew:
            widths = np.ones(lp - 1, dtype=np.int64)
            widths[rng.integers(0, lp - 1)] += 65536 - (lp - 1)
        else:
            widths = rng.integers(1, 4000, size=lp - 1)
            widths = np.maximum(1, widths * 65536 // widths.sum())
            widths[-1] += 65536 - widths.sum()
            if widths[-1] < 1:
                widths = np.ones(lp - 1, dtype=np.int64)
                widths[0] += 65536 - (lp - 1)
        edges = np.concatenate([[0], np.cumsum(widths)[:-1]])
        out.reshape(-1, lp)[i, : lp - 1] = edges
        out.reshape(-1, lp)[i, lp - 1] = 65535
    return out


@pytest.mark.parametrize("skew", [False, True])
@pytest.mark.parametrize("lp", [3, 17, 49, 257])
def test_any_cdf_round_trips_and_matches_reference(rng, lp, skew) -> None:
    layers, tokens, channels = 2, 90, 5
    cdf = _random_cdf(rng, layers, channels, lp, skew)
    symbols = rng.integers(0, lp - 1, size=(layers, tokens, channels), dtype=np.uint8)
    streams, lengths = codec.encode_streams(cdf, symbols)
    out = np.empty_like(symbols)
    codec.decode_fast_new(cdf, streams, lengths, out)
    np.testing.assert_array_equal(out, symbols)
    ref_streams, ref_lengths = ref.encode(cdf, symbols)
    np.testing.assert_array_equal(lengths, ref_lengths)
    for i, s in enumerate(ref_streams):
        assert streams.reshape(layers * channels, -1)[i, : len(s)].tobytes() == s
    # worst case: every symbol the least probable one stays within stream_bound
    if skew:
        rare = np.argmin(np.diff(np.concatenate([cdf[0, 0, : lp - 1].astype(np.int64), [65536]])))
        worst = np.full((1, 300, 1), rare, dtype=np.uint8)
        _s2, l2 = codec.encode_streams(np.ascontiguousarray(cdf[:1, :1]), worst)
        assert int(l2.max()) <= codec.stream_bound(300)


def test_buffer_too_small_never_writes_past_slot(rng) -> None:
    symbols = rng.integers(0, 31, size=(1, 400, 3), dtype=np.uint8)
    cdf = codec.calculate_cdf(symbols, 32)
    _, lengths = codec.encode_streams(cdf, symbols)
    cap = int(lengths.min()) - 1
    big = np.full((1, 3, cap + 16), 0xEE, dtype=np.uint8)
    slots = big[:, :, :cap]  # a view: the 16 bytes after each slot are guard bytes
    out = np.ascontiguousarray(slots)
    with pytest.raises(kvx.BufferTooSmallError, match="stream_capacity"):
        codec.encode_fast_new(cdf, symbols, out, np.zeros((1, 3), dtype=np.int32))
    # write through an exactly-sized buffer inside a larger guard area
    guard = np.full(3 * cap + 64, 0xEE, dtype=np.uint8)
    view = guard[: 3 * cap].reshape(1, 3, cap)
    with pytest.raises(kvx.BufferTooSmallError):
        codec.encode_fast_new(cdf, symbols, view, np.zeros((1, 3), dtype=np.int32))
    assert (guard[3 * cap :] == 0xEE).all()


def test_threads_do_not_change_output(rng) -> None:
    kv = _kv(rng, (2, 4, 100, 64), torch.bfloat16)
    before = kvx.get_num_threads()
    try:
        kvx.set_num_threads(1)
        one = codec.encode(kv)
        kvx.set_num_threads(2)
        two = codec.encode(kv)
    finally:
        kvx.set_num_threads(before)
    assert one == two


def test_high_entropy_chunks_take_the_worst_case_path(rng) -> None:
    """256 bins of near-uniform data cost ~8 bits per symbol, more than the encoder's first
    guess at a slot size: the chunk is re-encoded into worst-case slots, transparently."""
    kv = torch.from_numpy(rng.uniform(-1, 1, size=(2, 2, 300, 16)).astype(np.float32))
    blob = codec.encode(kv, key_bins=256, value_bins=256, chunk_tokens=300)
    info = ref.parse_container(blob)
    assert max(info["chunks"][0]["lengths"]) > 300 * 6 // 8 + 16
    out = codec.decode(blob)
    symbols, scales = codec.quantize(kv.reshape(4, 300, 16), [256] * 4)
    assert torch.equal(out.reshape(4, 300, 16), codec.dequantize(symbols, scales, [256] * 4))


_ISA_SCRIPT = """
import hashlib, numpy as np, torch, kvx
from kvx import codec
g = torch.Generator().manual_seed(5)
kv = (torch.randn(2, 12, 300, 256, generator=g)
      * torch.rand(1, 12, 1, 256, generator=g)).to(torch.bfloat16)
blob = codec.encode(kv, chunk_tokens=128)
out = codec.decode(blob)
print(kvx.cpu_kernels())  # which coder ran: checked by the caller
print(hashlib.sha256(blob + out.view(torch.int16).numpy().tobytes()).hexdigest())
"""


def test_coder_variants_give_the_same_bytes():
    """The range coder is compiled for the baseline instruction set and for AVX2, picked at run
    time; KVX_CPU_ISA=baseline forces the first. Both must give the same container and values."""
    if "avx2" not in cpu_flags():
        pytest.skip("this CPU runs only the baseline coder; nothing to compare")
    digests, coders = set(), set()
    for isa in ("baseline", ""):
        env = dict(os.environ, KVX_CPU_ISA=isa)
        run = subprocess.run(
            [sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        kernels, digest = run.stdout.split("\n")[:2]
        digests.add(digest)
        coders.add(kernels.split("range_coder=")[1].split()[0])
    assert len(digests) == 1
    assert coders == {
        "baseline",
        "avx2",
    }  # both ran: KVX_CPU_ISA=baseline took effect, AVX2 is picked
