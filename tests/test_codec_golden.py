"""Bit-exactness with LMCache's CacheGen coder, on golden vectors LMCache itself produced
(tests/golden/cachegen/, see its README): quantized symbols and scales, CDF tables, stream
bytes and lengths, and decoding back to the symbols."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # bf16 golden inputs need torch's bfloat16

from kvx import codec  # noqa: E402
from kvx import reference_codec as ref  # noqa: E402


def _golden_dir() -> Path:
    env = os.environ.get("KVX_GOLDEN_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "golden" / "cachegen"


GOLDEN = _golden_dir()
CASES = sorted(GOLDEN.glob("case_*.npz"))
if not CASES:  # a missing data set must not look like a pass
    pytest.fail(f"no golden vectors found in {GOLDEN} (set KVX_GOLDEN_DIR)", pytrace=False)


class Case:
    def __init__(self, path: Path) -> None:
        z = np.load(path)
        self.name = path.stem
        self.dtype = str(z["kv_dtype"])
        kv = torch.from_numpy(z["kv"])
        if self.dtype != "float32":
            kv = kv.view(getattr(torch, self.dtype))
        self.kv = kv  # [2, L, T, NH, HS]
        _, self.L, self.T, nh, hs = kv.shape
        self.C = nh * hs
        self.key_bins = [int(b) for b in z["key_bins"]]
        self.value_bins = [int(b) for b in z["value_bins"]]
        self.bins = self.key_bins + self.value_bins
        self.symbols = z["symbols"].view(np.uint8)
        self.scales = np.concatenate([z["max_key"], z["max_value"]])[..., 0]
        self.cdf = z["cdf"]
        self.lengths = z["lengths"]
        self.streams = z["streams"].tobytes()

    def rows(self):
        return self.kv.reshape(2 * self.L, self.T, self.C)


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def case(request) -> Case:
    return Case(request.param)


def _packed(streams, lengths) -> bytes:
    s, n = streams.numpy(), lengths.numpy()
    return b"".join(
        s[l, c, : n[l, c]].tobytes() for l in range(n.shape[0]) for c in range(n.shape[1])
    )


def test_quantize_symbols_and_scales(case: Case) -> None:
    symbols, scales = codec.quantize(case.rows(), case.bins)
    np.testing.assert_array_equal(symbols.numpy(), case.symbols)
    np.testing.assert_array_equal(scales.numpy(), case.scales)


@pytest.mark.parametrize(
    "numpy_case", [p for p in CASES if "bf16" not in p.stem], ids=lambda p: p.stem
)
def test_quantize_numpy_input(numpy_case) -> None:
    """numpy has no bfloat16, so only the fp16 and fp32 cases go in as numpy arrays."""
    case = Case(numpy_case)
    symbols, _ = codec.quantize(case.rows().numpy(), case.bins)
    np.testing.assert_array_equal(symbols, case.symbols)


def test_calculate_cdf(case: Case) -> None:
    cdf = codec.calculate_cdf(torch.from_numpy(case.symbols), max(case.bins))
    assert cdf.dtype == torch.int16
    np.testing.assert_array_equal(cdf.numpy(), case.cdf)


def test_encode_streams_and_lengths(case: Case) -> None:
    streams, lengths = codec.encode_streams(
        torch.from_numpy(case.cdf), torch.from_numpy(case.symbols)
    )
    np.testing.assert_array_equal(lengths.numpy(), case.lengths)
    assert _packed(streams, lengths) == case.streams


def test_encode_with_exact_capacity(case: Case) -> None:
    """A slot exactly as large as the longest stream is enough (no slack needed)."""
    cap = int(case.lengths.max())
    out = torch.full((2 * case.L, case.C, cap), 0xAB, dtype=torch.uint8)
    lengths = torch.zeros((2 * case.L, case.C), dtype=torch.int32)
    codec.encode_fast_new(torch.from_numpy(case.cdf), torch.from_numpy(case.symbols), out, lengths)
    assert _packed(out, lengths) == case.streams


def test_decode_fast_new(case: Case) -> None:
    cap = int(case.lengths.max()) + 3
    buf = np.zeros((2 * case.L, case.C, cap), dtype=np.uint8)
    ends = np.cumsum(case.lengths.ravel())
    for i, (end, n) in enumerate(zip(ends, case.lengths.ravel(), strict=True)):
        buf.reshape(-1, cap)[i, :n] = np.frombuffer(case.streams[end - n : end], dtype=np.uint8)
    buf[..., -3:] = 0xFF  # bytes past each stream's length must read as zero, not as these
    out = np.zeros((2 * case.L, case.T, case.C), dtype=np.uint8)
    codec.decode_fast_new(case.cdf, buf, case.lengths, out)
    np.testing.assert_array_equal(out, case.symbols)


@pytest.mark.parametrize("prefix_dtype", ["int32", "int64"])
def test_decode_fast_prefsum(case: Case, prefix_dtype: str) -> None:
    ends = np.cumsum(case.lengths.ravel()).astype(prefix_dtype).reshape(case.lengths.shape)
    out = torch.zeros((2 * case.L, case.T, case.C), dtype=torch.int8)  # LMCache passes int8 too
    codec.decode_fast_prefsum(
        torch.from_numpy(case.cdf),
        torch.frombuffer(bytearray(case.streams), dtype=torch.uint8),
        torch.from_numpy(ends),
        out,
    )
    np.testing.assert_array_equal(out.numpy().view(np.uint8), case.symbols)


def test_reference_codec_agrees(case: Case) -> None:
    """The pure-Python oracle used by the other tests is itself LMCache-exact."""
    x = case.rows().float().numpy()
    symbols, scales = ref.quantize(x, case.bins)
    np.testing.assert_array_equal(symbols, case.symbols)
    np.testing.assert_array_equal(scales, case.scales)
    np.testing.assert_array_equal(
        ref.calculate_cdf(case.symbols, max(case.bins)), case.cdf.view(np.uint16)
    )
    if case.T * case.C * 2 * case.L <= 70000:
        streams, lengths = ref.encode(case.cdf.view(np.uint16), case.symbols)
        np.testing.assert_array_equal(lengths, case.lengths)
        assert b"".join(streams) == case.streams


def test_container_carries_lmcache_streams(case: Case) -> None:
    """With one chunk, the container's payload is LMCache's byte stream and its counts give
    LMCache's CDF tables."""
    kv = case.kv.reshape(2, case.L, case.T, case.C)
    blob = codec.encode(kv, case.key_bins, case.value_bins, chunk_tokens=max(case.T, 1))
    info = ref.parse_container(blob)
    (chunk,) = info["chunks"]
    assert chunk["payload"] == case.streams
    assert chunk["lengths"] == case.lengths.ravel().tolist()
    np.testing.assert_array_equal(chunk["scales"], case.scales)
    for i in range(0, 2 * case.L * case.C, 7):
        table = ref.cdf_from_counts(chunk["counts"][i], info["num_bins"], case.T)
        np.testing.assert_array_equal(
            table, case.cdf.view(np.uint16).reshape(-1, info["num_bins"] + 1)[i]
        )
    decoded = codec.decode(blob)
    expect = ref.dequantize(case.symbols, case.scales, case.bins).reshape(2, case.L, case.T, case.C)
    np.testing.assert_array_equal(
        decoded.float().numpy(), torch.from_numpy(expect).to(kv.dtype).float().numpy()
    )
