"""kvx.lmcache: the device specs, the ops surface, and kvx's codec, RoPE and host-buffer ops
against LMCache's own torch versions (LMCache fetched from PyPI at test time)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import inspect
import logging
import os

import kvx
import lmcache_env
import pytest
import torch


@pytest.fixture(scope="module")
def lmc():
    """LMCache's torch baseline module (``lmcache.v1.platform.torch_ops``)."""
    lmcache_env.activate()
    from lmcache.v1.platform import torch_ops

    return torch_ops


@pytest.fixture(scope="module")
def ops(lmc):
    from kvx.lmcache.device_ops import KvxCpuDeviceOps

    instance = KvxCpuDeviceOps()
    instance.ensure_native()
    return instance


def _torch_op_names(lmc) -> list[str]:
    from lmcache.v1.platform.base.device_ops import DeviceOps

    return sorted(
        name
        for name in dir(lmc)
        if not name.startswith("_") and inspect.isfunction(getattr(lmc, name))
        if hasattr(DeviceOps, name)
    )


def test_every_lmcache_op_is_kvx_s_with_lmcache_s_signature(lmc, ops) -> None:
    names = _torch_op_names(lmc)
    assert len(names) >= 30, names
    for name in names:
        op = getattr(type(ops), name)
        assert op.__module__.startswith("kvx.lmcache"), f"{name} is not kvx's: {op.__module__}"
        assert _parameters(op) == _parameters(getattr(lmc, name)), name


def _parameters(function) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults (annotations differ only in being strings on kvx's side)."""
    params = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default) for p in params]


def test_fallback_ops_are_announced_once(ops, caplog) -> None:
    from kvx.lmcache import _fallback

    caplog.set_level(logging.WARNING, logger="kvx.lmcache")
    assert ops.get_gpu_pci_bus_id(0) is None  # no GPU here
    ops.get_gpu_pci_bus_id(0)
    said = [r.getMessage() for r in caplog.records if "get_gpu_pci_bus_id" in r.getMessage()]
    assert len(said) <= 1  # a test before this one may have triggered the announcement
    assert any(op == "get_gpu_pci_bus_id" for op, _ in _fallback.announced())


def test_native_enums_are_lmcache_s(ops) -> None:
    import lmcache.lmcache_native as native

    assert ops.TransferDirection is native.TransferDirection
    assert ops.EngineKVFormat is native.EngineKVFormat


# --- codec: bit-identical with LMCache's torch versions -------------------------------------


@pytest.mark.parametrize("num_bins", [1, 5, 32, 63])
def test_calculate_cdf_equals_lmcache(lmc, ops, num_bins) -> None:
    gen = torch.Generator().manual_seed(num_bins)
    symbols = torch.randint(0, num_bins, (3, 200, 7), generator=gen, dtype=torch.int8)
    assert torch.equal(ops.calculate_cdf(symbols, num_bins), lmc.calculate_cdf(symbols, num_bins))


