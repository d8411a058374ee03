"""KV transfer on a CUDA/HIP GPU against kvx.reference (run on the CPU copy of the same data):
every layout and direction, pinned-host dense buffers (offload in one launch), out-of-range slots
reported by kvx.synchronize, and ordering on a side stream. Skips unless this libkvx has the GPU
backend and torch sees a device."""

import numpy as np
import pytest
import torch

import kvx
import transfer_cases as tc
from kvx import layouts

_GPU = next(b for b in kvx.backends() if b.name in ("cuda", "hip") and b.compiled) if any(
    b.name in ("cuda", "hip") and b.compiled for b in kvx.backends()) else None
pytestmark = [
    pytest.mark.skipif(_GPU is None, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


def _to(paged, device):
    if isinstance(paged, torch.Tensor):
        return tc.clone_keep_layout(paged).to(device) if paged.is_contiguous() else _strided_to(paged, device)
    return type(paged)(_to(p, device) for p in paged)


def _strided_to(t, device):
    """Moves a padded view to the device keeping its strides (the padding comes along)."""
    base = tc.whole(t).to(device)
    return base.as_strided(t.size(), t.stride(), t.storage_offset())


def _gpu_vs_reference(layout_name, direction, dtype, pad_axis=None, pinned=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = tc.Geometry(layers=3, blocks=40, block_size=16, heads=4, head_size=64)
    fmt = "MLA_1LTD" if tc.num_kv(layout_name) == 1 else "KV_2LTD"
    paged = tc.make_paged(layout_name, g, dtype, gen, pad_axis)
    dense = tc.make_dense(layout_name, g, 300, dtype, gen, fmt)
    slots = tc.make_slots(g.blocks * g.block_size, g.block_size, 300, np.random.default_rng(seed))
    ref_paged, ref_dense = tc.clone_paged(paged), dense.clone()
    kvx.reference.transfer(ref_paged, ref_dense, slots, direction=direction, layout=layout_name, dense_format=fmt)

    gpu_paged = _to(paged, "cuda")
    gpu_dense = dense.pin_memory() if pinned else dense.cuda()
    kvx.transfer(gpu_paged, gpu_dense, slots.cuda(), direction=direction, layout=layout_name, dense_format=fmt)
    kvx.synchronize(gpu_dense if not pinned else slots.cuda())
    assert tc.bits_equal(gpu_dense.cpu(), ref_dense)
    assert tc.paged_equal(_to(gpu_paged, "cpu"), ref_paged)


@pytest.mark.parametrize("direction", ["store", "load"])
@pytest.mark.parametrize("layout_name", sorted(layouts.PAGED_LAYOUTS))
def test_every_layout(layout_name, direction):
    _gpu_vs_reference(layout_name, direction, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("pad_axis", [None, "dim", "head"])
def test_dtypes_and_padding(dtype, pad_axis):
    """Odd widths and padded heads force the narrower vector paths."""
    _gpu_vs_reference("vllm_nhd", "store", dtype, pad_axis)
    _gpu_vs_reference("vllm_nhd", "load", dtype, pad_axis)


@pytest.mark.parametrize("direction", ["store", "load"])
def test_pinned_host_dense(direction):
    _gpu_vs_reference("vllm_nhd", direction, torch.bfloat16, pinned=True)


def test_out_of_range_slot_is_skipped_and_reported():
    caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16, device="cuda")]
    dense = torch.ones(2, 1, 3, 16, dtype=torch.float16, device="cuda")
    slots = torch.tensor([1, 99, 2], dtype=torch.int64, device="cuda")
    kvx.load(caches, dense, slots)
    with pytest.raises(kvx.InvalidArgumentError, match=r"slot_mapping\[1\]: slot 99 is out of range"):
        kvx.synchronize(dense)
    assert int(caches[0].count_nonzero()) == 2 * 2 * 2 * 8  # tokens 0 and 2 landed, nothing else
    kvx.synchronize(dense)  # the error was consumed


def test_runs_on_the_current_stream():
    caches = [torch.randn(2, 64, 16, 8, 128, device="cuda").to(torch.bfloat16) for _ in range(4)]
    slots = torch.arange(1000, dtype=torch.int64, device="cuda")
    dense = torch.empty(2, 4, 1000, 1024, dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        kvx.store(caches, dense, slots)
        copy = dense.clone()  # ordered after the transfer on the same stream
    torch.cuda.current_stream().wait_stream(side)
    expected = torch.empty_like(dense)
    kvx.reference.transfer(caches, expected, slots, direction="store")
    assert torch.equal(copy.view(torch.int16), expected.view(torch.int16))
