"""The case tables of the conformance test (tests/test_conformance.py) and the runner of every case
on the CPU backend of this process.

A case is one call of one operation on fixed inputs, built from a seed, so any process builds the
same inputs. Cases are grouped (a paged layout, a golden vector, a pairing and dtype, ...): the
test runs one group on one backend and names every case that differs. What each backend must give
is what the library promises (docs/design.md, docs/rope-cpu.md):

- transfer: the bytes of ``kvx.reference.transfer``, padding included, on every backend;
- codec: the CPU backend's bytes (status, symbols, scales, tables, streams with their slack,
  lengths, container blobs), on every backend and every CPU instruction-set variant;
- RoPE: the CPU backend's bits on every CPU variant (rope-cpu.md: "every variant gives the same
  bits"; the cases keep to one NaN per pair, where payloads are defined) and on the GPU kernels
  (same float32 operations in the same order, no FMA; a GPU does not carry NaN payloads through
  arithmetic, so there NaNs need only be NaNs); the plain-torch fallback that runs where a backend
  has no RoPE kernel promises float32 arithmetic with one rounding, not the kernels' bits: its
  rotated dims are checked against the float64 oracle with that bound, the others bit for bit;
- raw copies: the CPU backend's bytes, between host and device memory either way and within a
  device.

Run as a script (``python conformance_cases.py``), it prints a JSON object with the variant that
ran (``kvx.cpu_kernels()``) and a digest of every case's result on this process's CPU backend:
the test runs it under each ``KVX_CPU_ISA`` variant (chosen once per process) and compares.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kvx
import transfer_cases as tc
from kvx import codec, layouts, rope

Outputs = dict[str, np.ndarray]
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def raw(x: torch.Tensor) -> np.ndarray:
    """The bytes of a CPU tensor as a flat uint8 array (bf16 included)."""
    return x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().copy()


def encoded(streams: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The bytes of encoded streams [layers, channels, capacity] that carry data, as a flat
    uint8 array: each slot's bytes past its stream's length are unspecified (the CPU's encoder
    stores whole words and may zero up to 3 of them; a GPU's leaves them as they were), so they
    read as zero here."""
    out = np.array(streams, dtype=np.uint8, copy=True)
    lengths = np.asarray(lengths)
    past = np.arange(out.shape[-1]) >= lengths[..., None]
    out[np.broadcast_to(past, out.shape)] = 0
    return out.reshape(-1)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[1]


def digest(outputs: Outputs) -> str:
    h = hashlib.sha256()
    for name in sorted(outputs):
        data = np.ascontiguousarray(outputs[name]).view(np.uint8).tobytes()
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()


def first_difference(expected: Outputs, got: Outputs) -> str | None:
    """None when every output has the same bytes, else where the first difference is."""
    if sorted(expected) != sorted(got):
        return f"outputs {sorted(got)}, expected {sorted(expected)}"
    for name in sorted(expected):
        a = np.ascontiguousarray(expected[name]).view(np.uint8).reshape(-1)
        b = np.ascontiguousarray(got[name]).view(np.uint8).reshape(-1)
        if a.shape != b.shape:
            return f"{name}: {b.size} bytes, expected {a.size}"
        where = np.flatnonzero(a != b)
        if where.size:
            i = int(where[0])
            return (
                f"{name}: {where.size} bytes differ, first at byte {i} ({b[i]:#04x}, "
                f"expected {a[i]:#04x})"
            )
    return None


# ================================================================ transfer


@dataclass(frozen=True)
class TransferCase:
    """One transfer (store = paged -> dense, load = dense -> paged) of `tokens` tokens in random
    blocks with -1 padding; `pad_axis` allocates that axis of the paged tensors larger (padded
    strides), `token_gap` spaces the dense rows apart."""

    group: str
    name: str
    layout: str
    geometry: tc.Geometry
    dtype: torch.dtype
    tokens: int
    direction: str
    seed: int
    pad_axis: str | None = None
    token_gap: int = 0
    fmt: str | None = None

    def inputs(self) -> tuple[Any, torch.Tensor, torch.Tensor, str]:
        """(paged, dense, slots, dense format), fresh and identical on every call."""
        gen = torch.Generator().manual_seed(self.seed)
        fmt = self.fmt or ("MLA_1LTD" if tc.num_kv(self.layout) == 1 else "KV_2LTD")
        paged = tc.make_paged(self.layout, self.geometry, self.dtype, gen, self.pad_axis)
        g = self.geometry
        dense = tc.make_dense(self.layout, g, self.tokens, self.dtype, gen, fmt, self.token_gap)
        slots = tc.make_slots(
            tc.capacity(self.layout, g), g.block_size, self.tokens, np.random.default_rng(self.seed)
        )
        return paged, dense, slots, fmt


def paged_tensors(paged: Any) -> list[torch.Tensor]:
    if isinstance(paged, torch.Tensor):
        return [paged]
    return [t for p in paged for t in paged_tensors(p)]


def transfer_outputs(paged: Any, dense: torch.Tensor) -> Outputs:
    """Every byte of both sides, padding included (a stray write anywhere shows)."""
    out = {"dense": raw(tc.whole(dense))}
    for i, t in enumerate(paged_tensors(paged)):
        out[f"paged[{i}]"] = raw(tc.whole(t))
    return out


# 16-block runs of 512-byte rows (in bf16): the GPU kernels' vector paths
WIDE = tc.Geometry(layers=2, blocks=16, block_size=16, heads=4, head_size=64)


