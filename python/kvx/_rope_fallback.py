"""RoPE on devices whose libkvx backend has no RoPE kernel (Ascend NPUs and Cambricon MLUs: their
C backends answer "unsupported"), and on GPUs whose backend is not compiled in.

:mod:`kvx.rope` asks libkvx first (``kvx_backend_supports`` and ``kvx_backend_available``, through
:mod:`kvx._devices`); where the backend cannot run the op, it runs one of these fallbacks on
the tensors' own device and warns once per (operation, device type, route) with the route's name
(docs/design.md, "Backends": vendor torch ops first, then the plain-torch reference; never
silently).

Routes:

- ``torch_npu.npu_rotary_mul``, for tensors on an ``npu`` device, where its documented contract
  fits: ``out = x * r1 + rotate(x) * r2`` on 4-D inputs, ``rotary_mode="half"`` (NeoX pairing;
  GPT-J's interleaved pairing needs the newer ``rotary_mode="interleave"``, not used here). Its
  shape limits differ across torch_npu releases (checked: the docstrings of torch_npu 2.14.0 and
  the Ascend docs of older releases); the strictest of them is the envelope used here: last
  dimension exactly 128 (``rot_dim == 128``), B and N below 1000 and B*N at most 1024 (B = layers,
  N = heads, layout BSND with ``r1``/``r2`` of shape ``[1, S, 1, D]``). The op's
  internal precision is not documented, so the inputs are cast to float32 first (docs/design.md,
  "RoPE": float32 arithmetic whatever the storage dtype) and the result rounded back once.
  Re-rotation uses one rotation by ``new - old`` (angles combined in float32), as the C kernels
  do. Set ``KVX_ROPE_VENDOR_OPS=0`` to skip vendor ops.
- ``kvx.reference_rope``: the plain-torch reference, on any device, for everything else (MLUs:
  no torch_mlu op with a documented contract that fits was found).

Untested on real NPUs/MLUs: the tests run both routes on CPU tensors, with a stand-in for
``torch_npu`` written from its documented formula.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from . import _devices, reference_rope

try:
    import torch
except ImportError:  # pragma: no cover - numpy-only installs never fall back
    torch = None

VENDOR_NPU = "torch_npu.npu_rotary_mul"
REFERENCE = "kvx.reference_rope (plain torch on the tensors' device)"

# npu_rotary_mul's most restrictive documented limits (see the module docstring).
NPU_HEAD_DIM = 128
NPU_MAX_BN = 999  # B, N < 1000
NPU_MAX_BROADCAST = 1024


def _npu_rotary_mul() -> Callable[..., Any] | None:
    """torch_npu's op if torch_npu is importable (it is, wherever tensors live on an NPU)."""
    module = sys.modules.get("torch_npu")
    if module is None:
        try:
            module = importlib.import_module("torch_npu")
        except ImportError:
            return None
    return getattr(module, "npu_rotary_mul", None)


def choose_route(
    device: str, *, is_neox: bool, rot_dim: int, num_layers: int, num_heads: int
) -> str:
    """The fallback for a RoPE call on torch device type `device` ("npu", "mlu", "cuda", ...):
    VENDOR_NPU where its contract fits, else REFERENCE."""
    if (
        device == _devices.ASCEND.torch_type
        and os.environ.get("KVX_ROPE_VENDOR_OPS", "1") != "0"
        and is_neox
        and rot_dim == NPU_HEAD_DIM
        and num_layers <= NPU_MAX_BN
        and num_heads <= NPU_MAX_BN
        and num_layers * num_heads <= NPU_MAX_BROADCAST
        and _npu_rotary_mul() is not None
    ):
        return VENDOR_NPU
    return REFERENCE


def routes(device: str) -> str:
    """What `kvx info` says about RoPE on torch device type `device` without a kernel."""
    if device == _devices.ASCEND.torch_type:
        return f"fallback: {VENDOR_NPU} (NeoX, rot_dim 128) else kvx.reference_rope"
    return "fallback: kvx.reference_rope"


