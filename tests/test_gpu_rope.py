"""RoPE on a CUDA/HIP GPU against the CPU backend on copies of the same data: the kernels do the
CPU's float32 operations in the same order without FMA contraction, so results must be bitwise
equal. Also: positions outside the cache reported by kvx.synchronize, and ordering on a side
stream. Skips unless this libkvx has the GPU backend and torch sees a device."""

import pytest
import torch

import kvx
import rope_cases as rc
from kvx import rope

_GPU_COMPILED = any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())
pytestmark = [
    pytest.mark.skipif(not _GPU_COMPILED, reason="this libkvx was built without the GPU backend (-Dcuda/-Dhip)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA/HIP device"),
]


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.cpu().contiguous().view(torch.uint8)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", rc.DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", rc.DTYPES, ids=str)
@pytest.mark.parametrize("rot_dim", [128, 64])
def test_rerotate_equals_cpu(is_neox, dtype, cache_dtype, rot_dim):
    cos_sin = rc.cache(rot_dim, 600, cache_dtype)
    keys = rc.randn((257, 8, 128), dtype)
    old, new = rc.positions(257, 600, seed=1), rc.positions(257, 600, torch.int32, seed=2)  # mixed dtypes
    gpu = keys.cuda()
    rope.rerotate_keys(gpu, old.cuda(), new.cuda(), cos_sin.cuda(), is_neox=is_neox)
    rope.rerotate_keys(keys, old, new, cos_sin, is_neox=is_neox)
    assert torch.equal(_bits(gpu), _bits(keys))


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", rc.DTYPES, ids=str)
def test_apply_equals_cpu(is_neox, dtype):
    cos_sin = rc.cache(96, 600)
    query, key = rc.randn((100, 32, 128), dtype, seed=3), rc.randn((100, 8, 128), dtype, seed=4)
    pos = rc.positions(100, 600, torch.int32)
    gq, gk = query.cuda(), key.cuda()
    rope.apply_rotary(pos.cuda(), gq, gk, cos_sin.cuda(), is_neox=is_neox)
    rope.apply_rotary(pos, query, key, cos_sin, is_neox=is_neox)
    assert torch.equal(_bits(gq), _bits(query)) and torch.equal(_bits(gk), _bits(key))


def test_strided_keys_of_every_layer_at_once():
    """The K plane of a KV_2LTD buffer [2, L, T, H*D], all layers in one call; V untouched."""
    cos_sin = rc.cache(128, 300)
    kv = rc.randn((2, 4, 200, 8 * 128), torch.bfloat16)
    old, new = rc.positions(200, 300, seed=5), rc.positions(200, 300, seed=6)
    gkv = kv.cuda()
    rope.rerotate_keys(gkv[0].unflatten(-1, (8, 128)), old.cuda(), new.cuda(), cos_sin.cuda())
    rope.rerotate_keys(kv[0].unflatten(-1, (8, 128)), old, new, cos_sin)
    assert torch.equal(_bits(gkv), _bits(kv))


def test_position_outside_the_cache_is_reported():
    cos_sin = rc.cache(128, 64).cuda()
    keys = torch.ones(3, 2, 128, device="cuda")
    old = torch.tensor([0, 1, 2], device="cuda")
    new = torch.tensor([5, 64, 6], device="cuda")  # 64: one past the last row
    rope.rerotate_keys(keys, old, new, cos_sin)
    with pytest.raises(kvx.InvalidArgumentError, match=r"positions\[1\]: position 64 is outside the cache's 0..63"):
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
    assert torch.equal(_bits(copy), _bits(expected))
