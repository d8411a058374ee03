"""RoPE on devices without a libkvx kernel (python/kvx/_rope_fallback.py), without the hardware:
the route decision with fake device types, and both routes run on CPU tensors through kvx.rope's
real dispatch (the device and stream are simulated as an NPU/MLU), compared with kvx's own CPU
result. torch_npu is replaced by a stand-in written from npu_rotary_mul's documented formula
(``out = r1 * x + r2 * cat(-x2, x1)``) that also checks the documented shape limits."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

torch = pytest.importorskip("torch")

import kvx  # noqa: E402
from kvx import _rope_fallback as fb  # noqa: E402
from kvx import rope  # noqa: E402
from kvx._native import ffi, lib  # noqa: E402


class FakeTorchNpu(types.ModuleType):
    def __init__(self):
        super().__init__("torch_npu")
        self.calls = []

    def npu_rotary_mul(self, x, r1, r2, rotary_mode="half"):
        assert rotary_mode == "half"
        assert x.dim() == r1.dim() == r2.dim() == 4
        b, s, n, d = x.shape
        assert d == 128 and b < 1000 and n < 1000 and b * n <= 1024
        assert r1.shape == r2.shape == (1, s, 1, d)  # BSND with 1S1D
        assert x.dtype == r1.dtype == torch.float32  # kvx casts to float32 first
        self.calls.append(tuple(x.shape))
        x1, x2 = torch.chunk(x, 2, -1)
        return r1 * x + r2 * torch.cat((-x2, x1), dim=-1)


@pytest.fixture
def fake_npu(monkeypatch):
    fake = FakeTorchNpu()
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.delenv("KVX_ROPE_VENDOR_OPS", raising=False)
    return fake


@pytest.fixture
def no_npu(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # import torch_npu raises ImportError


# ---------------------------------------------------------------- the route decision


def route(device="npu", is_neox=True, rot_dim=128, num_layers=1, num_heads=8):
    return fb.choose_route(
        device, is_neox=is_neox, rot_dim=rot_dim, num_layers=num_layers, num_heads=num_heads
    )


def test_npu_uses_npu_rotary_mul_where_its_contract_fits(fake_npu):
    assert route() == fb.VENDOR_NPU
    assert route(num_layers=32, num_heads=32) == fb.VENDOR_NPU


@pytest.mark.parametrize(
    "kwargs",
    [
        {"is_neox": False},  # GPT-J pairing: needs rotary_mode="interleave" (newer only)
        {"rot_dim": 64},
        {"rot_dim": 256},  # the oldest documented limit: D == 128
        {"num_heads": 1000},
        {"num_layers": 1000},  # B, N < 1000
        {"num_layers": 33, "num_heads": 32},  # broadcast limit B*N <= 1024
        {"device": "mlu"},
        {"device": "cuda"},  # no vendor op used there
    ],
    ids=str,
)
def test_reference_everywhere_else(fake_npu, kwargs):
    assert route(**kwargs) == fb.REFERENCE


def test_reference_without_torch_npu_or_when_disabled(no_npu, monkeypatch):
    assert route() == fb.REFERENCE
    monkeypatch.setitem(sys.modules, "torch_npu", FakeTorchNpu())
    monkeypatch.setenv("KVX_ROPE_VENDOR_OPS", "0")
    assert route() == fb.REFERENCE


def test_routes_named_for_kvx_info():
    assert "npu_rotary_mul" in fb.routes("npu") and "reference" in fb.routes("npu")
    assert fb.routes("mlu") == "fallback: kvx.reference_rope"


# ---------------------------------------------------------------- both routes through kvx.rope


@pytest.fixture
def simulated(monkeypatch):
    """kvx.rope sees the (CPU) tensors as living on an NPU or MLU: the device check answers that
    device and the stream is one of its type, so libkvx's backend refuses (unsupported, or not
    available without its runtime) and kvx.rope falls back, exactly as on the device."""

    def same_device(infos):
        return (device_type, 0)

    def stream(device):
        s = ffi.new("kvx_stream *")
        s.device_type, s.device_index, s.handle = device[0], device[1], ffi.NULL
        return s

    def use(device_type_):
        nonlocal device_type
        device_type = device_type_
        monkeypatch.setattr(rope, "_warned_fallback", set())
        monkeypatch.setattr(rope, "require_same_device", same_device)
        monkeypatch.setattr(rope, "current_stream", stream)

    device_type = None
    return use


def cache(rot_dim, max_pos=64):
    return rope.build_cos_sin_cache(rot_dim, max_pos)


def randn(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def close(a, b):
    torch.testing.assert_close(a.float(), b.float(), atol=TOL[a.dtype], rtol=TOL[a.dtype])


@pytest.mark.parametrize(
    "device_type,expect",
    [(lib.KVX_DEVICE_ASCEND, fb.VENDOR_NPU), (lib.KVX_DEVICE_CNRT, fb.REFERENCE)],
    ids=["npu", "mlu"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_rerotate_falls_back_visibly_and_matches_kvx(
    fake_npu, simulated, device_type, expect, dtype
):
    keys = randn((2, 9, 4, 160), dtype, 1)  # [L, T, H, D], partial rotary: 128 of 160 dims
    old, new = torch.randint(0, 64, (9,)), torch.randint(0, 64, (9,))
    cs = cache(128)
    want = keys.clone()
    rope.rerotate_keys(want, old, new, cs)  # kvx on the CPU, before the simulation starts
    simulated(device_type)
    got = keys.clone()
    with pytest.warns(
        RuntimeWarning, match="kvx.rope.rerotate_keys: no native kernel for this device"
    ) as w:
        rope.rerotate_keys(got, old, new, cs)
    assert expect in str(w[0].message)
    assert (len(fake_npu.calls) == 1) == (expect == fb.VENDOR_NPU)
    close(got, want)
    assert torch.equal(got[..., 128:], keys[..., 128:])  # dims past rot_dim untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per op, device type and route
        rope.rerotate_keys(got, new, old, cs)
    close(got, keys)


@pytest.mark.parametrize(
    "device_type", [lib.KVX_DEVICE_ASCEND, lib.KVX_DEVICE_CNRT], ids=["npu", "mlu"]
)
def test_apply_falls_back_and_matches_kvx(fake_npu, simulated, device_type):
    """Query and key with different head counts, vLLM's flattened [T, H*D] layout."""
    q, k = randn((7, 8 * 128), torch.float16, 2), randn((7, 2 * 128), torch.float16, 3)
    pos = torch.randint(0, 64, (7,))
    cs = cache(128)
    wq, wk = q.clone(), k.clone()
    rope.apply_rotary(pos, wq, wk, cs, head_size=128)
    simulated(device_type)
    gq, gk = q.clone(), k.clone()
    with pytest.warns(RuntimeWarning, match="apply_rotary"):
        rope.apply_rotary(pos, gq, gk, cs, head_size=128)
    close(gq, wq)
    close(gk, wk)
    assert len(fake_npu.calls) == (2 if device_type == lib.KVX_DEVICE_ASCEND else 0)


def test_npu_outside_the_envelope_uses_the_reference(fake_npu, simulated):
    """GPT-J pairing and rot_dim 64 on an NPU: the reference, named in the warning."""
    keys = randn((5, 2, 64), torch.float32, 4)
    old, new = torch.randint(0, 64, (5,)), torch.randint(0, 64, (5,))
    cs = cache(64)
    want = keys.clone()
    rope.rerotate_keys(want, old, new, cs, is_neox=False)
    simulated(lib.KVX_DEVICE_ASCEND)
    with pytest.warns(RuntimeWarning, match="kvx.reference_rope"):
        rope.rerotate_keys(keys, old, new, cs, is_neox=False)
    assert fake_npu.calls == []
    close(keys, want)


def test_positions_outside_the_cache_are_still_an_error(fake_npu, simulated):
    simulated(lib.KVX_DEVICE_ASCEND)
    keys = randn((3, 1, 128), torch.float32, 5)
    before = keys.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(kvx.InvalidArgumentError, match="positions"):
            rope.rerotate_keys(keys, torch.tensor([0, 1, 64]), torch.tensor([0, 1, 2]), cache(128))
    assert torch.equal(keys, before)
