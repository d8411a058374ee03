"""kvx.rope on the CPU against a float64 oracle: both pairings, partial rotary, strided and
multi-layer keys, every key and cache dtype, int32/int64 positions; plus bit-exactness against
the float32 reference (same formula, same roundings) and build_cos_sin_cache. That every CPU
instruction-set variant and the GPU give the same bits is checked by tests/test_conformance.py."""

from __future__ import annotations

import math
import warnings

import kvx
import numpy as np
import pytest
import torch
from kvx import reference_rope, rope
from rope_cases import (
    DTYPES,
    assert_close_to,
    cache,
    expected_apply,
    expected_rerotate,
    positions,
    randn,
)

T, H, D = 37, 3, 64
MAXPOS = 300


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rot_dim", [D, 24], ids=["full", "partial"])
def test_rerotate_matches_float64(is_neox, dtype, cache_dtype, rot_dim):
    cs = cache(rot_dim, MAXPOS, cache_dtype)
    keys = randn((T, H, D), dtype)
    original = keys.clone()
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    expected = expected_rerotate(keys, old, new, cs, is_neox)
    assert rope.rerotate_keys(keys, old, new, cs, is_neox=is_neox) is keys
    assert_close_to(keys[..., :rot_dim], expected[..., :rot_dim], dtype)
    # dims past rot_dim are not touched, bit for bit
    assert torch.equal(keys[..., rot_dim:], original[..., rot_dim:])
    assert not torch.equal(keys, original)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cache_dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "rot_dim,head", [(48, 64), (80, 96), (128, 128)]
)  # vector tails, 32-pair blocks
def test_apply_matches_float64_and_is_bit_exact_with_reference(
    is_neox, dtype, cache_dtype, rot_dim, head
):
    cs = cache(rot_dim, MAXPOS, cache_dtype)
    pos = positions(T, MAXPOS)
    query, key = randn((T, 4, head), dtype, seed=5), randn((T, 2, head), dtype, seed=6)
    # float32 denormal results (both members of each pair tiny; bf16 and fp32 keep them)
    query[0, 0] = (torch.randn(head, generator=torch.Generator().manual_seed(9)) * 1e-39).to(dtype)
    query[0, 1] = (torch.randn(head, generator=torch.Generator().manual_seed(9)) * 1e-6).to(
        dtype
    )  # fp16 ones
    query[1, 1] = 0.0  # all-zero heads
    q_ref, k_ref = query.clone(), key.clone()
    q64, k64 = expected_apply(query, pos, cs, is_neox), expected_apply(key, pos, cs, is_neox)
    out = rope.apply_rotary(pos, query, key, cs, is_neox=is_neox)
    assert out[0] is query and out[1] is key
    assert_close_to(query, q64, dtype)
    assert_close_to(key, k64, dtype)
    # the float32 reference computes a*cos - b*sin with the same roundings: same bits
    reference_rope.apply_rotary(pos, q_ref, k_ref, cs, is_neox=is_neox)
    assert torch.equal(query, q_ref) and torch.equal(key, k_ref)


def test_apply_key_none_and_int32_positions():
    cs = cache(D, MAXPOS)
    query = randn((T, H, D), torch.bfloat16)
    expected = query.clone()
    pos = positions(T, MAXPOS, dtype=torch.int32)
    q, k = rope.apply_rotary(pos, query, None, cs)
    assert q is query and k is None
    reference_rope.apply_rotary(pos, expected, None, cs)
    assert torch.equal(query, expected)


@pytest.mark.parametrize(
    "old_dtype,new_dtype",
    [(torch.int32, torch.int32), (torch.int32, torch.int64), (torch.int64, torch.int32)],
)
def test_position_dtypes(old_dtype, new_dtype):
    cs = cache(D, MAXPOS)
    keys = randn((T, H, D), torch.float32)
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    expected = keys.clone()
    rope.rerotate_keys(expected, old, new, cs)
    rope.rerotate_keys(keys, old.to(old_dtype), new.to(new_dtype), cs)
    assert torch.equal(keys, expected)