def _transfer_cases() -> list[TransferCase]:
    cases: list[TransferCase] = []
    small = tc.Geometry(layers=3, blocks=9, block_size=4, heads=3, head_size=8)
    padded = tc.Geometry(layers=2, blocks=6, block_size=4, heads=2, head_size=6)
    for layout in sorted(layouts.PAGED_LAYOUTS):

        def add(
            name: str,
            g: tc.Geometry,
            dtype: torch.dtype,
            tokens: int,
            seed: int,
            *,
            layout: str = layout,
            **kw: Any,
        ) -> None:
            for direction in ("store", "load"):
                cases.append(
                    TransferCase(
                        layout,
                        f"{name}-{direction}",
                        layout,
                        g,
                        dtype,
                        tokens,
                        direction,
                        seed,
                        **kw,
                    )
                )

        for dtype in tc.DTYPES:  # every element size, random bits (NaNs too)
            add(str(dtype).split(".")[1], small, dtype, 21, 1)
        odd = [(66, torch.bfloat16), (1, torch.float32), (7, torch.uint8), (3, torch.float64)]
        for head_size, dtype in odd:  # odd rows: no tail may be dropped
            add(f"head{head_size}", tc.Geometry(2, 7, 5, 3, head_size), dtype, 17, 2)
        for axis in ("token", "head", "block", "dim"):
            add(f"pad-{axis}", padded, torch.float16, 13, 3, pad_axis=axis)
        add("gapped-dense", padded, torch.bfloat16, 15, 4, token_gap=5)
        add(
            "blocks16-pad-block",
            tc.Geometry(2, 12, 16, 2, 16),
            torch.float32,
            70,
            11,
            pad_axis="block",
        )
        add("wide-rows", WIDE, torch.bfloat16, 120, 0)
        if layout in ("vllm_nhd", "flashinfer_hnd", "sglang_mha", "kv_tuples"):
            for fmt in ("KV_T2D", "KV_2TD"):
                add(f"one-layer-{fmt}", tc.Geometry(1, 5, 8, 4, 16), torch.bfloat16, 19, 5, fmt=fmt)
        if layout == "vllm_nhd":
            for dtype in (torch.uint8, torch.float16, torch.float32, torch.float64):
                for axis in (None, "dim", "head"):
                    add(f"wide-rows-{_name(dtype)}-pad-{axis}", WIDE, dtype, 120, 0, pad_axis=axis)
            # enough work for the thread pool to split it
            add("threads", tc.Geometry(2, 130, 16, 4, 128), torch.bfloat16, 2000, 6)
    return cases


TRANSFER_CASES = _transfer_cases()


def expected_transfer(case: TransferCase) -> Outputs:
    """What every backend must give: kvx.reference.transfer on the same inputs."""
    paged, dense, slots, fmt = case.inputs()
    kvx.reference.transfer(
        paged, dense, slots, direction=case.direction, layout=case.layout, dense_format=fmt
    )
    return transfer_outputs(paged, dense)


def cpu_transfer(case: TransferCase) -> Outputs:
    paged, dense, slots, fmt = case.inputs()
    kvx.transfer(
        paged, dense, slots, direction=case.direction, layout=case.layout, dense_format=fmt
    )
    return transfer_outputs(paged, dense)


# ================================================================ codec


@dataclass(frozen=True)
class CodecCase:
    """One call of a codec operation; `make` builds its inputs (numpy arrays and ints).

    Operations and inputs:
    - quantize: x (raw buffer), dtype, shape [rows, T, C], strides (row, token), offset, bins;
    - dequantize: symbols, scales, bins, dtype, out (raw buffer, its initial bytes), strides;
    - calculate_cdf: symbols, num_bins;
    - encode: cdf, symbols, capacity (streams start as 0xAB: the slack must survive);
    - decode: cdf, streams [L, C, capacity], lengths, tokens;
    - decode_prefsum: cdf, data (streams back to back), ends (int32 or int64), shape;
    - container: kv (raw), dtype, shape [2, L, T, C], key_bins, value_bins, chunk_tokens, method,
      head_size."""

    group: str
    name: str
    op: str
    make: Callable[[], dict[str, Any]] = field(compare=False)
    # only through the C ABI: kvx.codec.dequantize returns a new contiguous array, so an output
    # with gaps between rows and tokens is written by kvx_codec_dequantize alone
    abi_only: bool = False


def _random_kv(
    gen: torch.Generator, rows: int, tokens: int, channels: int, dtype: torch.dtype
) -> torch.Tensor:
    """Values over many magnitudes (finite in float16 too), a zero token and tiny (denormal in
    float32) values."""
    scale = torch.exp(3 * torch.randn((rows, tokens, 1), generator=gen))
    x = (torch.randn((rows, tokens, channels), generator=gen) * scale).clamp(-6e4, 6e4)
    if tokens > 2:
        x[:, 1] = 0.0
        x[:, 2, ::3] = 1e-40 if dtype == torch.float32 else 3e-6
    return x.to(dtype)


