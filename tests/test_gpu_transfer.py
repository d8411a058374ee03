"""KV transfer on a CUDA/HIP GPU, where it differs from the other backends: out-of-range slots
reported by kvx.synchronize, and ordering on a side stream. Every layout, direction and dtype
against kvx.reference, with the dense buffer on the device and in pinned host memory, is in
tests/test_conformance.py. Runs on a GPU or in host execution (tests/gpu_target.py)."""

import kvx
import pytest
import torch


def test_out_of_range_slot_is_skipped_and_reported(gpu):
    caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16, device=gpu.device)]
    dense = torch.ones(2, 1, 3, 16, dtype=torch.float16, device=gpu.device)
    slots = gpu.put(torch.tensor([1, 99, 2], dtype=torch.int64))
    with gpu.running():
        kvx.load(caches, dense, slots)
        with pytest.raises(
            kvx.InvalidArgumentError, match=r"slot_mapping\[1\]: slot 99 is out of range"
        ):
            kvx.synchronize(dense)
        kvx.synchronize(dense)  # the error was consumed
    assert int(caches[0].count_nonzero()) == 2 * 2 * 2 * 8  # tokens 0 and 2 landed, nothing else


def test_runs_on_the_current_stream(gpu):
    caches = [gpu.put(torch.randn(2, 64, 16, 8, 128).to(torch.bfloat16)) for _ in range(4)]
    slots = gpu.put(torch.arange(1000, dtype=torch.int64))
    dense = torch.empty(2, 4, 1000, 1024, dtype=torch.bfloat16, device=gpu.device)
    with gpu.running(), gpu.side_stream():
        kvx.store(caches, dense, slots)
        copy = dense.clone()  # ordered after the transfer on the same stream
    expected = torch.empty(dense.shape, dtype=dense.dtype)
    kvx.reference.transfer(
        [gpu.back(c) for c in caches], expected, gpu.back(slots), direction="store"
    )
    assert torch.equal(gpu.back(copy).view(torch.int16), expected.view(torch.int16))
