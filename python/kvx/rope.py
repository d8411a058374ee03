"""Rotary position embedding: re-rotation of cached keys (CacheBlend) and plain application.

Queries and keys are rotated in place, through libkvx on the CPU (and on any device whose
backend implements RoPE). Accepted shapes, with T tokens, H heads, head size D:

- ``[T, H, D]``;
- ``[L, T, H, D]``: L layers sharing the positions, e.g. ``kv[0].unflatten(-1, (H, D))`` for the
  K plane of a ``KV_2LTD`` buffer ``[2, L, T, H*D]``;
- ``[T, H*D]`` together with ``head_size=D`` (vLLM's flattened layout).

Any strides work as long as each head vector is contiguous (e.g. the K half of fused K/V rows,
``kv[:, 0]`` of ``[T, 2, H, D]``). dtypes: float32, float16, bfloat16; arithmetic is float32.

``cos_sin_cache`` is vLLM's table ``[max_position, rot_dim]``: row p holds cos(p * f_r) for
r < rot_dim/2, then sin(p * f_r). Only the first ``rot_dim`` dims of each head are rotated.
Pairs are NeoX-style (dims r and r + rot_dim/2, ``is_neox=True``) or GPT-J-style (dims 2r and
2r + 1). Positions are int64 or int32 ``[T]``; one outside ``[0, max_position)`` is an error and
nothing is modified.

:func:`rotary_embedding_k_fused` (LMCache) and :func:`rotary_embedding` (vLLM) take those projects'
arguments in their order, for adapters that swap one call.

On a device whose libkvx backend cannot run RoPE (not compiled in, not available, or no kernel:
Ascend, Cambricon; asked up front with ``kvx_backend_supports``), a fallback runs on the
tensors' own device instead (:mod:`kvx._rope_fallback`: the vendor's torch op where its
contract fits, e.g. ``torch_npu.npu_rotary_mul``, else the plain-torch
:mod:`kvx.reference_rope`), with a one-time ``RuntimeWarning`` per operation, device type and
route that names the route.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _devices, _torch
from ._errors import InvalidArgumentError
from ._native import check, ffi, lib
from ._rope_cache import build_cos_sin_cache
from ._tensors import (
    DEVICE_CPU,
    ArrayInfo,
    current_stream,
    describe,
    require_same_device,
    require_writable,
)

if TYPE_CHECKING:
    from ._rope_fallback import Fallback

_FLOAT_DTYPES = (lib.KVX_DTYPE_FLOAT32, lib.KVX_DTYPE_FLOAT16, lib.KVX_DTYPE_BFLOAT16)
_POSITION_DTYPES = (lib.KVX_DTYPE_INT64, lib.KVX_DTYPE_INT32)
_warned_fallback: set[tuple[str, int, str]] = set()


def _dtype_name(x: Any) -> str:
    return str(getattr(x, "dtype", type(x).__name__))


@dataclass(slots=True)
class _Heads:
    """A query/key tensor resolved to libkvx's strided view."""

    info: ArrayInfo
    num_layers: int
    num_tokens: int
    num_heads: int
    head_size: int
    layer_stride: int
    token_stride: int
    head_stride: int

    def extent(self) -> tuple[int, int]:
        return self.info.extent()


def _resolve_heads(x: Any, name: str, head_size: int | None) -> _Heads:
    info = describe(x, name)
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(
            f"{name}: expected dtype float32, float16 or bfloat16, got {_dtype_name(x)}"
        )
    shape, strides = info.shape, info.strides
    if len(shape) == 2:
        if head_size is None or head_size < 1 or shape[1] % head_size:
            raise InvalidArgumentError(
                f"{name}: a 2-D [T, H*D] tensor needs head_size, a divisor of {shape[1]}; "
                f"got head_size={head_size}"
            )
        if shape[1] > 1 and strides[1] != 1:
            raise InvalidArgumentError(
                f"{name}: the H*D axis must be contiguous (stride 1), got stride {strides[1]}"
            )
        num_layers, layer_stride = 1, 0
        tokens, heads, size = shape[0], shape[1] // head_size, head_size
        token_stride, head_stride = strides[0], head_size
    elif len(shape) in (3, 4):
        if head_size is not None and head_size != shape[-1]:
            raise InvalidArgumentError(
                f"head_size: expected {name}.shape[-1] ({shape[-1]}), got {head_size}"
            )
        if shape[-1] > 1 and strides[-1] != 1:
            raise InvalidArgumentError(
                f"{name}: head vectors must be contiguous (stride 1 along the last axis), "
                f"got stride {strides[-1]}"
            )
        num_layers, layer_stride = (shape[0], strides[0]) if len(shape) == 4 else (1, 0)
        tokens, heads, size = shape[-3:]
        token_stride, head_stride = strides[-3], strides[-2]
    else:
        raise InvalidArgumentError(
            f"{name}: expected [T, H*D], [T, H, D] or [L, T, H, D], got shape {shape}"
        )
    heads_view = _Heads(
        info, num_layers, tokens, heads, size, layer_stride, token_stride, head_stride
    )
    require_writable(info)
    _require_disjoint_heads(heads_view)
    return heads_view


