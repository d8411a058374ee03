"""The GPU codec's logic, run on the host: libkvx/src/gpu/codec_core.h holds everything the CUDA/HIP
kernels compute per token and per (layer, channel) stream, as inline functions that also compile
with g++. A small harness (tests/c/gpu_codec_core_harness.cpp, built here with ASan/UBSan when the
toolchain has them) runs that code on LMCache's golden vectors and on random data, and the results
must equal LMCache's and the CPU backend's bit for bit.

This tests the kernels' arithmetic and bounds logic, not the kernels: how they split the work
across threads (reductions, histograms in shared memory) and the launches only run on a GPU
(tests/test_gpu_codec.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import conformance_cases as cc  # noqa: E402
import kvx  # noqa: E402
from kvx import codec  # noqa: E402
from test_codec_golden import CASES, Case  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "c" / "gpu_codec_core_harness.cpp"
DTYPES = {
    "float32": (torch.float32, 1),
    "float16": (torch.float16, 2),
    "bfloat16": (torch.bfloat16, 3),
}

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("harness") / "harness"
    base = [
        "g++",
        "-std=c++17",
        "-O2",
        "-ffp-contract=off",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{REPO / 'libkvx' / 'include'}",
        str(SOURCE),
        "-o",
        str(out),
    ]
    sanitized = subprocess.run(
        base + ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"],
        capture_output=True,
        text=True,
    )
    if sanitized.returncode != 0:  # no sanitizer runtime: the plain build must still be clean
        plain = subprocess.run(base, capture_output=True, text=True)
        assert plain.returncode == 0, plain.stderr[-4000:]
    return out


class Run:
    """One harness invocation in its own folder."""

    def __init__(self, harness: Path, folder: Path) -> None:
        self.harness, self.folder = harness, folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, op: str, args: list[int], **inputs: np.ndarray) -> Run:
        (self.folder / "args").write_text(" ".join(str(int(a)) for a in args))
        for name, array in inputs.items():
            np.ascontiguousarray(array).tofile(self.folder / f"{name}.bin")
        done = subprocess.run(
            [str(self.harness), op, str(self.folder)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return self

    def out(self, name: str, dtype) -> np.ndarray:
        return np.fromfile(self.folder / f"{name}.bin", dtype=dtype)


@pytest.fixture
def run(harness, tmp_path) -> Run:
    return Run(harness, tmp_path / "io")


def _raw(x: torch.Tensor) -> np.ndarray:
    """The bytes of a CPU tensor (bf16 included) as uint8."""
    return (
        x.contiguous().view(torch.uint8).numpy().reshape(-1)
        if x.dtype != torch.float32
        else x.contiguous().numpy().view(np.uint8).reshape(-1)
    )


def _quantize(run: Run, x: torch.Tensor, bins: list[int], lanes: int):
    rows, tokens, channels = x.shape
    code = DTYPES[str(x.dtype).split(".")[1]][1]
    run("quantize", [code, rows, tokens, channels, lanes, *bins], x=_raw(x))
    return (
        run.out("symbols", np.uint8).reshape(rows, tokens, channels),
        run.out("scales", np.float32).reshape(rows, tokens),
        run.out("bad", np.uint8).reshape(rows, tokens),
    )


def _encode(run: Run, cdf: np.ndarray, symbols: np.ndarray, capacity: int):
    layers, tokens, channels = symbols.shape
    run(
        "encode",
        [layers, tokens, channels, cdf.shape[2], capacity],
        cdf=cdf.view(np.uint16),
        symbols=symbols,
    )
    return {
        "streams": run.out("streams", np.uint8).reshape(layers, channels, capacity),
        "lengths": run.out("lengths", np.int32).reshape(layers, channels),
        "needed": run.out("needed", np.int64).reshape(layers, channels),
        "bad_symbol": run.out("bad_symbol", np.int64).reshape(layers, channels),
        "bad_cdf": run.out("bad_cdf", np.int32).reshape(layers, channels),
    }


def _decode(
    run: Run, cdf: np.ndarray, data: np.ndarray, tokens: int, *, lengths=None, ends=None, capacity=0
):
    layers, channels, cdf_len = cdf.shape
    prefsum = ends is not None
    inputs = {"cdf": cdf.view(np.uint16), "bytes": data}
    inputs.update(
        {"ends": ends.astype(np.int64)} if prefsum else {"lengths": lengths.astype(np.int32)}
    )
    run("decode", [layers, tokens, channels, cdf_len, int(prefsum), capacity, data.size], **inputs)
    return run.out("symbols", np.uint8).reshape(layers, tokens, channels), run.out(
        "bad", np.uint8
    ).reshape(layers, channels)


def _packed(streams: np.ndarray, lengths: np.ndarray) -> bytes:
    flat = streams.reshape(-1, streams.shape[-1])
    return b"".join(flat[i, :n].tobytes() for i, n in enumerate(lengths.ravel()))


# ---------------------------------------------------------------- golden vectors (LMCache)


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def case(request) -> Case:
    return Case(request.param)


@pytest.mark.parametrize("lanes", [1, 64, 128], ids=lambda n: f"lanes{n}")
def test_golden_quantize(run, case, lanes):
    """lanes = 1: one thread per token; 64 and 128: the kernel's split of a token over a block."""
    symbols, scales, bad = _quantize(run, case.rows(), case.bins, lanes)
    assert not bad.any()
    np.testing.assert_array_equal(symbols, case.symbols)
    np.testing.assert_array_equal(scales, case.scales)