def test_fused_kv_rows_rotate_only_k():
    """The K half of fused rows [T, 2, H, D]: the V half stays bit-identical."""
    cs = cache(D, MAXPOS, torch.bfloat16)
    kv = randn((T, 2, H, D), torch.bfloat16)
    v_before = kv[:, 1].clone()
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    expected = expected_rerotate(kv[:, 0], old, new, cs, True)
    rope.rerotate_keys(kv[:, 0], old, new, cs)
    assert_close_to(kv[:, 0], expected, torch.bfloat16)
    assert torch.equal(kv[:, 1], v_before)


def test_multi_layer_k_plane_of_kv_2ltd():
    """The K plane of an LMCache KV_2LTD buffer [2, L, T, H*D], all layers in one call."""
    L = 3
    cs = cache(32, MAXPOS, torch.float32)
    buf = randn((2, L, T, H * D), torch.float16)
    k_before, v_before = buf[0].clone(), buf[1].clone()
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    k_plane = buf[0].unflatten(-1, (H, D))
    expected = expected_rerotate(k_plane, old, new, cs, False)
    rope.rerotate_keys(k_plane, old, new, cs, is_neox=False)
    assert_close_to(buf[0].unflatten(-1, (H, D)), expected, torch.float16)
    assert torch.equal(buf[1], v_before)
    # the layers share the positions: each got exactly what a one-layer call gives
    for layer in range(L):
        alone = k_before[layer].unflatten(-1, (H, D)).clone()
        rope.rerotate_keys(alone, old, new, cs, is_neox=False)
        assert torch.equal(alone, k_plane[layer])


def test_flat_heads_with_head_size():
    cs = cache(D, MAXPOS)
    flat = randn((T, H * D), torch.bfloat16)
    heads = flat.clone().unflatten(-1, (H, D))
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    rope.rerotate_keys(flat, old, new, cs, head_size=D)
    rope.rerotate_keys(heads, old, new, cs)
    assert torch.equal(flat.unflatten(-1, (H, D)), heads)


def test_padded_strides_and_single_token():
    """Token and head strides with gaps (a view into a wider buffer); the gaps stay untouched."""
    cs = cache(16, MAXPOS)
    wide = randn((T, H + 1, D + 8), torch.float32)
    before = wide.clone()
    view = wide[:, :H, :D]
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    expected = expected_rerotate(view, old, new, cs, True)
    rope.rerotate_keys(view, old, new, cs)
    assert_close_to(view, expected, torch.float32)
    assert torch.equal(wide[:, H:], before[:, H:]) and torch.equal(wide[:, :, D:], before[:, :, D:])
    one = randn((1, 1, 16), torch.bfloat16)
    expected = expected_rerotate(one, old[:1], new[:1], cs, True)
    rope.rerotate_keys(one, old[:1], new[:1], cs)
    assert_close_to(one, expected, torch.bfloat16)


def test_numpy_arrays():
    cs = cache(D, MAXPOS).numpy()
    keys = randn((T, H, D), torch.float16).numpy()
    expected = expected_rerotate(torch.from_numpy(keys), np.arange(T), np.arange(T) + 100, cs, True)
    rope.rerotate_keys(keys, np.arange(T, dtype=np.int64), np.arange(T, dtype=np.int32) + 100, cs)
    assert_close_to(torch.from_numpy(keys), expected, torch.float16)


def test_zero_tokens_is_a_no_op():
    cs = cache(D, MAXPOS)
    keys = torch.empty((0, H, D), dtype=torch.bfloat16)
    empty = torch.empty(0, dtype=torch.int64)
    assert rope.rerotate_keys(keys, empty, empty, cs) is keys
    rope.apply_rotary(empty, keys, keys.clone(), cs)


