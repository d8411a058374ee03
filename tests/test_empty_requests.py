"""Empty requests (every token already cached, nothing to move) are no-ops, whatever the array
family: numpy gives empty arrays zero strides, which must not fail the contiguity checks."""

from __future__ import annotations

import subprocess
import sys

import kvx
import numpy as np
import pytest
import torch
from kvx import layouts
from transfer_cases import Geometry, make_dense, make_paged, num_kv

GEOMETRY = Geometry(layers=3, blocks=4, block_size=4, heads=2, head_size=8)
FORMATS = ("KV_2LTD", "KV_T2D", "KV_2TD")


def _numpy(paged):
    if isinstance(paged, torch.Tensor):
        return paged.numpy()
    return type(paged)(_numpy(p) for p in paged)


def _copies(paged):
    if isinstance(paged, np.ndarray):
        return paged.copy()
    return type(paged)(_copies(p) for p in paged)


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a.view(np.uint8), b.view(np.uint8))
    return all(_equal(x, y) for x, y in zip(a, b, strict=True))


def _format(layout: str) -> str:
    return "MLA_1LTD" if num_kv(layout) == 1 else "KV_2LTD"


@pytest.mark.parametrize("layout", sorted(layouts.PAGED_LAYOUTS))
@pytest.mark.parametrize("direction", ["store", "load"])
def test_numpy_empty_request_is_a_no_op(layout, direction) -> None:
    gen = torch.Generator().manual_seed(3)
    paged = _numpy(make_paged(layout, GEOMETRY, torch.float16, gen))
    before = _copies(paged)
    fmt = _format(layout)
    dense = np.zeros(make_dense(layout, GEOMETRY, 0, torch.float16, gen, fmt).shape, np.float16)
    assert 0 in dense.strides  # numpy's own choice for empty arrays: the case under test
    kvx.transfer(
        paged, dense, np.zeros(0, np.int64), direction=direction, layout=layout, dense_format=fmt
    )
    assert _equal(paged, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy_empty_single_layer_formats(fmt) -> None:
    one_layer = Geometry(layers=1, blocks=4, block_size=4, heads=2, head_size=8)
    gen = torch.Generator().manual_seed(4)
    paged = _numpy(make_paged("vllm_nhd", one_layer, torch.float32, gen))
    before = _copies(paged)
    dense = np.zeros(
        make_dense("vllm_nhd", one_layer, 0, torch.float32, gen, fmt).shape, np.float32
    )
    kvx.store(paged, dense, np.zeros(0, np.int64), dense_format=fmt)
    kvx.load(paged, dense, np.zeros(0, np.int64), dense_format=fmt)
    assert _equal(paged, before)


def test_numpy_empty_rope_and_codec() -> None:
    cache = kvx.rope.build_cos_sin_cache(8, 32, 10000.0).numpy()
    keys = np.zeros((0, 2, 8), np.float32)
    no_positions = np.zeros(0, np.int64)
    kvx.rope.rerotate_keys(keys, no_positions, no_positions, cache)
    kvx.rope.apply_rotary(no_positions, np.zeros((0, 2, 8), np.float32), keys, cache)
    blob = kvx.codec.encode(np.zeros((2, 3, 0, 16), np.float32))
    assert kvx.codec.decode(blob, as_numpy=True).shape == (2, 3, 0, 16)
    symbols, scales = kvx.codec.quantize(np.zeros((2, 0, 16), np.float32), [16, 16])
    cdf = kvx.codec.calculate_cdf(symbols, 16)
    streams, lengths = kvx.codec.encode_streams(cdf, symbols)
    out = np.zeros((2, 0, 16), np.uint8)
    kvx.codec.decode_fast_new(cdf, streams, lengths, out)
    assert kvx.codec.dequantize(symbols, scales, [16, 16]).shape == (2, 0, 16)


def test_demo_with_no_tokens() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvx", "demo", "--tokens", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "empty request" in result.stdout and "verified:" in result.stdout
