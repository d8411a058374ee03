"""RoPE on a CUDA/HIP GPU, where it differs from the other backends: positions outside the cache
reported by kvx.synchronize, and ordering on a side stream. The bits against the CPU backend
(the kernels do the CPU's float32 operations in the same order without FMA contraction) are
checked by tests/test_conformance.py. Runs on a GPU or in host execution (tests/gpu_target.py)."""

import kvx
import pytest
import rope_cases as rc
import torch
from kvx import rope


def test_position_outside_the_cache_is_reported(gpu):
    cos_sin = gpu.put(rc.cache(128, 64))
    keys = torch.ones(3, 2, 128, device=gpu.device)
    old = gpu.put(torch.tensor([0, 1, 2]))
    new = gpu.put(torch.tensor([5, 64, 6]))  # 64: one past the last row
    with gpu.running():
        rope.rerotate_keys(keys, old, new, cos_sin)
        with pytest.raises(
            kvx.InvalidArgumentError,
            match=r"positions\[1\]: position 64 is outside the cache's 0..63",
        ):
            kvx.synchronize(keys)
        kvx.synchronize(keys)  # the error was consumed
    assert torch.equal(gpu.back(keys[1]), torch.ones(2, 128))  # that token was skipped


def test_runs_on_the_current_stream(gpu):
    cos_sin = gpu.put(rc.cache(128, 9000))
    keys = gpu.put(rc.randn((8192, 8, 128), torch.bfloat16))
    before = gpu.back(keys)
    old = gpu.put(torch.arange(8192))
    new = old + 100
    with gpu.running(), gpu.side_stream():
        rope.rerotate_keys(keys, old, new, cos_sin)
        copy = keys.clone()  # ordered after the kernel on the same stream
    expected = before.clone()
    rope.rerotate_keys(expected, gpu.back(old), gpu.back(new), gpu.back(cos_sin))  # the CPU's
    assert torch.equal(gpu.back(copy).view(torch.int16), expected.view(torch.int16))