def test_many_tokens_use_threads_consistently():
    """Enough tokens for several chunks per thread: same bits with 1 thread and the default."""
    cs = cache(128, 4096, torch.float32)
    keys = randn((3000, 2, 128), torch.bfloat16)
    other = keys.clone()
    old, new = positions(3000, 4096, seed=2), positions(3000, 4096, seed=3)
    rope.rerotate_keys(keys, old, new, cs)
    kvx.set_num_threads(1)
    try:
        rope.rerotate_keys(other, old, new, cs)
    finally:
        kvx.set_num_threads(0)
    assert torch.equal(keys, other)


def test_query_and_key_of_different_dtypes_and_layers():
    cs = cache(D, MAXPOS, torch.bfloat16)
    pos = positions(T, MAXPOS)
    query, key = randn((T, 4, D), torch.bfloat16), randn((2, T, 1, D), torch.float32)
    q_ref, k_ref = query.clone(), key.clone()
    rope.apply_rotary(pos, query, key, cs, is_neox=False)
    reference_rope.apply_rotary(pos, q_ref, k_ref, cs, is_neox=False)
    assert torch.equal(query, q_ref) and torch.equal(key, k_ref)


def test_concurrent_calls_from_python_threads():
    """cffi releases the GIL: calls from several threads at once share the CPU thread pool (or run
    on their own thread); each must still get exactly its own result."""
    from concurrent.futures import ThreadPoolExecutor

    cs = cache(128, 4096)
    jobs = [
        (
            randn((700, 2, 128), torch.bfloat16, seed=i),
            positions(700, 4096, seed=10 + i),
            positions(700, 4096, seed=20 + i),
        )
        for i in range(8)
    ]
    expected = []
    for keys, old, new in jobs:
        alone = keys.clone()
        rope.rerotate_keys(alone, old, new, cs)
        expected.append(alone)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: rope.rerotate_keys(job[0], job[1], job[2], cs), jobs))
    assert all(torch.equal(job[0], want) for job, want in zip(jobs, expected, strict=True))


def test_rerotate_to_same_positions_is_near_identity():
    cs = cache(D, MAXPOS)
    keys = randn((T, H, D), torch.float32)
    before = keys.clone()
    pos = positions(T, MAXPOS)
    rope.rerotate_keys(keys, pos, pos, cs)
    torch.testing.assert_close(keys, before, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- LMCache / vLLM signatures


@pytest.mark.parametrize("is_neox", [True, False])
def test_lmcache_signature_is_rerotate_keys(is_neox):
    """LMCache passes flattened keys [T, H*D] and the head size; same bits as rerotate_keys."""
    cs = cache(D, MAXPOS)
    keys = randn((T, H * D), torch.bfloat16)
    before, want = keys.clone(), keys.clone()
    old, new = positions(T, MAXPOS, seed=4), positions(T, MAXPOS, seed=5)
    rope.rerotate_keys(want, old, new, cs, is_neox=is_neox, head_size=D)
    assert rope.rotary_embedding_k_fused(old, new, keys, D, cs, is_neox) is None
    assert torch.equal(keys, want) and not torch.equal(keys, before)
    with pytest.raises(kvx.InvalidArgumentError, match="head_size"):
        rope.rotary_embedding_k_fused(old, new, keys, D + 1, cs, is_neox)


@pytest.mark.parametrize("with_key", [True, False])
def test_vllm_signature_is_apply_rotary(with_key):
    cs = cache(D, MAXPOS)
    query, key = randn((T, 4 * D), torch.float16), randn((T, 2, D), torch.float16)
    before, want_q, want_k = query.clone(), query.clone(), key.clone()
    pos = positions(T, MAXPOS, seed=6)
    rope.apply_rotary(pos, want_q, want_k if with_key else None, cs, is_neox=False, head_size=D)
    assert rope.rotary_embedding(pos, query, key if with_key else None, D, cs, False) is None
    assert (
        torch.equal(query, want_q) and torch.equal(key, want_k) and not torch.equal(query, before)
    )


# ---------------------------------------------------------------- build_cos_sin_cache


def _exact_cache(inv_freq64: np.ndarray, t64: np.ndarray) -> np.ndarray:
    angles = np.outer(t64, inv_freq64)
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1), angles