def _quantize_inputs(
    x: torch.Tensor,
    bins: list[int],
    shape: tuple[int, int, int] | None = None,
    strides: tuple[int, int] | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    rows, tokens, channels = shape or tuple(x.shape)
    return {
        "x": raw(x),
        "dtype": _name(x.dtype),
        "shape": (rows, tokens, channels),
        "strides": strides or (tokens * channels, channels),
        "offset": offset,
        "bins": list(bins),
    }


def _golden_cases() -> list[CodecCase]:
    from test_codec_golden import CASES, Case

    cases = []
    for path in CASES:
        group = f"golden-{path.stem}"
        case = lru_cache(maxsize=None)(lambda p=path: Case(p))

        def slots(c: Any) -> dict[str, Any]:
            cap = int(c.lengths.max()) + 3
            buf = np.full((2 * c.L, c.C, cap), 0xFF, dtype=np.uint8)  # past a length: reads as zero
            ends = np.cumsum(c.lengths.ravel())
            for i, (end, n) in enumerate(zip(ends, c.lengths.ravel(), strict=True)):
                buf.reshape(-1, cap)[i, :n] = np.frombuffer(
                    c.streams[end - n : end], dtype=np.uint8
                )
            return {
                "cdf": c.cdf.view(np.uint16),
                "streams": buf,
                "lengths": c.lengths.astype(np.int32),
                "tokens": c.T,
            }

        def prefsum(c: Any, dtype: Any) -> dict[str, Any]:
            return {
                "cdf": c.cdf.view(np.uint16),
                "data": np.frombuffer(c.streams, np.uint8).copy(),
                "ends": np.cumsum(c.lengths.ravel()).astype(dtype).reshape(c.lengths.shape),
                "shape": (2 * c.L, c.T, c.C),
            }

        cases += [
            CodecCase(
                group, "quantize", "quantize", lambda c=case: _quantize_inputs(c().rows(), c().bins)
            ),
            CodecCase(
                group,
                "calculate_cdf",
                "calculate_cdf",
                lambda c=case: {"symbols": c().symbols, "num_bins": max(c().bins)},
            ),
            CodecCase(
                group,
                "encode",
                "encode",
                lambda c=case: {
                    "cdf": c().cdf.view(np.uint16),
                    "symbols": c().symbols,
                    "capacity": int(c().lengths.max()) + 5,
                },
            ),
            CodecCase(group, "decode", "decode", lambda c=case: slots(c())),
            CodecCase(
                group,
                "decode_prefsum-int32",
                "decode_prefsum",
                lambda c=case: prefsum(c(), np.int32),
            ),
            CodecCase(
                group,
                "decode_prefsum-int64",
                "decode_prefsum",
                lambda c=case: prefsum(c(), np.int64),
            ),
            CodecCase(
                group,
                "dequantize",
                "dequantize",
                lambda c=case: _dequantize_inputs(c().symbols, c().scales, c().bins, c().dtype),
            ),
        ]
    return cases


def _dequantize_inputs(
    symbols: np.ndarray,
    scales: np.ndarray,
    bins: list[int],
    dtype: str,
    out: np.ndarray | None = None,
    strides: tuple[int, int] | None = None,
) -> dict[str, Any]:
    rows, tokens, channels = symbols.shape
    if out is None:
        size = 4 if dtype == "float32" else 2
        out = np.zeros(rows * tokens * channels * size, np.uint8)
    return {
        "symbols": np.ascontiguousarray(symbols, np.uint8),
        "scales": np.ascontiguousarray(scales, np.float32),
        "bins": list(bins),
        "dtype": dtype,
        "out": out,
        "strides": strides or (tokens * channels, channels),
    }


def _quantizer_cases() -> list[CodecCase]:
    cases = []
    for dtype in TORCH_DTYPES.values():
        group = f"quantizer-{_name(dtype)}"
        # (1100, 3, 7): more rows than one GPU launch carries bins for
        for shape in [(3, 37, 5), (2, 64, 129), (1, 1, 1), (4, 300, 1024), (1100, 3, 7)]:

            def quantize(
                shape: tuple[int, int, int] = shape, dtype: torch.dtype = dtype
            ) -> dict[str, Any]:
                gen = torch.Generator().manual_seed(sum(shape))
                x = _random_kv(gen, *shape, dtype)
                bins = torch.randint(4, 257, (shape[0],), generator=gen).tolist()
                return _quantize_inputs(x, bins)

            def dequantize(
                shape: tuple[int, int, int] = shape, dtype: torch.dtype = dtype
            ) -> dict[str, Any]:
                gen = torch.Generator().manual_seed(sum(shape) + 1)
                rows, tokens, _ = shape
                symbols = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)  # any byte
                scales = torch.exp(4 * torch.randn((rows, tokens), generator=gen))
                scales[:, :1] = 0.0
                bins = torch.randint(4, 257, (rows,), generator=gen).tolist()
                return _dequantize_inputs(symbols.numpy(), scales.numpy(), bins, _name(dtype))

            tag = "x".join(map(str, shape))
            cases += [
                CodecCase(group, f"quantize-{tag}", "quantize", quantize),
                CodecCase(group, f"dequantize-{tag}", "dequantize", dequantize),
            ]

    def tiny(dtype: torch.dtype) -> dict[str, Any]:
        # MAX / scale overflows to inf below ~4e-37: a GPU's float-to-int conversion saturates
        # where the CPU's gives INT_MIN; every backend must give the CPU's result
        x = torch.tensor(
            [[[1e-38, -1e-38, 0.0, 5e-39, 1e-45], [3e-37, -3e-37, 0.0, 1e-37, 2e-37]]]
        ).to(dtype)
        return _quantize_inputs(x, [256])

    def strided_view() -> dict[str, Any]:
        # the view [::2, 3:, 10:74]
        base = _random_kv(torch.Generator().manual_seed(5), 4, 40, 96, torch.bfloat16)
        return _quantize_inputs(
            base, [16, 32], shape=(2, 37, 64), strides=(2 * 40 * 96, 96), offset=3 * 96 + 10
        )

    # the K rows of a [T, 2, L, C + pad] buffer: gaps between rows and between tokens
    L, T, C, pad = 3, 11, 24, 5
    k_rows = {"shape": (L, T, C), "strides": (C + pad, 2 * L * (C + pad))}

    def k_rows_quantize() -> dict[str, Any]:
        buf = np.random.default_rng(5).standard_normal((T, 2, L, C + pad)).astype(np.float32)
        return _quantize_inputs(torch.from_numpy(buf), [16, 32, 8], **k_rows)

    def k_rows_dequantize() -> dict[str, Any]:
        rng = np.random.default_rng(6)
        symbols = rng.integers(0, 32, (L, T, C), dtype=np.uint8)
        scales = np.abs(rng.standard_normal((L, T))).astype(np.float32)
        # the gaps keep their 7.5
        out = np.full((T, 2, L, C + pad), 7.5, np.float32).view(np.uint8).reshape(-1)
        return _dequantize_inputs(symbols, scales, [16, 32, 8], "float32", out, k_rows["strides"])

    cases += [
        CodecCase(
            "quantizer-edges", "tiny-scales-float32", "quantize", lambda: tiny(torch.float32)
        ),
        CodecCase(
            "quantizer-edges", "tiny-scales-bfloat16", "quantize", lambda: tiny(torch.bfloat16)
        ),
        CodecCase("quantizer-edges", "strided-view-bfloat16", "quantize", strided_view),
        CodecCase("quantizer-edges", "k-rows-of-t2lc", "quantize", k_rows_quantize),
        CodecCase(
            "dequantize-gapped-out",
            "k-rows-of-t2lc",
            "dequantize",
            k_rows_dequantize,
            abi_only=True,
        ),
    ]
    return cases