def _coded(lmc, num_bins: int, tokens: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    symbols = torch.randint(0, num_bins, (2, tokens, 5), generator=gen, dtype=torch.int8)
    cdf = lmc.calculate_cdf(symbols, num_bins)
    return symbols, cdf


def test_encode_and_decode_equal_lmcache(lmc, ops) -> None:
    symbols, cdf = _coded(lmc, 32, 300, 1)
    capacity = kvx.codec.stream_bound(300)
    streams = {}
    for who, impl in (("kvx", ops), ("lmcache", lmc)):
        out = torch.zeros((2, 5, capacity), dtype=torch.uint8)
        lengths = torch.zeros((2, 5), dtype=torch.int32)
        impl.encode_fast_new(cdf, symbols, out, lengths)
        streams[who] = (out, lengths)
    assert torch.equal(streams["kvx"][1], streams["lmcache"][1])
    assert torch.equal(streams["kvx"][0], streams["lmcache"][0])

    out, lengths = streams["lmcache"]
    for impl in (ops, lmc):
        decoded = torch.zeros_like(symbols)
        impl.decode_fast_new(cdf, out, lengths, decoded)
        assert torch.equal(decoded, symbols)

    packed = torch.cat([out[l, c, : lengths[l, c]] for l in range(2) for c in range(5)])
    prefsum = lengths.flatten().cumsum(0).reshape(2, 5)
    for impl in (ops, lmc):
        decoded = torch.zeros_like(symbols)
        impl.decode_fast_prefsum(cdf, packed, prefsum, decoded)
        assert torch.equal(decoded, symbols)


def test_encode_refuses_a_buffer_lmcache_would_truncate_into(lmc, ops) -> None:
    """LMCache's torch encoder stops writing at the end of the buffer and reports the cut
    length as if the stream were whole; kvx fails the call and reports no length (the buffer
    itself is scratch: its bytes are then unspecified)."""
    symbols, cdf = _coded(lmc, 32, 300, 2)
    out = torch.full((2, 5, 8), 7, dtype=torch.uint8)
    lengths = torch.full((2, 5), -1, dtype=torch.int32)
    with pytest.raises(kvx.BufferTooSmallError):
        ops.encode_fast_new(cdf, symbols, out, lengths)
    assert bool((lengths == -1).all())


# --- RoPE ------------------------------------------------------------------------------------


def _rope_case(seed: int, head_stride: int):
    gen = torch.Generator().manual_seed(seed)
    cache = kvx.rope.build_cos_sin_cache(64, 4096, 10000.0)
    old = torch.randint(0, 4096, (21,), generator=gen)
    new = torch.randint(0, 4096, (21,), generator=gen)
    key = torch.randn(21, 4, head_stride, generator=gen)
    return old, new, key, cache


@pytest.mark.parametrize("is_neox", [True, False])
def test_rotary_embedding_k_fused_equals_lmcache(lmc, ops, is_neox) -> None:
    old, new, key, cache = _rope_case(3, 64)
    expected = key.clone()
    lmc.rotary_embedding_k_fused(old, new, expected, 64, cache, is_neox)
    ops.rotary_embedding_k_fused(old, new, key, 64, cache, is_neox)
    torch.testing.assert_close(key, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("is_neox", [True, False])
def test_strided_rotates_k_and_leaves_v(lmc, ops, is_neox) -> None:
    old, new, key, cache = _rope_case(4, 128)  # each head: K (64) then V (64)
    expected = key.clone()
    lmc.rotary_embedding_k_fused_strided(old, new, expected, 64, 128, cache, is_neox)
    flat = key.flatten(1)  # [T, H * head_stride]: the same heads, as a fused cache row
    ops.rotary_embedding_k_fused_strided(old, new, flat, 64, 128, cache, is_neox)
    torch.testing.assert_close(key, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(key[..., 64:], expected[..., 64:])


def test_strided_rejects_a_stride_below_head_size(ops) -> None:
    old, new, key, cache = _rope_case(5, 64)
    before = key.clone()
    with pytest.raises(kvx.InvalidArgumentError, match="head_stride"):
        ops.rotary_embedding_k_fused_strided(old, new, key, 64, 32, cache, True)
    assert torch.equal(key, before)


# --- host buffers ----------------------------------------------------------------------------

ALLOCATORS = [
    ("alloc_pinned_ptr", "free_pinned_ptr"),
    ("alloc_pinned_numa_ptr", "free_pinned_numa_ptr"),
    ("alloc_numa_ptr", "free_numa_ptr"),
    ("alloc_hugepage_pinned_ptr", "free_hugepage_pinned_ptr"),
    ("alloc_hugepage_pinned_numa_ptr", "free_hugepage_pinned_numa_ptr"),
]


@pytest.mark.filterwarnings("ignore:kvx. no huge pages")
@pytest.mark.parametrize("alloc,free", ALLOCATORS)
@pytest.mark.parametrize("size", [1, 4095, 4096, 3 << 20])
def test_buffers_are_page_aligned_zeroed_and_writable(ops, alloc, free, size) -> None:
    ptr = getattr(ops, alloc)(size)
    try:
        assert ptr % os.sysconf("SC_PAGESIZE") == 0
        view = (ctypes.c_uint8 * size).from_address(ptr)
        assert bytes(view[: min(size, 4096)]) == bytes(min(size, 4096))
        view[size - 1] = 0xA5
        assert view[size - 1] == 0xA5
    finally:
        getattr(ops, free)(ptr)


def test_bad_sizes_and_nodes_are_refused(ops) -> None:
    with pytest.raises(kvx.InvalidArgumentError, match="size"):
        ops.alloc_pinned_ptr(0)
    with pytest.raises(kvx.InvalidArgumentError, match="numa_id"):
        ops.alloc_numa_ptr(4096, 4096)


def test_free_ignores_foreign_and_repeated_pointers(ops) -> None:
    ptr = ops.alloc_pinned_ptr(4096)
    ops.free_pinned_ptr(ptr)
    ops.free_pinned_ptr(ptr)
    ops.free_pinned_ptr(12345)


# --- raw copies ------------------------------------------------------------------------------


def _ranges(seed: int, count: int, size: int):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, 256, (count, size), generator=gen, dtype=torch.uint8)
    return src, torch.zeros_like(src)


def test_batched_memcpy_copies_every_range(ops) -> None:
    src, dst = _ranges(6, 9, 1000)
    sizes = [0, 1, 999, 1000, 7, 500, 1000, 3, 64]
    ops.batched_memcpy(
        [src[i].data_ptr() for i in range(9)], [dst[i].data_ptr() for i in range(9)], sizes
    )
    for i, n in enumerate(sizes):
        assert torch.equal(dst[i, :n], src[i, :n]) and not dst[i, n:].any()


def test_batched_memcpy_refuses_overlap_and_uneven_lists(ops) -> None:
    src, dst = _ranges(7, 2, 100)
    with pytest.raises(kvx.InvalidArgumentError, match="sizes"):
        ops.batched_memcpy([src[0].data_ptr()], [dst[0].data_ptr()], [1, 2])
    with pytest.raises(kvx.InvalidArgumentError, match="overlap"):
        ops.batched_memcpy(
            [src[0].data_ptr(), src[1].data_ptr()], [dst[0].data_ptr(), dst[0].data_ptr() + 50],
            [100, 100],
        )  # fmt: skip
    assert not dst.any()


@pytest.mark.parametrize("mode", ["pointers", "tensors"])
@pytest.mark.parametrize("offset,alignment", [(0, 1 << 20), (100, 256), (4095, 4096)])
def test_lmcache_memcpy_async_copies_nbytes(lmc, ops, mode, offset, alignment) -> None:
    import lmcache.lmcache_native as native

    src, dst = _ranges(8, 1, 5000)
    args = (dst[0], src[0]) if mode == "tensors" else (dst.data_ptr(), src.data_ptr())
    ops.lmcache_memcpy_async(*args, 4321, native.TransferDirection.H2D, offset, alignment)
    assert torch.equal(dst[0, :4321], src[0, :4321]) and not dst[0, 4321:].any()


def test_lmcache_memcpy_async_pieces_stop_at_each_host_boundary() -> None:
    from kvx.lmcache.copy_ops import _pieces

    assert _pieces(1000, 100, 256) == [(0, 156), (156, 256), (412, 256), (668, 256), (924, 76)]
    assert _pieces(10, 0, 4096) == [(0, 10)]
    assert _pieces(0, 5, 8) == []


def test_lmcache_memcpy_async_refuses_what_lmcache_refuses(ops) -> None:
    import lmcache.lmcache_native as native

    src, dst = _ranges(9, 1, 64)
    h2d = native.TransferDirection.H2D
    with pytest.raises(kvx.InvalidArgumentError, match="power of two"):
        ops.lmcache_memcpy_async(dst.data_ptr(), src.data_ptr(), 8, h2d, 0, 3)
    with pytest.raises(kvx.InvalidArgumentError, match="direction"):
        ops.lmcache_memcpy_async(dst.data_ptr(), src.data_ptr(), 8, 7, 0, 4)
    with pytest.raises(TypeError):
        ops.lmcache_memcpy_async(dst[0], src.data_ptr(), 8, h2d, 0, 4)
    with pytest.raises(kvx.InvalidArgumentError, match="nbytes"):
        ops.lmcache_memcpy_async(dst[0].view(torch.int32), src[0].view(torch.int32), 6, h2d, 0, 4)
    with pytest.raises(kvx.InvalidArgumentError, match="src"):
        ops.lmcache_memcpy_async(dst[0], src[0, :8], 16, h2d, 0, 4)
    assert not dst.any()


# --- specs and registration ------------------------------------------------------------------


def test_entry_points_name_the_specs(lmc) -> None:
    from kvx.lmcache import specs

    points = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group="lmcache.device_plugins")
        if ep.value.startswith("kvx.")
    }
    if not points:
        pytest.skip("kvx is not installed (run from a pip-installed kvx to see its entry points)")
    assert {name: ep.split(":")[1] for name, ep in points.items()} == {
        spec().backend_name: spec.__name__ for spec in specs.SPECS
    }