def _assert_cache_close(actual: torch.Tensor, inv_freq64, t64) -> None:
    expected, angles = _exact_cache(inv_freq64, t64)
    # vLLM computes the angles in float32: allow their rounding (a few ulps of the angle)
    tol = np.concatenate([np.abs(angles), np.abs(angles)], axis=1) * 2.0**-21 + 1e-6
    assert np.all(np.abs(actual.double().numpy() - expected) <= tol)


def test_build_default_cache_layout():
    rot, maxpos, base = 64, 4096, 10000.0
    cs = rope.build_cos_sin_cache(rot, maxpos, base)
    assert cs.shape == (maxpos, rot) and cs.dtype == torch.float32
    inv = base ** (-np.arange(0, rot, 2) / rot)
    _assert_cache_close(cs, inv, np.arange(maxpos, dtype=np.float64))
    assert rope.build_cos_sin_cache(rot, 8, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_build_linear_scaling():
    cs = rope.build_cos_sin_cache(32, 64, 500000.0, scaling=4.0)
    plain = rope.build_cos_sin_cache(32, 64, 500000.0)
    # position 4p with factor 4 is position p unscaled (t = 4p / 4 exactly)
    assert torch.equal(cs[::4], plain[:16])
    as_mapping = rope.build_cos_sin_cache(
        32, 64, 500000.0, scaling={"rope_type": "linear", "factor": 4.0}
    )
    assert torch.equal(cs, as_mapping)


def test_build_llama3_scaling():
    rot, maxpos, base = 128, 1024, 500000.0
    params = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    cs = rope.build_cos_sin_cache(rot, maxpos, base, scaling=params)
    inv = base ** (-np.arange(0, rot, 2) / rot)
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = 8192 / 1.0, 8192 / 4.0
    smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
    scaled = np.where(
        wavelen < high_wavelen,
        inv,
        np.where(wavelen > low_wavelen, inv / 8.0, (1 - smooth) * inv / 8.0 + smooth * inv),
    )
    # all three regimes occur at this base and rot_dim
    assert (wavelen < high_wavelen).any() and (wavelen > low_wavelen).any()
    assert ((wavelen >= high_wavelen) & (wavelen <= low_wavelen)).any()
    _assert_cache_close(cs, scaled, np.arange(maxpos, dtype=np.float64))
    plain = rope.build_cos_sin_cache(rot, maxpos, base)
    assert torch.equal(cs[:, :8], plain[:, :8])  # high frequencies unchanged
    assert not torch.equal(cs, plain)


@pytest.mark.parametrize("is_neox", [True, False])
def test_cache_drives_the_kernel(is_neox):
    """Computed by hand, independently of kvx.reference_rope: with the first member of every pair
    1 and the second 0, applying at position p gives (cos p f_r, sin p f_r), f_r = base^(-2r/rot),
    in pair r's members: dims (r, r + rot/2) for NeoX, (2r, 2r + 1) for GPT-J."""
    rot, base, p = 8, 100.0, 7
    cs = rope.build_cos_sin_cache(rot, 50, base)
    first = list(range(rot // 2)) if is_neox else list(range(0, rot, 2))
    second = list(range(rot // 2, rot)) if is_neox else list(range(1, rot, 2))
    x = torch.zeros((1, 1, rot), dtype=torch.float32)
    x[0, 0, first] = 1.0
    rope.apply_rotary(torch.tensor([p]), x, None, cs, is_neox=is_neox)
    angles = torch.tensor(
        [p * base ** (-2 * r / rot) for r in range(rot // 2)], dtype=torch.float64
    )
    torch.testing.assert_close(x[0, 0, first].double(), angles.cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[0, 0, second].double(), angles.sin(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- fallback
# On devices without a kernel.


def test_fallback_runs_with_one_warning(monkeypatch):
    """Where libkvx cannot run the op on the device now (asked up front: rope._fallback_reason),
    the fallback runs instead of the native call, which is not even tried (the fallback is built
    only then), with one RuntimeWarning per op and device type naming the reason and the route.
    Where libkvx can, and always on the CPU, the native call runs and its errors are raised. A
    stand-in reason and fallback here; test_rope_fallback.py runs the real routes."""
    from kvx._native import lib as native

    monkeypatch.setattr(rope, "_warned_fallback", set())
    reason = "a stand-in reason"
    monkeypatch.setattr(rope, "_fallback_reason", lambda op, device_type: reason)
    ran, built, called = [], [], []

    class Recorder:
        route = "a stand-in route"

        def __init__(self, tag: int) -> None:
            self.tag = tag

        def __call__(self) -> None:
            ran.append(self.tag)

    def factory(tag: int):
        def make() -> Recorder:
            built.append(tag)
            return Recorder(tag)

        return make

    def native_call(status: int):
        def call() -> int:
            called.append(status)
            return status

        return call

    def run(device, status, tag):
        rope._native_or_fallback("rerotate_keys", device, native_call(status), factory(tag))

    cuda, cpu = (native.KVX_DEVICE_CUDA, 0), (native.KVX_DEVICE_CPU, 0)
    with pytest.warns(
        RuntimeWarning,
        match=r"kvx.rope.rerotate_keys: no native kernel for this "
        r"device \(a stand-in reason\); using a stand-in route",
    ):
        run(cuda, native.KVX_OK, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(cuda, native.KVX_ERR_UNSUPPORTED, 2)
    assert ran == [1, 2] and called == []
    with pytest.raises(kvx.NotAvailableError):  # the CPU never falls back
        run(cpu, native.KVX_ERR_NOT_AVAILABLE, 3)
    reason = ""  # libkvx runs the op on the device: the native call, its errors raised
    run(cuda, native.KVX_OK, 4)
    with pytest.raises(kvx.UnsupportedError):
        run(cuda, native.KVX_ERR_UNSUPPORTED, 5)
    assert ran == [1, 2] and built == [1, 2]
    assert called == [native.KVX_ERR_NOT_AVAILABLE, native.KVX_OK, native.KVX_ERR_UNSUPPORTED]


@pytest.mark.parametrize(
    "op,code", [("rerotate_keys", "KVX_OP_ROPE_REROTATE"), ("apply_rotary", "KVX_OP_ROPE_APPLY")]
)
@pytest.mark.parametrize(
    "device", ["KVX_DEVICE_CUDA", "KVX_DEVICE_HIP", "KVX_DEVICE_ASCEND", "KVX_DEVICE_CNRT"]
)
def test_fallback_reason_is_the_library_answer(op, code, device):
    """kvx.rope falls back exactly where kvx_backend_supports answers none or the backend is not
    available now, and says why."""
    from kvx._native import lib as native

    device_type, op_code = getattr(native, device), getattr(native, code)
    reason = rope._fallback_reason(op, device_type)
    runs = native.kvx_backend_supports(
        device_type, op_code
    ) != native.KVX_SUPPORT_NONE and native.kvx_backend_available(device_type)
    assert (reason == "") == bool(runs)
    if not native.kvx_backend_compiled(device_type):
        assert "not compiled" in reason
    elif native.kvx_backend_supports(device_type, op_code) == native.KVX_SUPPORT_NONE:
        assert f"no {op.split('_')[0]}" in reason


def test_cuda_tensors_match_the_oracle(gpu):
    """On a GPU (or in host execution): the device backend's kernel, or the reference fallback
    (which warns)."""
    cs = cache(D, MAXPOS)
    keys = randn((T, H, D), torch.bfloat16)
    old, new = positions(T, MAXPOS, seed=2), positions(T, MAXPOS, seed=3)
    on_gpu = gpu.put(keys)
    with gpu.running(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rope.rerotate_keys(on_gpu, gpu.put(old), gpu.put(new), gpu.put(cs))
        kvx.synchronize(on_gpu)
    assert_close_to(gpu.back(on_gpu), expected_rerotate(keys, old, new, cs, True), torch.bfloat16)