def _require_disjoint_heads(h: _Heads) -> None:
    """Each head vector must be stored once: rotating shared memory twice would be wrong (and,
    across threads, a race). Sufficient test: along increasing strides, each stride clears the
    extent of everything inside it."""
    extent = h.head_size
    dims = [
        (n, s)
        for n, s in (
            (h.num_heads, h.head_stride),
            (h.num_tokens, h.token_stride),
            (h.num_layers, h.layer_stride),
        )
        if n > 1
    ]
    for n, stride in sorted(dims, key=lambda d: d[1]):
        if stride < extent:
            raise InvalidArgumentError(
                f"{h.info.name}: expected head vectors that do not overlap, "
                f"got shape {h.info.shape} with strides {h.info.strides}"
            )
        extent = stride * (n - 1) + extent


def _resolve_cache(cos_sin_cache: Any, rot_dim: int | None) -> ArrayInfo:
    info = describe(cos_sin_cache, "cos_sin_cache")
    if info.dtype not in _FLOAT_DTYPES:
        raise InvalidArgumentError(
            f"cos_sin_cache: expected dtype float32, float16 or bfloat16, "
            f"got {_dtype_name(cos_sin_cache)}"
        )
    if len(info.shape) != 2:
        raise InvalidArgumentError(
            f"cos_sin_cache: expected a 2-D [max_position, rot_dim] table, got shape {info.shape}"
        )
    max_position, width = info.shape
    if max_position < 1:
        raise InvalidArgumentError("cos_sin_cache: expected at least one position (row), got 0")
    if rot_dim is not None and rot_dim != width:
        raise InvalidArgumentError(
            f"rot_dim: expected cos_sin_cache.shape[1] ({width}), got {rot_dim}"
        )
    if width < 2 or width % 2:
        raise InvalidArgumentError(
            f"rot_dim: expected an even number >= 2 (cos_sin_cache.shape[1]), got {width}"
        )
    if info.strides[1] != 1:
        raise InvalidArgumentError(
            f"cos_sin_cache: rows must be contiguous (stride 1 along dim 1), got stride "
            f"{info.strides[1]}"
        )
    return info


def _contiguous(x: Any) -> Any:
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()


def _as_int64(x: Any) -> Any:
    return x.astype(np.int64) if isinstance(x, np.ndarray) else x.to(_torch.imported().int64)


def _resolve_positions(
    positions: Sequence[Any], names: Sequence[str], num_tokens: int
) -> list[ArrayInfo]:
    """Positions as contiguous int64 or int32 arrays of one dtype (int64 when they differ)."""
    infos = []
    for x, name in zip(positions, names, strict=True):
        info = describe(x, name)
        if info.dtype not in _POSITION_DTYPES:
            raise InvalidArgumentError(
                f"{name}: expected dtype int64 or int32, got {_dtype_name(x)}"
            )
        if len(info.shape) != 1:
            raise InvalidArgumentError(f"{name}: expected a 1-D [T] array, got shape {info.shape}")
        if info.shape[0] != num_tokens:
            raise InvalidArgumentError(
                f"{name}: expected {num_tokens} positions (one per token), got {info.shape[0]}"
            )
        infos.append(info)
    mixed = len({info.dtype for info in infos}) > 1
    out = []
    for x, info, name in zip(positions, infos, names, strict=True):
        if mixed and info.dtype != lib.KVX_DTYPE_INT64:
            info = describe(_as_int64(x), name)
        if info.shape[0] > 1 and info.strides[0] != 1:
            info = describe(_contiguous(info.obj), name)
        out.append(info)
    return out


def _fill_tensor(h: _Heads) -> Any:
    t = ffi.new("kvx_rope_tensor *")
    t.struct_size = ffi.sizeof("kvx_rope_tensor")
    t.dtype, t.num_layers, t.num_heads, t.head_size = (
        h.info.dtype,
        h.num_layers,
        h.num_heads,
        h.head_size,
    )
    t.num_tokens = h.num_tokens
    t.base = ffi.cast("void *", h.info.ptr)
    t.layer_stride, t.token_stride, t.head_stride = h.layer_stride, h.token_stride, h.head_stride
    return t