def test_golden_cdf(run, case):
    layers, tokens, channels = case.symbols.shape
    nb = max(case.bins)
    run("cdf", [layers, tokens, channels, nb], symbols=case.symbols)
    assert (run.out("bad", np.int64) == -1).all()
    np.testing.assert_array_equal(run.out("cdf", np.uint16), case.cdf.view(np.uint16).ravel())


def test_golden_encode(run, case):
    got = _encode(run, case.cdf, case.symbols, codec.stream_bound(case.T))
    assert (got["bad_cdf"] == -1).all() and (got["bad_symbol"] == -1).all()
    np.testing.assert_array_equal(got["lengths"], case.lengths)
    assert _packed(got["streams"], got["lengths"]) == case.streams


def test_golden_encode_exact_capacity(run, case):
    cap = int(case.lengths.max())
    got = _encode(run, case.cdf, case.symbols, cap)
    np.testing.assert_array_equal(got["needed"], case.lengths)
    assert _packed(got["streams"], got["lengths"]) == case.streams


def test_golden_decode_slots(run, case):
    """Slots with garbage past each stream's length: it must read as zero, not as 0xff."""
    cap = int(case.lengths.max()) + 3
    buf = np.full((2 * case.L, case.C, cap), 0xFF, dtype=np.uint8)
    ends = np.cumsum(case.lengths.ravel())
    for i, (end, n) in enumerate(zip(ends, case.lengths.ravel(), strict=True)):
        buf.reshape(-1, cap)[i, :n] = np.frombuffer(case.streams[end - n : end], dtype=np.uint8)
    symbols, bad = _decode(run, case.cdf, buf, case.T, lengths=case.lengths, capacity=cap)
    assert not bad.any()
    np.testing.assert_array_equal(symbols, case.symbols)


def test_golden_decode_prefsum(run, case):
    ends = np.cumsum(case.lengths.ravel())
    symbols, bad = _decode(
        run, case.cdf, np.frombuffer(case.streams, dtype=np.uint8), case.T, ends=ends
    )
    assert not bad.any()
    np.testing.assert_array_equal(symbols, case.symbols)


# ---------------------------------------------------------------- random data
# Random inputs, checked against the CPU backend.


def _random_kv(rng, rows, tokens, channels, dtype):
    x = torch.from_numpy(rng.standard_normal((rows, tokens, channels)).astype(np.float32))
    x *= torch.from_numpy(np.exp(rng.normal(0, 3, (rows, tokens, 1))).astype(np.float32))
    if tokens > 2:
        x[:, 1] = 0.0  # all-zero token: scale 0
        x[:, 2, ::3] = torch.tensor(1e-40 if dtype == torch.float32 else 3e-6)  # subnormals
    return x.to(dtype)