def _heads(x: Any, name: str, head_size: int | None) -> Any:
    """``x`` as ``[L, T, H, D]`` sharing its memory."""
    view = reference_rope._heads_view(x, name, head_size)
    return view if view.dim() == 4 else view.unsqueeze(0)


def _rotate_npu(x: Any, name: str, cos: Any, sin: Any, rot_dim: int, head_size: int | None) -> None:
    """Rotates the first rot_dim dims of every head of ``x`` in place by (cos, sin)
    ``[T, rot_dim/2]`` (float32) with npu_rotary_mul in half mode: BSND input, r1/r2
    ``[1, T, 1, rot_dim]``."""
    part = _heads(x, name, head_size)[..., :rot_dim]
    r1 = torch.cat((cos, cos), dim=-1)[None, :, None, :].contiguous()
    r2 = torch.cat((sin, sin), dim=-1)[None, :, None, :].contiguous()
    out = _npu_rotary_mul()(part.to(torch.float32).contiguous(), r1, r2)
    part.copy_(out.to(part.dtype))


def _angles(cache: Any, positions: Any) -> tuple[Any, Any]:
    cos, sin = reference_rope._angles(cache, positions, torch.float32)  # [T, 1, rot/2]
    return cos.squeeze(-2), sin.squeeze(-2)


class Fallback:
    """One deferred RoPE call; ``route`` names what ``__call__`` will run."""

    def __init__(
        self, device_type: int, tensors: list, cache: Any, is_neox: bool, head_size: int | None
    ):
        self.device_type = device_type
        self.tensors = [(t, name) for t, name in tensors if t is not None]
        self.cache, self.is_neox, self.head_size = cache, is_neox, head_size

    @functools.cached_property
    def route(self) -> str:  # asked twice per call: for the warning, then to run
        layers = heads = 1
        for t, name in self.tensors:
            view = _heads(t, name, self.head_size)
            layers, heads = max(layers, view.shape[0]), max(heads, view.shape[2])
        torch_type = _devices.by_kvx_type(self.device_type).torch_type
        return choose_route(
            torch_type,
            is_neox=self.is_neox,
            rot_dim=self.cache.shape[1],
            num_layers=layers,
            num_heads=heads,
        )


class Rerotate(Fallback):
    def __init__(
        self,
        device_type: int,
        keys: Any,
        old_positions: Any,
        new_positions: Any,
        cache: Any,
        *,
        is_neox: bool,
        head_size: int | None,
    ):
        super().__init__(device_type, [(keys, "keys")], cache, is_neox, head_size)
        self.keys, self.old, self.new = keys, old_positions, new_positions

    def __call__(self) -> None:
        if self.route != VENDOR_NPU:
            reference_rope.rerotate_keys(
                self.keys,
                self.old,
                self.new,
                self.cache,
                is_neox=self.is_neox,
                head_size=self.head_size,
            )
            return
        cos_old, sin_old = _angles(self.cache, self.old)
        cos_new, sin_new = _angles(self.cache, self.new)
        cos = cos_new * cos_old + sin_new * sin_old  # angle new - old
        sin = sin_new * cos_old - cos_new * sin_old
        _rotate_npu(self.keys, "keys", cos, sin, self.cache.shape[1], self.head_size)


class Apply(Fallback):
    def __init__(
        self,
        device_type: int,
        positions: Any,
        query: Any,
        key: Any,
        cache: Any,
        *,
        is_neox: bool,
        head_size: int | None,
    ):
        super().__init__(device_type, [(query, "query"), (key, "key")], cache, is_neox, head_size)
        self.positions, self.query, self.key = positions, query, key

    def __call__(self) -> None:
        if self.route != VENDOR_NPU:
            reference_rope.apply_rotary(
                self.positions,
                self.query,
                self.key,
                self.cache,
                is_neox=self.is_neox,
                head_size=self.head_size,
            )
            return
        cos, sin = _angles(self.cache, self.positions)
        for t, name in self.tensors:
            _rotate_npu(t, name, cos, sin, self.cache.shape[1], self.head_size)