def _fill_cache(info: ArrayInfo, is_neox: bool) -> Any:
    c = ffi.new("kvx_rope_cache *")
    c.struct_size = ffi.sizeof("kvx_rope_cache")
    c.dtype, c.rot_dim = info.dtype, info.shape[1]
    c.pairing = lib.KVX_ROPE_NEOX if is_neox else lib.KVX_ROPE_GPTJ
    c.max_position, c.row_stride = info.shape[0], info.strides[0]
    c.cos_sin = ffi.cast("void *", info.ptr)
    return c


def _check_rot_dim(cache: ArrayInfo, heads: Sequence[_Heads]) -> None:
    for h in heads:
        if cache.shape[1] > h.head_size:
            raise InvalidArgumentError(
                f"rot_dim: expected <= the head size of {h.info.name} ({h.head_size}), "
                f"got {cache.shape[1]} (cos_sin_cache.shape[1])"
            )


def _require_separate(
    outputs: Sequence[ArrayInfo], inputs: Sequence[ArrayInfo], among_outputs: bool = True
) -> None:
    """Rotated tensors must not share memory with what is read, nor (`among_outputs`) with each
    other."""
    for i, out in enumerate(outputs):
        for other in (list(outputs[:i]) if among_outputs else []) + list(inputs):
            a, b = out.extent(), other.extent()
            if a[0] < b[1] and b[0] < a[1]:
                raise InvalidArgumentError(
                    f"{out.name}: expected memory separate from {other.name}, but they overlap"
                )


# The kvx_op of each public RoPE function, for kvx_backend_supports.
_OPS = {"rerotate_keys": lib.KVX_OP_ROPE_REROTATE, "apply_rotary": lib.KVX_OP_ROPE_APPLY}


def _fallback_reason(op: str, device_type: int) -> str:
    """Why libkvx cannot run ``op`` on ``device_type``'s devices now, or "" where it can: asked
    up front (kvx_backend_supports, a fact of the build, then kvx_backend_available)."""
    return _devices.by_kvx_type(device_type).why_not(_OPS[op])


def _native_or_fallback(
    op: str, device: tuple[int, int], call: Callable[[], int], make_fallback: Callable[[], Fallback]
) -> None:
    """Runs ``call`` (a libkvx status) where libkvx runs ``op`` on the device (always on the
    CPU, whose errors are raised); elsewhere runs the plain-torch fallback that ``make_fallback``
    builds (only then: it costs a microsecond per call) on the tensors' own device instead, with a
    one-time warning (never silently)."""
    reason = ""
    if device[0] != DEVICE_CPU and _torch.imported() is not None:
        reason = _fallback_reason(op, device[0])
    if not reason:
        check(call())
        return
    fallback = make_fallback()
    if (op, device[0], fallback.route) not in _warned_fallback:
        _warned_fallback.add((op, device[0], fallback.route))
        warnings.warn(
            f"kvx.rope.{op}: no native kernel for this device ({reason}); using {fallback.route}",
            RuntimeWarning,
            stacklevel=3,
        )
    fallback()


def rerotate_keys(
    keys: Any,
    old_positions: Any,
    new_positions: Any,
    cos_sin_cache: Any,
    *,
    is_neox: bool = True,
    rot_dim: int | None = None,
    head_size: int | None = None,
) -> Any:
    """Rotates keys that were rotated at ``old_positions`` to ``new_positions``, in place.

    LMCache's ``rotary_embedding_k_fused`` (CacheBlend): each key is rotated by the angle of
    ``new - old`` in one pass, in float32. The rotation is built from the two cache rows
    (``cos n cos o + sin n sin o``, ...), so the rows must be unit rotations, as those of
    :func:`build_cos_sin_cache` are: a cache whose rows carry a magnitude (YaRN's attention
    factor ``m`` multiplied into cos and sin) would scale the keys by ``m**2``.

    Args:
        keys: ``[T, H, D]``, ``[L, T, H, D]`` or ``[T, H*D]`` (then pass ``head_size``);
            float32/float16/bfloat16, any strides with contiguous head vectors.
        old_positions, new_positions: int64 or int32 ``[T]``, on the keys' device.
        cos_sin_cache: ``[max_position, rot_dim]`` float32/float16/bfloat16 (see
            :func:`build_cos_sin_cache`), on the keys' device.
        is_neox: NeoX pairing (dims r, r + rot_dim/2) if True, else GPT-J (dims 2r, 2r + 1).
        rot_dim: optional check; the rotary width is always ``cos_sin_cache.shape[1]``.
        head_size: D, required for 2-D keys.

    Returns:
        ``keys``, rotated.

    Raises:
        kvx.InvalidArgumentError: bad shape, dtype or device, a position outside
            ``[0, max_position)``, ``rot_dim`` odd or larger than the head size; nothing is
            modified.
    """
    heads = _resolve_heads(keys, "keys", head_size)
    cache = _resolve_cache(cos_sin_cache, rot_dim)
    _check_rot_dim(cache, [heads])
    old, new = _resolve_positions(
        [old_positions, new_positions], ["old_positions", "new_positions"], heads.num_tokens
    )
    device = require_same_device([heads.info, cache, old, new])
    _require_separate([heads.info], [cache, old, new])
    t, c = _fill_tensor(heads), _fill_cache(cache, is_neox)

    def call() -> int:
        return lib.kvx_rope_rerotate(
            t,
            c,
            ffi.cast("void *", old.ptr),
            ffi.cast("void *", new.ptr),
            old.dtype,
            current_stream(device),
        )

    def fallback() -> Fallback:
        from ._rope_fallback import Rerotate

        return Rerotate(
            device[0], keys, old.obj, new.obj, cos_sin_cache, is_neox=is_neox, head_size=head_size
        )

    _native_or_fallback("rerotate_keys", device, call, fallback)
    return keys