SHAPES = [(3, 37, 5), (2, 64, 129), (1, 1, 1), (4, 300, 31)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_quantize_dequantize_match_cpu(run, rng, dtype, shape):
    rows, tokens, channels = shape
    x = _random_kv(rng, rows, tokens, channels, DTYPES[dtype][0])
    bins = [int(b) for b in rng.integers(4, 257, rows)]
    want_symbols, want_scales = codec.quantize(x, bins)
    for lanes in (1, 32, 64):
        symbols, scales, bad = _quantize(run, x, bins, lanes)
        assert not bad.any()
        np.testing.assert_array_equal(symbols, want_symbols.numpy())
        np.testing.assert_array_equal(scales, want_scales.numpy())
    # Forged symbols up to 255 too: they must clamp like the CPU's.
    symbols = rng.integers(0, 256, (rows, tokens, channels), dtype=np.uint8)
    for lanes in (1, 64):
        run(
            "dequantize",
            [DTYPES[dtype][1], rows, tokens, channels, lanes, *bins],
            symbols=symbols,
            scales=want_scales.numpy(),
        )
        want = codec.dequantize(torch.from_numpy(symbols), want_scales, bins, DTYPES[dtype][0])
        np.testing.assert_array_equal(run.out("out", np.uint8), _raw(want))


def test_quantize_flags_exactly_the_non_finite_tokens(run, rng):
    x = torch.from_numpy(rng.standard_normal((2, 9, 40)).astype(np.float32))
    x[0, 3, 7], x[1, 8, 39], x[1, 0, 0] = float("inf"), float("nan"), -float("inf")
    for dtype in ("float32", "float16", "bfloat16"):
        for lanes in (1, 64):
            _, _, bad = _quantize(run, x.to(DTYPES[dtype][0]), [16, 32], lanes)
            assert sorted(zip(*np.nonzero(bad), strict=True)) == [(0, 3), (1, 0), (1, 8)]
    with pytest.raises(kvx.InvalidArgumentError, match="finite"):
        codec.quantize(x, [16, 32])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_scales_match_cpu(run, dtype):
    """MAX / scale overflows to inf for scales below ~4e-37: the symbols are the CPU backend's."""
    x = torch.tensor([[[1e-38, -1e-38, 0.0, 5e-39, 1e-45], [3e-37, -3e-37, 0.0, 1e-37, 2e-37]]]).to(
        DTYPES[dtype][0]
    )
    want_symbols, want_scales = codec.quantize(x, [256])
    for lanes in (1, 64):
        symbols, scales, bad = _quantize(run, x, [256], lanes)
        assert not bad.any()
        np.testing.assert_array_equal(symbols, want_symbols.numpy())
        np.testing.assert_array_equal(scales, want_scales.numpy())


def _symbols_and_cdf(rng, layers, tokens, channels, nb):
    # Skewed symbols (some channels nearly constant) so tables have large and tiny ranges.
    centre = rng.integers(0, nb, (1, 1, channels))
    spread = rng.choice([0.3, 2.0, nb / 4], size=(1, 1, channels))
    symbols = np.clip(
        np.rint(centre + spread * rng.standard_normal((layers, tokens, channels))), 0, nb - 1
    ).astype(np.uint8)
    return symbols, codec.calculate_cdf(symbols, nb)


@pytest.mark.parametrize(
    "shape,nb",
    [((2, 37, 7), 8), ((3, 256, 65), 32), ((1, 1000, 3), 256), ((2, 0, 4), 16), ((1, 1, 1), 2)],
)
def test_cdf_encode_decode_match_cpu(run, rng, shape, nb):
    layers, tokens, channels = shape
    symbols, want_cdf = _symbols_and_cdf(rng, layers, tokens, channels, nb)
    run("cdf", [layers, tokens, channels, nb], symbols=symbols)
    assert (run.out("bad", np.int64) == -1).all()
    np.testing.assert_array_equal(run.out("cdf", np.int16).reshape(want_cdf.shape), want_cdf)

    cap = codec.stream_bound(tokens)
    got = _encode(run, want_cdf, symbols, cap)
    want_streams, want_lengths = codec.encode_streams(want_cdf, symbols)
    np.testing.assert_array_equal(got["lengths"], want_lengths)
    assert _packed(got["streams"], got["lengths"]) == _packed(want_streams, want_lengths)
    for i, n in enumerate(got["lengths"].ravel()):  # nothing written past a stream's end
        assert (got["streams"].reshape(-1, cap)[i, n:] == 0xEE).all()

    decoded, bad = _decode(
        run, want_cdf, got["streams"], tokens, lengths=got["lengths"], capacity=cap
    )
    assert not bad.any()
    np.testing.assert_array_equal(decoded, symbols)


def test_overflow_stops_at_capacity_and_reports_the_size(run, rng):
    symbols, cdf = _symbols_and_cdf(rng, 2, 300, 9, 64)
    full_streams, full_lengths = codec.encode_streams(cdf, symbols)
    cap = int(np.median(full_lengths))
    got = _encode(run, cdf, symbols, cap)
    np.testing.assert_array_equal(got["needed"], full_lengths)  # the size each stream needs
    np.testing.assert_array_equal(got["lengths"], np.minimum(full_lengths, cap))
    flat, full = got["streams"].reshape(-1, cap), full_streams.reshape(-1, full_streams.shape[-1])
    for i, n in enumerate(got["lengths"].ravel()):  # the prefix that fits, then untouched bytes
        assert flat[i, :n].tobytes() == full[i, :n].tobytes()
        assert (flat[i, n:] == 0xEE).all()
    with pytest.raises(kvx.BufferTooSmallError):
        codec.encode_fast_new(
            cdf, symbols, np.zeros((2, 9, cap), np.uint8), np.zeros((2, 9), np.int32)
        )


def test_pending_bit_bursts_through_the_staging_ring(run):
    """Runs of pending bits emitted at once, hundreds of bytes, more than the encoder's staging
    ring holds: it is written out when full, in 16-, 4- or 1-byte stores as the slot's alignment
    allows (odd capacities), and the streams are the CPU backend's, cut at the capacity."""
    symbols, cdf = cc.pending_bursts(2, 3000, 9, seed=3)
    full, needed = codec.encode_streams(cdf, symbols)
    for cap in (int(needed.max()), int(needed.max()) + 3, int(np.median(needed)) | 1):
        got = _encode(run, cdf, symbols, cap)
        np.testing.assert_array_equal(got["needed"], needed)
        np.testing.assert_array_equal(got["lengths"], np.minimum(needed, cap))
        flat, whole = got["streams"].reshape(-1, cap), full.reshape(-1, full.shape[-1])
        for i, n in enumerate(got["lengths"].ravel()):
            assert flat[i, :n].tobytes() == whole[i, :n].tobytes(), (cap, i)
            assert (flat[i, n:] == 0xEE).all(), (cap, i)
        if cap >= needed.max():
            decoded, bad = _decode(
                run, cdf, got["streams"], symbols.shape[1], lengths=got["lengths"], capacity=cap
            )
            assert not bad.any()
            np.testing.assert_array_equal(decoded, symbols)


def test_damaged_streams_decode_like_the_cpu(run, rng):
    """Random bytes, random lengths (0 .. capacity), both modes: the same symbols as the CPU
    backend (whose clamping of out-of-range counts the core shares), and no access outside the
    buffer (the harness runs under ASan when available)."""
    layers, tokens, channels, nb, cap = 2, 50, 11, 32, 40
    _, cdf = _symbols_and_cdf(rng, layers, tokens, channels, nb)
    data = rng.integers(0, 256, (layers, channels, cap), dtype=np.uint8)
    lengths = rng.integers(0, cap + 1, (layers, channels), dtype=np.int32)
    got, bad = _decode(run, cdf, data, tokens, lengths=lengths, capacity=cap)
    want = np.zeros((layers, tokens, channels), np.uint8)
    codec.decode_fast_new(cdf, data, lengths, want)
    assert not bad.any()
    np.testing.assert_array_equal(got, want)

    flat = data.reshape(-1)[: int(lengths.sum())].copy()
    ends = np.cumsum(lengths.ravel())
    got, bad = _decode(run, cdf, flat, tokens, ends=ends)
    codec.decode_fast_prefsum(cdf, flat, ends.reshape(layers, channels), want)
    assert not bad.any()
    np.testing.assert_array_equal(got, want)


def test_count_equals_the_64_bit_division(run):
    """The decoder's count without a 64-bit division (kvx_cc_count: a float estimate, corrected)
    against the division it replaces, clamped to 65536: every target up to span + 2 for spans
    1 .. 2048, powers of two +-2 (2^16 and 2^32 among them) and random spans with targets at
    0, span - 1, span (damaged from there on), 2^32 - 1 and at the steps of the quotient. The
    harness also checks that an estimate 2 ulp off (a GPU's fast division) stays within 1 of the
    quotient and that the correction recovers it from any estimate within 1."""
    run("count", [200_000, 20240613])
    assert run.out("checked", np.int64)[0] > 6_000_000


def test_bad_input_is_flagged_per_stream(run, rng):
    layers, tokens, channels, nb = 1, 20, 6, 16
    symbols, cdf = _symbols_and_cdf(rng, layers, tokens, channels, nb)
    cdf = np.array(cdf)
    cdf[0, 2, 5] = cdf[0, 2, 4]  # not strictly increasing: stream 2
    symbols[0, 7, 4] = nb  # above the last symbol (cdf_len - 2 = nb - 1): stream 4, token 7
    got = _encode(run, cdf, symbols, codec.stream_bound(tokens))
    assert got["bad_cdf"].ravel().tolist() == [-1, -1, 4, -1, -1, -1]
    assert got["bad_symbol"].ravel().tolist() == [-1, -1, -1, -1, 7, -1]
    # The CDF of symbols with one >= num_bins: that token is left out and reported.
    run("cdf", [layers, tokens, channels, nb], symbols=symbols)
    assert run.out("bad", np.int64).tolist() == [-1, -1, -1, -1, 7, -1]
    # Decode: bad lengths and offsets are refused per stream, never followed.
    cap = 8
    data = rng.integers(0, 256, (layers, channels, cap), dtype=np.uint8)
    lengths = np.array([[0, cap, cap + 1, -1, 3, 3]], dtype=np.int32)
    _, bad = _decode(run, cdf, data, tokens, lengths=lengths, capacity=cap)
    assert bad.ravel().tolist() == [0, 0, 1, 1, 0, 0]
    ends = np.array([2, 1, 5, 60, 6, 7], dtype=np.int64)  # decreasing at 1, past the end at 3
    _, bad = _decode(run, cdf, data.reshape(-1)[:7].copy(), tokens, ends=ends)
    assert bad.ravel().tolist() == [0, 1, 2, 1, 1, 0]
