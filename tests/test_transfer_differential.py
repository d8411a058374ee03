"""kvx.transfer against kvx.reference.transfer where the call itself differs: numpy arrays in and
out, and LMCache's EngineKVFormat numbers naming the presets. Every layout x direction x dtype x
odd sizes, padded and strided views on every backend are in tests/test_conformance.py."""

import numpy as np
import pytest
import torch
import transfer_cases as tc
from kvx import layouts

DIRECTIONS = ["store", "load"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_numpy_arrays(direction):
    """numpy in, numpy out: no torch tensors involved in the call."""
    gen = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(7)
    g = tc.Geometry(layers=2, blocks=5, block_size=4, heads=2, head_size=8)
    paged = [t.numpy() for t in tc.make_paged("vllm_nhd", g, torch.float16, gen)]
    dense = tc.make_dense("vllm_nhd", g, 11, torch.float16, gen).numpy()
    slots = tc.make_slots(20, 4, 11, rng).numpy()
    ref_paged, ref_dense = (
        [torch.from_numpy(p.copy()) for p in paged],
        torch.from_numpy(dense.copy()),
    )
    import kvx

    kvx.transfer(paged, dense, slots, direction=direction)
    kvx.reference.transfer(ref_paged, ref_dense, torch.from_numpy(slots), direction=direction)
    assert np.array_equal(dense.view(np.uint16), ref_dense.numpy().view(np.uint16))
    for p, r in zip(paged, ref_paged, strict=True):
        assert np.array_equal(p.view(np.uint16), r.numpy().view(np.uint16))


def test_engine_kv_format_numbers_match_presets():
    import kvx

    for number, name in layouts.ENGINE_KV_FORMATS.items():
        assert layouts.paged_layout(number).name == name
    with pytest.raises(kvx.InvalidArgumentError, match="EngineKVFormat 12"):
        layouts.paged_layout(12)
