"""The rotated method's low-level ops on the CPU (kvx.codec.quantize / dequantize with
method="rotated"; kvx_codec_quantize_rotated / kvx_codec_dequantize_rotated): bit for bit the
numpy reference (kvx.reference_rotated) and what the container stores, the method's limit, and
argument checks that name the argument and write nothing. The GPU backend against these is in
tests/test_gpu_codec.py."""

from __future__ import annotations

import kvx
import numpy as np
import pytest
from kvx import codec
from kvx import reference_codec as ref
from kvx import reference_rotated as rr
from kvx._native import ffi, lib

torch = pytest.importorskip("torch")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BINS = [16, 4, 256]


def _x(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Values with a few outlier channels, as keys have."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    x[..., :: max(1, shape[-1] // 3)] *= 30.0
    return x.to(dtype)


def narrow(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The reference's float32 result rounded to dtype as the op rounds it, as float32."""
    if dtype == torch.bfloat16:
        return rr.narrow_bf16(values)
    if dtype == torch.float16:
        return rr.narrow_f16(values).astype(np.float32)
    return values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_size", [1, 2, 4, 8, 16, 32, 64, 128])
@pytest.mark.parametrize("tokens", [1, 7])
def test_matches_the_reference_bit_for_bit(dtype, head_size, tokens):
    x = _x((3, tokens, 2 * max(head_size, 16)), dtype, seed=head_size)
    symbols, scales = codec.quantize(x, BINS, method="rotated", head_size=head_size)
    want_symbols, want_scales = rr.quantize(x.float().numpy(), head_size, BINS)
    np.testing.assert_array_equal(symbols.numpy(), want_symbols)
    np.testing.assert_array_equal(scales.numpy(), want_scales)
    back = codec.dequantize(symbols, scales, BINS, dtype, method="rotated", head_size=head_size)
    assert back.dtype == dtype and back.shape == x.shape
    want = narrow(rr.dequantize(want_symbols, want_scales, head_size, BINS), dtype)
    np.testing.assert_array_equal(back.float().numpy(), want)


def test_numpy_in_numpy_out_and_strided_tokens():
    x = _x((2, 10, 32), torch.float32, seed=3).numpy()
    view = x[:, ::3]  # token stride 3 * 32
    symbols, scales = codec.quantize(view, [12, 6], method="rotated", head_size=16)
    assert isinstance(symbols, np.ndarray) and symbols.shape == (2, 4, 32)
    want_symbols, want_scales = rr.quantize(np.ascontiguousarray(view), 16, [12, 6])
    np.testing.assert_array_equal(symbols, want_symbols)
    np.testing.assert_array_equal(scales, want_scales)
    back = codec.dequantize(symbols, scales, [12, 6], np.float16, method="rotated", head_size=16)
    assert back.dtype == np.float16
    np.testing.assert_array_equal(
        back, rr.narrow_f16(rr.dequantize(want_symbols, want_scales, 16, [12, 6]))
    )


def test_zero_tokens_and_all_zero_tokens():
    symbols, scales = codec.quantize(torch.zeros(2, 0, 16), [8, 8], method="rotated", head_size=8)
    assert symbols.shape == (2, 0, 16) and scales.shape == (2, 0)
    out = codec.dequantize(symbols, scales, [8, 8], method="rotated", head_size=8)
    assert out.shape == (2, 0, 16)
    x = _x((2, 5, 16), torch.float32)
    x[1, 2] = 0.0
    x[0, 4] = -0.0
    symbols, scales = codec.quantize(x, [8, 10], method="rotated", head_size=8)
    assert scales[1, 2] == 0 and scales[0, 4] == 0
    assert (symbols[1, 2] == 4).all() and (symbols[0, 4] == 3).all()  # MAX = bins / 2 - 1
    back = codec.dequantize(symbols, scales, [8, 10], method="rotated", head_size=8)
    assert not back[1, 2].any() and not back[0, 4].any()


def _limit(head_size: int) -> np.float32:
    return np.float32(3.4028234663852886e38) / np.float32(2 * head_size)


def test_the_limit_is_the_containers():
    """Values up to the limit are taken unless the token's scale would round up past it: one
    value at the limit spreads to small coefficients (taken), a head full of it keeps it as one
    coefficient, whose bfloat16 scale is above the limit (refused, as the container refuses)."""
    limit = _limit(8)
    alone = np.zeros((1, 1, 8), np.float32)
    alone[0, 0, 3] = limit
    _, scales = codec.quantize(alone, [16], method="rotated", head_size=8)
    assert scales[0, 0] == rr.bf16_ceil(np.float32(limit / 8))
    full = np.full((1, 2, 8), limit, np.float32)
    full[0, 0] = 1.0
    with pytest.raises(kvx.InvalidArgumentError, match="row 0 token 1"):
        codec.quantize(full, [16], method="rotated", head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="magnitude"):
        codec.encode(full.reshape(1, 1, 2, 8), key_bins=16, method="rotated")
    largest_bf16 = np.array(limit).view(np.uint32) & np.uint32(0xFFFF0000)  # truncated to bf16
    largest_bf16 = largest_bf16.view(np.float32)
    assert largest_bf16 < limit < rr.bf16_ceil(np.array([limit]))[0]
    full[0, 1] = largest_bf16
    _, scales = codec.quantize(full, [16], method="rotated", head_size=8)
    assert scales[0, 1] == largest_bf16  # the largest scale there is


@pytest.mark.parametrize(
    "bad",
    [np.inf, -np.inf, np.nan, "above"],
    ids=["inf", "-inf", "nan", "above"],
)
def test_refused_values_name_the_token(bad):
    x = _x((2, 5, 16), torch.float32).numpy()
    x[1, 3, 5] = _limit(4) * np.float32(1.001) if bad == "above" else bad
    with pytest.raises(kvx.InvalidArgumentError, match=r"^x: .*row 1 token 3 \[KVX_ERR"):
        codec.quantize(x, [16, 16], method="rotated", head_size=4)
    # CacheGen takes large finite values
    if bad == "above":
        codec.quantize(x, [16, 16])


def _blob_symbols(blob: bytes, rows: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The symbols and scales a container stores, read with the reference parser: each chunk's
    streams decoded with the CDF table each stream's counts (or, where a container stores one,
    its Gaussian model) stand for."""
    info = ref.parse_container(blob)
    nb = info["num_bins"]
    symbols, scales = [], []
    for chunk in info["chunks"]:
        t = chunk["tokens"]
        models = chunk.get("models") or [None] * len(chunk["counts"])
        tables = []
        for i, (counts, model) in enumerate(zip(chunk["counts"], models, strict=True)):
            top = 2 * (info["bins"][i // channels] // 2 - 1)
            if model is None:
                tables.append(ref.cdf_from_counts(counts, nb, t))
            else:
                tables.append(rr.model_cdf(*model, top, nb))
        cdf = np.stack(tables).reshape(rows, channels, nb + 1)
        ends = np.cumsum(chunk["lengths"]).reshape(rows, channels)
        out = np.empty((rows, t, channels), np.uint8)
        payload = np.frombuffer(chunk["payload"], np.uint8)
        codec.decode_fast_prefsum(cdf, payload, ends, out)
        symbols.append(out)
        scales.append(chunk["scales"])
    return np.concatenate(symbols, axis=1), np.concatenate(scales, axis=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equals_what_the_container_stores(dtype):
    layers, tokens, heads, head_size = 3, 21, 2, 32
    kv = _x((2, layers, tokens, heads, head_size), dtype, seed=7)
    key_bins, value_bins = [10, 12, 12], [6, 6, 8]
    blob = codec.encode(
        kv, key_bins=key_bins, value_bins=value_bins, method="rotated", chunk_tokens=8
    )
    rows, channels = 2 * layers, heads * head_size
    stored_symbols, stored_scales = _blob_symbols(blob, rows, channels)
    x = kv.reshape(rows, tokens, channels)
    bins = key_bins + value_bins
    symbols, scales = codec.quantize(x, bins, method="rotated", head_size=head_size)
    np.testing.assert_array_equal(scales.numpy(), stored_scales)
    np.testing.assert_array_equal(symbols.numpy(), stored_symbols)
    back = codec.dequantize(symbols, scales, bins, dtype, method="rotated", head_size=head_size)
    assert torch.equal(back, codec.decode(blob).reshape(rows, tokens, channels))


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("head_size", [0, -8, 3, 12, 24, 65536 * 2, 48 * 2])
def test_bad_head_size_is_named(head_size):
    x = torch.zeros(1, 2, 48)
    with pytest.raises(
        kvx.InvalidArgumentError,
        match=r"head_size: expected a power of two 1\.\.65536 dividing num_channels \(48\)",
    ):
        codec.quantize(x, [16], method="rotated", head_size=head_size)
    symbols = torch.zeros(1, 2, 48, dtype=torch.uint8)
    with pytest.raises(kvx.InvalidArgumentError, match="head_size: expected a power of two"):
        codec.dequantize(symbols, torch.ones(1, 2), [16], method="rotated", head_size=head_size)


def test_method_and_head_size_go_together():
    x = torch.zeros(1, 2, 16)
    with pytest.raises(kvx.InvalidArgumentError, match="head_size: expected an int"):
        codec.quantize(x, [16], method="rotated")
    with pytest.raises(kvx.InvalidArgumentError, match="head_size: expected an int"):
        codec.quantize(x, [16], method="rotated", head_size=8.0)
    with pytest.raises(kvx.InvalidArgumentError, match="head_size: expected None"):
        codec.quantize(x, [16], head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="method: expected one of"):
        codec.quantize(x, [16], method="hadamard", head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="head_size: expected None"):
        codec.dequantize(
            torch.zeros(1, 2, 16, dtype=torch.uint8), torch.ones(1, 2), [16], head_size=8
        )


def test_other_arguments_are_named():
    x = torch.zeros(2, 3, 16)
    with pytest.raises(kvx.InvalidArgumentError, match=r"bins\[1\]: expected 4\.\.256"):
        codec.quantize(x, [16, 2], method="rotated", head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="x: expected float32"):
        codec.quantize(x.to(torch.int32), [16, 16], method="rotated", head_size=8)
    symbols, scales = codec.quantize(x, [16, 16], method="rotated", head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="scales: expected shape"):
        codec.dequantize(symbols, scales[:1], [16, 16], method="rotated", head_size=8)
    with pytest.raises(kvx.InvalidArgumentError, match="dtype: expected float32"):
        codec.dequantize(symbols, scales, [16, 16], torch.int32, method="rotated", head_size=8)


class _Call:
    """kvx_codec_quantize_rotated through the C ABI, outputs pre-filled with a pattern."""

    def __init__(self, rows: int = 2, tokens: int = 3, channels: int = 16) -> None:
        self.shape = (rows, tokens, channels)
        self.x = np.ones(self.shape, np.float32)
        self.bins = np.full(rows, 16, np.int32)
        self.symbols = np.full(self.shape, 0xAB, np.uint8)
        self.scales = np.full(self.shape[:2], -7.0, np.float32)

    def __call__(self, **change) -> int:
        rows, tokens, channels = self.shape
        args = dict(
            x=ffi.from_buffer(self.x),
            dtype=lib.KVX_DTYPE_FLOAT32,
            num_rows=rows,
            num_tokens=tokens,
            num_channels=channels,
            head_size=8,
            row_stride=tokens * channels,
            token_stride=channels,
            bins=ffi.cast("int32_t *", ffi.from_buffer(self.bins)),
            symbols=ffi.cast("uint8_t *", ffi.from_buffer(self.symbols)),
            scales=ffi.cast("float *", ffi.from_buffer(self.scales)),
            stream=ffi.NULL,
        )
        args.update(change)
        return lib.kvx_codec_quantize_rotated(*args.values())

    def untouched(self) -> bool:
        return bool((self.symbols == 0xAB).all() and (self.scales == -7.0).all())


@pytest.mark.parametrize(
    "change,named",
    [
        (dict(head_size=6), "head_size"),
        (dict(head_size=32), "head_size"),
        (dict(dtype=7), "dtype"),
        (dict(num_rows=0), "num_rows"),
        (dict(num_tokens=-1), "num_tokens"),
        (dict(num_channels=0), "num_channels"),
        (dict(row_stride=-1), "x"),
        (dict(x=ffi.NULL), "x"),
        (dict(bins=ffi.NULL), "bins"),
        (dict(symbols=ffi.NULL), "symbols"),
        (dict(scales=ffi.NULL), "scales"),
    ],
)
def test_c_abi_refuses_bad_arguments_writing_nothing(change, named):
    call = _Call()
    assert call(**change) == lib.KVX_ERR_INVALID_ARGUMENT
    assert ffi.string(lib.kvx_last_error()).decode().startswith(f"{named}"), named
    assert call.untouched()


def test_c_abi_refuses_a_bad_token_writing_nothing():
    call = _Call()
    call.x[1, 2, 9] = np.nan
    assert call() == lib.KVX_ERR_INVALID_ARGUMENT
    assert "row 1 token 2" in ffi.string(lib.kvx_last_error()).decode()
    assert call.untouched()
    call.x[1, 2, 9] = 1.0
    assert call() == lib.KVX_OK and not call.untouched()


def test_c_abi_dequantize_writes_the_strided_view():
    symbols = np.random.default_rng(0).integers(0, 15, (2, 3, 16), dtype=np.uint8)
    scales = np.full((2, 3), 0.5, np.float32)
    out = np.full((2, 5, 16), 9.0, np.float32)  # tokens 0, 2, 4 of each row
    bins = np.array([16, 16], np.int32)
    rc = lib.kvx_codec_dequantize_rotated(
        ffi.cast("uint8_t *", ffi.from_buffer(symbols)),
        ffi.cast("float *", ffi.from_buffer(scales)),
        ffi.cast("int32_t *", ffi.from_buffer(bins)),
        2,
        3,
        16,
        4,
        lib.KVX_DTYPE_FLOAT32,
        ffi.from_buffer(out),
        5 * 16,
        2 * 16,
        ffi.NULL,
    )
    assert rc == lib.KVX_OK, ffi.string(lib.kvx_last_error())
    np.testing.assert_array_equal(out[:, ::2], rr.dequantize(symbols, scales, 4, [16, 16]))
    assert (out[:, 1::2] == 9.0).all()
