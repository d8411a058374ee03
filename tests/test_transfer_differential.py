"""kvx.transfer against kvx.reference.transfer: every layout x direction x dtype x odd sizes,
padded and strided views, -1 padding and random blocks. Comparisons are byte-exact and cover the
whole allocation (padding included), so a stray write anywhere fails the test."""

import numpy as np
import pytest
import torch

import transfer_cases as tc
from kvx import layouts

LAYOUTS = sorted(layouts.PAGED_LAYOUTS)
DIRECTIONS = ["store", "load"]


def _dense_format(layout_name: str) -> str:
    return "MLA_1LTD" if tc.num_kv(layout_name) == 1 else "KV_2LTD"


def _check(layout_name, g, dtype, direction, tokens, seed, pad_axis=None, token_gap=0, fmt=None):
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    fmt = fmt or _dense_format(layout_name)
    paged = tc.make_paged(layout_name, g, dtype, gen, pad_axis)
    dense = tc.make_dense(layout_name, g, tokens, dtype, gen, fmt, token_gap)
    slots = tc.make_slots(tc.capacity(layout_name, g), g.block_size, tokens, rng)
    (kp, kd), (rp, rd) = tc.run_both(layout_name, paged, dense, slots, direction, fmt)
    assert tc.bits_equal(tc.whole(kd), tc.whole(rd)), "dense side differs from the reference"
    assert tc.paged_equal(kp, rp), "paged side differs from the reference"
    return (kp, kd), paged, dense


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout_name", LAYOUTS)
@pytest.mark.parametrize("dtype", tc.DTYPES, ids=str)
def test_every_layout_and_dtype(layout_name, dtype, direction):
    g = tc.Geometry(layers=3, blocks=9, block_size=4, heads=3, head_size=8)
    _check(layout_name, g, dtype, direction, tokens=21, seed=1)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout_name", LAYOUTS)
@pytest.mark.parametrize("head_size,dtype", [(66, torch.bfloat16), (1, torch.float32), (7, torch.uint8), (3, torch.float64)])
def test_odd_row_lengths(layout_name, head_size, dtype, direction):
    """head_size 66 in bf16 is a 132-byte row: no tail may be dropped."""
    g = tc.Geometry(layers=2, blocks=7, block_size=5, heads=3, head_size=head_size)
    _check(layout_name, g, dtype, direction, tokens=17, seed=2)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout_name", LAYOUTS)
@pytest.mark.parametrize("pad_axis", ["token", "head", "block", "dim"])
def test_padded_views(layout_name, pad_axis, direction):
    """Padded block strides, padded heads (non-contiguous rows) and sliced head vectors."""
    g = tc.Geometry(layers=2, blocks=6, block_size=4, heads=2, head_size=6)
    _check(layout_name, g, torch.float16, direction, tokens=13, seed=3, pad_axis=pad_axis)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_non_contiguous_dense(layout_name, direction):
    g = tc.Geometry(layers=2, blocks=6, block_size=4, heads=2, head_size=6)
    _check(layout_name, g, torch.bfloat16, direction, tokens=15, seed=4, token_gap=5)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("fmt", ["KV_T2D", "KV_2TD"])
@pytest.mark.parametrize("layout_name", ["vllm_nhd", "flashinfer_hnd", "sglang_mha", "kv_tuples"])
def test_single_layer_formats(layout_name, fmt, direction):
    g = tc.Geometry(layers=1, blocks=5, block_size=8, heads=4, head_size=16)
    _check(layout_name, g, torch.bfloat16, direction, tokens=19, seed=5, fmt=fmt)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_large_multithreaded(direction):
    """Enough work for the thread pool to split across threads and runs."""
    g = tc.Geometry(layers=4, blocks=300, block_size=16, heads=8, head_size=128)
    _check("vllm_nhd", g, torch.bfloat16, direction, tokens=2000, seed=6)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_numpy_arrays(direction):
    """numpy in, numpy out: no torch tensors involved in the call."""
    gen = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(7)
    g = tc.Geometry(layers=2, blocks=5, block_size=4, heads=2, head_size=8)
    paged = [t.numpy() for t in tc.make_paged("vllm_nhd", g, torch.float16, gen)]
    dense = tc.make_dense("vllm_nhd", g, 11, torch.float16, gen).numpy()
    slots = tc.make_slots(20, 4, 11, rng).numpy()
    ref_paged, ref_dense = [torch.from_numpy(p.copy()) for p in paged], torch.from_numpy(dense.copy())
    import kvx

    kvx.transfer(paged, dense, slots, direction=direction)
    kvx.reference.transfer(ref_paged, ref_dense, torch.from_numpy(slots), direction=direction)
    assert np.array_equal(dense.view(np.uint16), ref_dense.numpy().view(np.uint16))
    for p, r in zip(paged, ref_paged):
        assert np.array_equal(p.view(np.uint16), r.numpy().view(np.uint16))


def test_engine_kv_format_numbers_match_presets():
    import kvx

    for number, name in layouts.ENGINE_KV_FORMATS.items():
        assert layouts.paged_layout(number).name == name
    with pytest.raises(kvx.InvalidArgumentError, match="EngineKVFormat 12"):
        layouts.paged_layout(12)
