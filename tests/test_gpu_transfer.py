"""KV transfer on a CUDA/HIP GPU, where it differs from the other backends: out-of-range slots
reported by kvx.synchronize, and ordering on a side stream. Every layout, direction and dtype
against kvx.reference, with the dense buffer on the device and in pinned host memory, is in
tests/test_conformance.py. Skips unless this libkvx has the GPU backend and torch sees a device."""

import kvx
import pytest
import torch

_GPU = (
    next(b for b in kvx.backends() if b.name in ("cuda", "hip") and b.compiled)
    if any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())
    else None
)
pytestmark = [
    pytest.mark.skipif(
        _GPU is None, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"
    ),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


def test_out_of_range_slot_is_skipped_and_reported():
    caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16, device="cuda")]
    dense = torch.ones(2, 1, 3, 16, dtype=torch.float16, device="cuda")
    slots = torch.tensor([1, 99, 2], dtype=torch.int64, device="cuda")
    kvx.load(caches, dense, slots)
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"slot_mapping\[1\]: slot 99 is out of range"
    ):
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
