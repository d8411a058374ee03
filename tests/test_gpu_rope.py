"""RoPE on a CUDA/HIP GPU, where it differs from the other backends: positions outside the cache
reported by kvx.synchronize, and ordering on a side stream. The bits against the CPU backend
(the kernels do the CPU's float32 operations in the same order without FMA contraction) are
checked by tests/test_conformance.py. Skips unless this libkvx has the GPU backend and torch sees
a device."""

import kvx
import pytest
import rope_cases as rc
import torch
from kvx import rope

_GPU_COMPILED = any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())
pytestmark = [
    pytest.mark.skipif(
        not _GPU_COMPILED, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"
    ),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


def test_position_outside_the_cache_is_reported():
    cos_sin = rc.cache(128, 64).cuda()
    keys = torch.ones(3, 2, 128, device="cuda")
    old = torch.tensor([0, 1, 2], device="cuda")
    new = torch.tensor([5, 64, 6], device="cuda")  # 64: one past the last row
    rope.rerotate_keys(keys, old, new, cos_sin)
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"positions\[1\]: position 64 is outside the cache's 0..63"
    ):
        kvx.synchronize(keys)
    assert torch.equal(keys[1].cpu(), torch.ones(2, 128))  # that token was skipped
    kvx.synchronize(keys)  # the error was consumed


def test_runs_on_the_current_stream():
    cos_sin = rc.cache(128, 9000).cuda()
    keys = rc.randn((8192, 8, 128), torch.bfloat16).cuda()
    expected = keys.clone()
    old = torch.arange(8192, device="cuda")
    new = old + 100
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        rope.rerotate_keys(keys, old, new, cos_sin)
        copy = keys.clone()  # ordered after the kernel on the same stream
    torch.cuda.current_stream().wait_stream(side)
    rope.rerotate_keys(expected, old, new, cos_sin)  # on the current stream, after the side's work
    assert torch.equal(copy.cpu().view(torch.int16), expected.cpu().view(torch.int16))