def apply_rotary(
    positions: Any,
    query: Any,
    key: Any,
    cos_sin_cache: Any,
    *,
    is_neox: bool = True,
    rot_dim: int | None = None,
    head_size: int | None = None,
) -> tuple[Any, Any]:
    """Applies rotary embedding at ``positions`` to ``query`` and ``key``, in place (vLLM
    ``rotary_embedding`` semantics).

    Args:
        positions: int64 or int32 ``[T]``.
        query: ``[T, Hq, D]``, ``[L, T, Hq, D]`` or ``[T, Hq*D]`` (with ``head_size``).
        key: the same forms with its own head count (and dtype), or None.
        cos_sin_cache, is_neox, rot_dim, head_size: as for :func:`rerotate_keys`.

    Returns:
        ``(query, key)``, rotated.

    Raises:
        kvx.InvalidArgumentError: as for :func:`rerotate_keys`, or when ``query`` and ``key``
            differ in token count or overlap; nothing is modified.
    """
    q = _resolve_heads(query, "query", head_size)
    k = _resolve_heads(key, "key", head_size) if key is not None else None
    if k is not None and k.num_tokens != q.num_tokens:
        raise InvalidArgumentError(
            f"key: expected the tokens of query ({q.num_tokens}), got {k.num_tokens}"
        )
    cache = _resolve_cache(cos_sin_cache, rot_dim)
    heads = [q] if k is None else [q, k]
    _check_rot_dim(cache, heads)
    (pos,) = _resolve_positions([positions], ["positions"], q.num_tokens)
    device = require_same_device([h.info for h in heads] + [cache, pos])
    # query and key may be views of one fused qkv tensor, interleaved but disjoint: libkvx tells
    # them from overlapping views element by element; the fallback, run without it, keeps the
    # conservative byte-range test.
    _require_separate([h.info for h in heads], [cache, pos], among_outputs=False)
    tq, tk, c = (
        _fill_tensor(q),
        (_fill_tensor(k) if k is not None else ffi.NULL),
        _fill_cache(cache, is_neox),
    )

    def call() -> int:
        return lib.kvx_rope_apply(
            tq, tk, c, ffi.cast("void *", pos.ptr), pos.dtype, current_stream(device)
        )

    def fallback() -> Fallback:
        from ._rope_fallback import Apply

        _require_separate([h.info for h in heads], [])
        return Apply(
            device[0], pos.obj, query, key, cos_sin_cache, is_neox=is_neox, head_size=head_size
        )

    _native_or_fallback("apply_rotary", device, call, fallback)
    return query, key


def rotary_embedding_k_fused(
    old_positions: Any,
    new_positions: Any,
    key: Any,
    head_size: int,
    cos_sin_cache: Any,
    is_neox: bool,
) -> None:
    """LMCache's ``lmcache.c_ops.rotary_embedding_k_fused``, same arguments in the same order, so
    that a CacheBlend adapter swaps one call: :func:`rerotate_keys` of ``key`` (LMCache passes
    ``[T, H*D]``; the other forms work too, with ``head_size`` equal to their last dim)."""
    rerotate_keys(
        key, old_positions, new_positions, cos_sin_cache, is_neox=is_neox, head_size=head_size
    )


def rotary_embedding(
    positions: Any, query: Any, key: Any, head_size: int, cos_sin_cache: Any, is_neox: bool
) -> None:
    """vLLM's ``_custom_ops.rotary_embedding``, same arguments in the same order (``key`` may be
    None): :func:`apply_rotary` of ``query`` and ``key`` at ``positions``."""
    apply_rotary(positions, query, key, cos_sin_cache, is_neox=is_neox, head_size=head_size)


__all__ = [
    "apply_rotary",
    "build_cos_sin_cache",
    "rerotate_keys",
    "rotary_embedding",
    "rotary_embedding_k_fused",
]