def test_cpu_spec_is_available_only_when_selected(lmc, monkeypatch) -> None:
    from kvx.lmcache import specs

    spec = specs.KvxCpuDeviceSpec()
    monkeypatch.delenv("LMCACHE_DEVICE_BACKEND", raising=False)
    assert not spec.is_available()  # LMCache has its own CPU spec: kvx waits to be asked
    monkeypatch.setenv("LMCACHE_DEVICE_BACKEND", "KVX_CPU ")
    assert spec.is_available()
    assert spec.device_type == "cpu" and spec.backend_name == "kvx_cpu"


def test_accelerator_specs_are_unavailable_without_their_device(lmc, monkeypatch) -> None:
    from kvx.lmcache import specs

    for spec_class in specs.SPECS[1:]:
        spec = spec_class()
        monkeypatch.setenv("LMCACHE_DEVICE_BACKEND", spec.backend_name)
        assert spec.is_available() == specs.usable(spec.kind)
        if not torch.cuda.is_available():
            assert not spec.is_available(), spec.backend_name


def test_info_says_which_lmcache_and_backends_it_found() -> None:
    import subprocess

    run = subprocess.run(
        lmcache_env.python_command("kvx", "info"),
        capture_output=True,
        text=True,
        env=dict(os.environ, LMCACHE_DEVICE_BACKEND="kvx_cpu"),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("LMCache plugin:")]
    assert f"LMCache {lmcache_env.LMCACHE_VERSION}" in line
    assert "LMCACHE_DEVICE_BACKEND=kvx_cpu" in line
    if "not registered" not in line:  # a pip-installed kvx: its backends are listed
        assert "kvx_cpu" in line.split("LMCACHE_DEVICE_BACKEND")[0]