def pending_bursts(
    layers: int, tokens: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Symbols [layers, tokens, channels] and tables [layers, channels, 4] (uint16) whose streams
    owe long runs of pending bits: symbol 1 holds the middle half of the range, so each one
    straddles the middle, adds a pending bit and emits nothing, until a 0 or a 2 emits the whole
    run at once. Runs of up to 3000 tokens make bursts of hundreds of bytes, more than a GPU
    encoder stages per stream; every fifth channel is random instead."""
    rng = np.random.default_rng(seed)
    symbols = np.ones((layers, tokens, channels), np.uint8)
    for l in range(layers):
        for c in range(channels):
            if c % 5 == 4:
                symbols[l, :, c] = rng.integers(0, 3, tokens)
                continue
            longest = (2, 40, 700, 3000)[(c + l) % 4]
            edges = np.cumsum(rng.integers(1, longest + 1, tokens))
            edges = edges[edges < tokens]
            symbols[l, edges, c] = rng.choice(np.array([0, 2], np.uint8), edges.size)
    cdf = np.tile(np.array([0, 16384, 49152, 65535], np.uint16), (layers, channels, 1))
    return symbols, cdf


def _coder_cases() -> list[CodecCase]:
    cases = []
    for shape, nb in [
        ((2, 37, 7), 8),
        ((3, 256, 1024), 32),
        ((1, 1000, 3), 256),
        ((2, 300, 40), 256),
        ((2, 0, 4), 16),
        ((1, 1, 1), 2),
    ]:
        group = f"coder-{'x'.join(map(str, shape))}-bins{nb}"

        @cache
        def made(shape: tuple[int, int, int] = shape, nb: int = nb) -> dict[str, Any]:
            """Symbols clustered per channel, their tables and streams (from this process's CPU)."""
            gen = torch.Generator().manual_seed(nb)
            centre = torch.randint(0, nb, (1, 1, shape[2]), generator=gen)
            spread = (centre + 2 * torch.randn(shape, generator=gen)).round()
            symbols = spread.clamp(0, nb - 1).to(torch.uint8)
            cdf = codec.calculate_cdf(symbols, nb)
            streams, lengths = codec.encode_streams(cdf, symbols)
            return {
                "symbols": symbols.numpy(),
                "cdf": cdf.numpy().view(np.uint16),
                "streams": streams.numpy(),
                "lengths": lengths.numpy(),
            }

        def prefsum(m: dict[str, Any], shape: tuple[int, int, int]) -> dict[str, Any]:
            data = b"".join(
                m["streams"][l, c, : m["lengths"][l, c]].tobytes()
                for l in range(shape[0])
                for c in range(shape[2])
            )
            return {
                "cdf": m["cdf"],
                "data": np.frombuffer(data, np.uint8).copy(),
                "ends": np.cumsum(m["lengths"]).astype(np.int64).reshape(m["lengths"].shape),
                "shape": shape,
            }

        cases += [
            CodecCase(
                group,
                "calculate_cdf",
                "calculate_cdf",
                lambda m=made, nb=nb: {"symbols": m()["symbols"], "num_bins": nb},
            ),
            CodecCase(
                group,
                "encode",
                "encode",
                lambda m=made, s=shape: {
                    "cdf": m()["cdf"],
                    "symbols": m()["symbols"],
                    "capacity": codec.stream_bound(s[1]),
                },
            ),
            CodecCase(
                group,
                "decode",
                "decode",
                lambda m=made, s=shape: {
                    "cdf": m()["cdf"],
                    "streams": m()["streams"],
                    "lengths": m()["lengths"],
                    "tokens": s[1],
                },
            ),
            CodecCase(
                group, "decode_prefsum", "decode_prefsum", lambda m=made, s=shape: prefsum(m(), s)
            ),
        ]

    def damaged() -> dict[str, Any]:
        """Random bytes and lengths: whatever comes out, every backend gives the same."""
        gen = torch.Generator().manual_seed(3)
        layers, tokens, channels, nb, cap = 2, 50, 37, 32, 40
        symbols = torch.randint(0, nb, (layers, tokens, channels), generator=gen, dtype=torch.uint8)
        cdf = codec.calculate_cdf(symbols, nb).numpy().view(np.uint16)
        data = torch.randint(0, 256, (layers, channels, cap), generator=gen, dtype=torch.uint8)
        lengths = torch.randint(0, cap + 1, (layers, channels), generator=gen, dtype=torch.int32)
        data, lengths = data.numpy(), lengths.numpy()
        return {"cdf": cdf, "streams": data, "lengths": lengths, "tokens": tokens}

    cases.append(CodecCase("coder-damaged-streams", "decode", "decode", damaged))

    @cache
    def bursts() -> dict[str, Any]:
        symbols, cdf = pending_bursts(2, 4000, 70, seed=11)
        streams, lengths = codec.encode_streams(cdf, symbols)
        return {"symbols": symbols, "cdf": cdf, "streams": streams, "lengths": lengths}

    shape = (2, 4000, 70)
    group = "coder-pending-bursts"
    cases += [
        CodecCase(
            group,
            "encode",
            "encode",
            lambda: {
                "cdf": bursts()["cdf"],
                "symbols": bursts()["symbols"],
                "capacity": codec.stream_bound(shape[1]),  # odd: slots not aligned
            },
        ),
        CodecCase(
            group,
            "decode",
            "decode",
            lambda: {
                "cdf": bursts()["cdf"],
                "streams": bursts()["streams"],
                "lengths": bursts()["lengths"],
                "tokens": shape[1],
            },
        ),
        CodecCase(group, "decode_prefsum", "decode_prefsum", lambda: prefsum(bursts(), shape)),
    ]
    return cases


def _container_cases() -> list[CodecCase]:
    def kv(
        shape: tuple[int, ...],
        dtype: torch.dtype,
        seed: int,
        key_bins: Any = None,
        value_bins: Any = None,
        chunk_tokens: int | None = None,
        method: str = "cachegen",
        head_size: int | None = None,
    ) -> dict[str, Any]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
        return {
            "kv": raw(x),
            "dtype": _name(dtype),
            "shape": shape,
            "key_bins": key_bins,
            "value_bins": value_bins,
            "chunk_tokens": chunk_tokens,
            "method": method,
            "head_size": head_size,
        }

    return [
        CodecCase(
            "container",
            "bfloat16-default-bins",
            "container",
            lambda: kv((2, 3, 40, 64), torch.bfloat16, 1),
        ),
        CodecCase(
            "container",
            "float32-chunks",
            "container",
            lambda: kv((2, 3, 200, 24), torch.float32, 2, [32, 16, 8], [48, 16, 4], 64),
        ),
        CodecCase(
            "container",
            "float16-chunks",
            "container",
            lambda: kv((2, 2, 70, 16), torch.float16, 3, 16, 8, 32),
        ),
        CodecCase(
            "container",
            "rotated-bfloat16",
            "container",
            lambda: kv((2, 3, 90, 64), torch.bfloat16, 4, method="rotated", head_size=16),
        ),
        CodecCase(
            "container",
            "rotated-float16-chunks",
            "container",
            lambda: kv((2, 2, 70, 32), torch.float16, 5, [12, 64], 6, 32, "rotated", 32),
        ),
    ]


CODEC_CASES = _golden_cases() + _quantizer_cases() + _coder_cases() + _container_cases()


def _tensor(a: np.ndarray, device: str, dtype: str | None = None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a).copy())
    if dtype is not None:
        t = t.view(TORCH_DTYPES[dtype])
    return t.to(device)


def run_codec_api(case: CodecCase, device: str = "cpu", on_gpu: bool | None = None) -> Outputs:
    """The case through kvx.codec (the public functions) with its tensors on `device` ("cpu",
    "cuda"); `on_gpu` (default: device is not the CPU) waits for the GPU after each call, which
    host execution needs with CPU tensors (tests/gpu_target.py)."""
    a = case.make()
    op = case.op
    on_gpu = device != "cpu" if on_gpu is None else on_gpu
    sync = (lambda t: kvx.synchronize(t)) if on_gpu else (lambda t: None)
    if op == "quantize":
        rows, tokens, channels = a["shape"]
        base = _tensor(a["x"], device, a["dtype"])
        x = base.as_strided((rows, tokens, channels), (*a["strides"], 1), a["offset"])
        symbols, scales = codec.quantize(x, a["bins"])
        sync(symbols)
        return {"symbols": raw(symbols), "scales": raw(scales)}
    if op == "dequantize":
        assert not case.abi_only, "kvx.codec.dequantize writes a new contiguous array"
        symbols, scales = _tensor(a["symbols"], device), _tensor(a["scales"], device)
        out = codec.dequantize(symbols, scales, a["bins"], TORCH_DTYPES[a["dtype"]])
        sync(out)
        return {"out": raw(out)}
    if op == "calculate_cdf":
        cdf = codec.calculate_cdf(_tensor(a["symbols"], device), a["num_bins"])
        sync(cdf)
        return {"cdf": raw(cdf)}
    if op == "encode":
        layers, _, channels = a["symbols"].shape
        shape = (layers, channels, a["capacity"])
        streams = torch.full(shape, 0xAB, dtype=torch.uint8, device=device)
        lengths = torch.full((layers, channels), -7, dtype=torch.int32, device=device)
        codec.encode_fast_new(
            _tensor(a["cdf"].view(np.int16), device),
            _tensor(a["symbols"], device),
            streams,
            lengths,
        )
        sync(streams)
        streams, lengths = streams.cpu().numpy(), lengths.cpu().numpy()
        return {"streams": encoded(streams, lengths), "lengths": lengths.view(np.uint8).reshape(-1)}
    if op in ("decode", "decode_prefsum"):
        layers, channels = a["cdf"].shape[:2]
        shape = (layers, a["tokens"], channels) if op == "decode" else a["shape"]
        out = torch.full(shape, 0xEE, dtype=torch.uint8, device=device)
        cdf = _tensor(a["cdf"].view(np.int16), device)
        if op == "decode":
            streams, lengths = _tensor(a["streams"], device), _tensor(a["lengths"], device)
            codec.decode_fast_new(cdf, streams, lengths, out)
        else:
            data, ends = _tensor(a["data"], device), _tensor(a["ends"], device)
            codec.decode_fast_prefsum(cdf, data, ends, out)
        sync(out)
        return {"symbols": raw(out)}
    if op == "container":
        kv = _tensor(a["kv"], device, a["dtype"]).reshape(a["shape"])
        blob = codec.encode(
            kv, a["key_bins"], a["value_bins"], a["chunk_tokens"], a["method"], a["head_size"]
        )
        out = torch.empty(a["shape"], dtype=TORCH_DTYPES[a["dtype"]], device=device)
        assert codec.decode(blob, out=out) is out
        sync(out)
        return {"blob": np.frombuffer(blob, np.uint8), "decoded": raw(out)}
    raise AssertionError(f"unknown codec op {op}")


def run_codec_abi(case: CodecCase, on: Any = None) -> Outputs:
    """The case through the C ABI (kvx_codec_*) with every array on the host (`on` None: the CPU
    backend) or in a stub device's memory (`on` a test_staged_codec.Device); a status other
    than KVX_OK fails."""
    import test_staged_codec as abi
    from kvx._native import lib

    a = case.make()
    codes = {
        "float32": lib.KVX_DTYPE_FLOAT32,
        "float16": lib.KVX_DTYPE_FLOAT16,
        "bfloat16": lib.KVX_DTYPE_BFLOAT16,
    }

    def ok(result: tuple) -> tuple:
        assert result[0] == 0, result[1]
        return result[2:]

    if case.op == "quantize":
        rows, tokens, channels = a["shape"]
        size = 4 if a["dtype"] == "float32" else 2
        x = a["x"][a["offset"] * size :]
        symbols, scales = ok(
            abi.quantize(
                x, codes[a["dtype"]], rows, tokens, channels, *a["strides"], a["bins"], on=on
            )
        )
        return {
            "symbols": symbols.view(np.uint8).reshape(-1),
            "scales": scales.view(np.uint8).reshape(-1),
        }
    if case.op == "dequantize":
        (out,) = ok(
            abi.dequantize(
                a["symbols"],
                a["scales"],
                a["bins"],
                codes[a["dtype"]],
                a["out"],
                *a["strides"],
                on=on,
            )
        )
        return {"out": out.view(np.uint8).reshape(-1)}
    if case.op == "calculate_cdf":
        (cdf,) = ok(abi.calculate_cdf(a["symbols"], a["num_bins"], on=on))
        return {"cdf": cdf.view(np.uint8).reshape(-1)}
    if case.op == "encode":
        streams, lengths = ok(abi.encode(a["cdf"], a["symbols"], a["capacity"], on=on))
        return {"streams": encoded(streams, lengths), "lengths": lengths.view(np.uint8).reshape(-1)}
    if case.op == "decode":
        (symbols,) = ok(abi.decode(a["cdf"], a["streams"], a["lengths"], a["tokens"], on=on))
        return {"symbols": symbols.reshape(-1)}
    if case.op == "decode_prefsum":
        ends = np.ascontiguousarray(a["ends"], np.int64).reshape(-1)
        (symbols,) = ok(abi.decode_prefsum(a["cdf"], a["data"], ends, a["shape"], on=on))
        return {"symbols": symbols.reshape(-1)}
    raise AssertionError(f"{case.op} has no C ABI runner here")


def cpu_codec(case: CodecCase) -> Outputs:
    """The baseline: this process's CPU backend, through kvx.codec, or the C ABI where only it
    can express the case."""
    return run_codec_abi(case) if case.abi_only else run_codec_api(case)


# ================================================================ RoPE


@cache
def _cos_sin_cache(rot_dim: int, max_position: int, dtype: torch.dtype) -> torch.Tensor:
    return rope.build_cos_sin_cache(rot_dim, max_position, dtype=dtype)


@dataclass(frozen=True)
class RopeCase:
    """Re-rotation (keys from `old` int64 to `new` int32 positions, a run of consecutive ones in
    the middle) or application (query and key at `new`), in place, through kvx.rope.

    `rot_dim`/`head`: 32 pairs (one whole block of the AVX-512 loops), 20 (a tail only), 48 (a
    block and a tail), 64 (two blocks), and partial rotary (rot_dim < head). `special`: a
    denormal-result head, tiny values, a zero head and, in 16-bit keys, NaNs with payloads (one
    per pair: which of two NaNs a sum passes on is left open). `layers` > 0: the K plane of a
    KV_2LTD buffer [2, L, T, H*D], all layers in one call, V untouched. `cache_kind`: "ties"
    (cos 1.5, 0.75, ... with sin 0 in half the rows, so that many results lie halfway between two
    16-bit values) or "nans" (NaNs whose payloads have low bits, one per pair and row, in rows only
    new positions use: which of two NaNs a product passes on is left open too)."""

    group: str
    name: str
    op: str  # "rerotate" or "apply"
    is_neox: bool
    dtype: torch.dtype
    cache_dtype: torch.dtype
    rot_dim: int
    head: int
    tokens: int = 61
    heads: int = 3
    max_position: int = 400
    special: bool = True
    layers: int = 0
    seed: int = 7
    cache_kind: str = "plain"

    def inputs(self) -> dict[str, torch.Tensor]:
        """Fresh copies of the case's inputs (`keys` a view into `kv`)."""
        made = _rope_inputs(self)
        kv = made["kv"].clone()
        keys = kv[0].unflatten(-1, (self.heads, self.head)) if self.layers else kv
        rest = {k: v.clone() for k, v in made.items() if k not in ("kv", "keys")}
        return dict(rest, kv=kv, keys=keys)

    def make(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        t, h, d = self.tokens, self.heads, self.head
        if self.layers:
            kv = (torch.randn((2, self.layers, t, h * d), generator=g) * 3).to(self.dtype)
            keys = kv[0].unflatten(-1, (h, d))
        else:
            kv = keys = (torch.randn((t, h, d), generator=g) * 3).to(self.dtype)
        if self.special:
            # denormal results
            keys[..., 0, 0, :] = (torch.randn(d, generator=g) * 1e-39).to(self.dtype)
            keys[..., 0, 1, :4] = torch.tensor([1e-39, -3e-39, 6e-5, 1e-8]).to(self.dtype)
            keys[..., 1, 0, :] = 0.0
            if self.dtype != torch.float32:
                nans = torch.tensor([0x7F00, 0x7C01, 0xFD55 - 0x10000, 0x7FC1], dtype=torch.int16)
                keys.view(torch.int16)[..., 2, 1, 0:8:2] = nans
        query = (torch.randn((t, h + 2, d), generator=g) * 3).to(self.dtype)
        cache = _special_cache(self, g) if self.cache_kind != "plain" else None
        if cache is None:
            cache = _cos_sin_cache(self.rot_dim, self.max_position, self.cache_dtype).clone()
        # "nans": old positions keep to the rows without NaNs
        old_end = self.max_position // 2 if self.cache_kind == "nans" else self.max_position
        old = torch.randint(0, old_end, (t,), generator=g)
        new = torch.randint(0, self.max_position, (t,), generator=g)
        if t > 40:
            new[10:40] = torch.arange(300, 330) % self.max_position
        return {
            "kv": kv,
            "keys": keys,
            "query": query,
            "cache": cache,
            "old": old,
            "new": new.to(torch.int32),
        }

    def run(
        self,
        rerotate: Callable[..., Any],
        apply: Callable[..., Any],
        device: str = "cpu",
        on_gpu: bool | None = None,
    ) -> Outputs:
        """Runs the case with the given functions (kvx.rope's, or the same on another device;
        `on_gpu` as in run_codec_api)."""
        a = {k: v.to(device) for k, v in self.inputs().items() if k != "keys"}
        a["keys"] = a["kv"][0].unflatten(-1, (self.heads, self.head)) if self.layers else a["kv"]
        if self.op == "rerotate":
            rerotate(a["keys"], a["old"], a["new"], a["cache"], is_neox=self.is_neox)
        else:
            apply(a["new"], a["query"], a["keys"], a["cache"], is_neox=self.is_neox)
        if device != "cpu" if on_gpu is None else on_gpu:
            kvx.synchronize(a["kv"])
        out = {"keys": a["kv"].cpu()}
        if self.op == "apply":
            out["query"] = a["query"].cpu()
        return {k: raw(v) for k, v in out.items()}


def _special_cache(case: RopeCase, g: torch.Generator) -> torch.Tensor:
    """The cache of a `cache_kind` case (see RopeCase)."""
    rows, half = case.max_position, case.rot_dim // 2
    if case.cache_kind == "ties":
        # x * 1.5 has one bit more than bf16 x: a tie whenever it lands on the rounding bit
        factors = torch.tensor([1.5, 0.75, 1.25, 1.0, 2.5, 0.375])
        cos = factors[torch.randint(0, len(factors), (rows, half), generator=g)]
        sin = torch.where(torch.arange(rows)[:, None] % 2 == 0, 0.0, cos * 0.5)
        cos[0], sin[0] = 1.0, 0.0  # old position 0 keeps new's rotation as it is
        return torch.cat([cos, sin], 1).to(case.cache_dtype)
    cache = _cos_sin_cache(case.rot_dim, rows, case.cache_dtype).clone()
    if case.cache_dtype == torch.float32:
        payloads = [0x7FC0FFFF, 0x7F80F001, -0x00400001, 0x7FFFFFFF, 0x7FC08000]  # low bits set
        ints = cache.view(torch.int32)
    else:  # float16 payloads reach bits 13-15 of the float32 they widen to
        payloads = [0x7E07, 0x7C01, -0x02AB, 0x7FFF, 0x7D55]
        ints = cache.view(torch.int16)
    for row in range(rows // 2, rows, 3):
        slot = row % half
        ints[row, slot] = payloads[row % len(payloads)]  # a cos
        ints[row, half + (slot + half // 2) % half] = payloads[(row + 1) % len(payloads)]  # a sin
    return cache


def _rope_cases() -> list[RopeCase]:
    cases = []
    shapes = [(64, 64), (40, 72), (96, 128), (128, 128), (64, 128)]
    for op in ("rerotate", "apply"):
        for is_neox in (True, False):
            pairing = "neox" if is_neox else "gptj"
            for dtype in TORCH_DTYPES.values():
                group = f"{op}-{pairing}-{_name(dtype)}"
                for cache_dtype in TORCH_DTYPES.values():
                    for rot_dim, head in shapes:
                        name = f"cache-{_name(cache_dtype)}-rot{rot_dim}-head{head}"
                        cases.append(
                            RopeCase(group, name, op, is_neox, dtype, cache_dtype, rot_dim, head)
                        )
    for is_neox in (True, False):
        pairing = "neox" if is_neox else "gptj"
        cases.append(
            RopeCase(
                "rerotate-kv-plane",
                f"{pairing}-bfloat16",
                "rerotate",
                is_neox,
                torch.bfloat16,
                torch.float32,
                128,
                128,
                tokens=200,
                heads=8,
                layers=4,
                special=False,
                seed=5,
            )
        )
        # Halfway results, and NaNs with low payload bits from the cache, for the 16-bit
        # roundings (GPT-J fp16 keys left out of "nans": their variants may flip a NaN's sign)
        for op in ("rerotate", "apply"):
            for dtype in (torch.float16, torch.bfloat16):
                cases.append(
                    RopeCase(
                        f"{op}-special-cache",
                        f"{pairing}-{_name(dtype)}-ties",
                        op,
                        is_neox,
                        dtype,
                        torch.float32,
                        64,
                        64,
                        tokens=80,
                        max_position=64,
                        special=False,
                        cache_kind="ties",
                    )
                )
            for cache_dtype in (torch.float32, torch.float16):
                for dtype in (torch.bfloat16,) if not is_neox else (torch.bfloat16, torch.float16):
                    cases.append(
                        RopeCase(
                            f"{op}-special-cache",
                            f"{pairing}-{_name(dtype)}-nans-cache-{_name(cache_dtype)}",
                            op,
                            is_neox,
                            dtype,
                            cache_dtype,
                            96,
                            128,
                            tokens=80,
                            max_position=64,
                            special=False,
                            cache_kind="nans",
                        )
                    )
        # A one-ulp float32 difference rarely survives rounding to 16 bits: enough values that
        # any would show (about 2**-16 of bf16 values flip per ulp of difference)
        for dtype in (torch.float16, torch.bfloat16):
            cases.append(
                RopeCase(
                    "rerotate-million-values",
                    f"{pairing}-{_name(dtype)}",
                    "rerotate",
                    is_neox,
                    dtype,
                    torch.float32,
                    128,
                    128,
                    tokens=2048,
                    heads=4,
                    max_position=8192,
                    special=False,
                    seed=8,
                )
            )
    return cases


ROPE_CASES = _rope_cases()


@lru_cache(maxsize=4)
def _rope_inputs(case: RopeCase) -> dict[str, torch.Tensor]:
    return case.make()


def cpu_rope(case: RopeCase) -> Outputs:
    return case.run(rope.rerotate_keys, rope.apply_rotary)


# ================================================================ raw copies


@dataclass(frozen=True)
class CopyCase:
    """kvx_copy_batch: ranges of `sizes` bytes read in order from one source buffer (random gaps
    between them) and written in shuffled order into one destination buffer (random gaps) that
    starts filled with 0xA5, so that the bytes between the ranges are checked too. Every backend
    must give the CPU's bytes, whichever memory holds each side."""

    group: str
    name: str
    sizes: tuple[int, ...]
    seed: int

    def inputs(self) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[int]]:
        """source, destination (as before the copy), source offsets, destination offsets, sizes"""
        rng = np.random.default_rng(self.seed)
        sizes = list(self.sizes)
        src_off, at = [], 0
        for n in sizes:
            src_off.append(at)
            at += n + int(rng.integers(0, 64))
        src = rng.integers(0, 256, max(at, 1), dtype=np.uint8)
        dst_off, at = [0] * len(sizes), 0
        for i in rng.permutation(len(sizes)):
            dst_off[i] = at
            at += sizes[i] + int(rng.integers(0, 64))
        return src, np.full(max(at, 1), 0xA5, np.uint8), src_off, dst_off, sizes


def _copy_cases() -> list[CopyCase]:
    rng = np.random.default_rng(40)
    return [
        CopyCase(
            "small", "3000-ranges-0-to-200-bytes", tuple(map(int, rng.integers(0, 200, 3000))), 1
        ),
        CopyCase("small", "257-single-bytes", (1,) * 257, 2),
        CopyCase("small", "empty-ranges-around-one", (0, 0, 17, 0), 3),
        CopyCase("large", "odd-sizes", ((1 << 20) + 3, 5, (3 << 20) - 1, 0, 65536), 4),
        CopyCase("large", "one-range", (5 << 20,), 5),
    ]


COPY_CASES = _copy_cases()


def cpu_copy(case: CopyCase) -> Outputs:
    src, dst, src_off, dst_off, sizes = case.inputs()
    s, d = src.ctypes.data, dst.ctypes.data
    kvx.copy_batch([s + o for o in src_off], [d + o for o in dst_off], sizes)
    return {"dst": dst}


# ================================================================ everything, by name


OPS: dict[str, tuple[list[Any], Callable[[Any], Outputs]]] = {
    "transfer": (TRANSFER_CASES, cpu_transfer),
    "codec": (CODEC_CASES, cpu_codec),
    "rope": (ROPE_CASES, cpu_rope),
    "copy": (COPY_CASES, cpu_copy),
}


def case_id(case: Any) -> str:
    return f"{case.group}/{case.name}"


def groups(op: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for case in OPS[op][0]:
        out.setdefault(case.group, []).append(case)
    return out


def cpu_digests() -> dict[str, dict[str, str]]:
    """The digest of every case's result on this process's CPU backend, by op and case id."""
    return {op: {case_id(c): digest(run(c)) for c in cases} for op, (cases, run) in OPS.items()}


if __name__ == "__main__":
    json.dump({"kernels": kvx.cpu_kernels(), "digests": cpu_digests()}, sys.stdout)
