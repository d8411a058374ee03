"""KV transfer between an engine's paged KV cache and a dense buffer (``kvx.transfer``)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _devices, _torch, layouts
from ._errors import InvalidArgumentError
from ._native import check, ffi, lib
from ._tensors import (
    ArrayInfo,
    current_stream,
    describe,
    is_tensor,
    reachable_from,
    require_same_device,
    require_writable,
)


class Direction(enum.IntEnum):
    """Which way data moves."""

    PAGED_TO_DENSE = 0  # store / offload
    DENSE_TO_PAGED = 1  # load / retrieve


_DIRECTION_ALIASES = {
    "paged_to_dense": Direction.PAGED_TO_DENSE,
    "store": Direction.PAGED_TO_DENSE,
    "offload": Direction.PAGED_TO_DENSE,
    "dense_to_paged": Direction.DENSE_TO_PAGED,
    "load": Direction.DENSE_TO_PAGED,
    "retrieve": Direction.DENSE_TO_PAGED,
}


def _direction(direction: str | int | Direction) -> Direction:
    if isinstance(direction, str):
        try:
            return _DIRECTION_ALIASES[direction]
        except KeyError:
            pass
    elif direction in (0, 1) and not isinstance(direction, bool):
        return Direction(direction)
    raise InvalidArgumentError(
        f"direction: expected one of {sorted(_DIRECTION_ALIASES)} or kvx.Direction, "
        f"got {direction!r}"
    )


@dataclass(frozen=True)
class PagedCache:
    """An engine's paged KV cache resolved to the strided view libkvx copies from/to."""

    layout: layouts.PagedLayout
    infos: list[ArrayInfo]
    num_layers: int
    num_kv: int
    num_heads: int
    head_size: int
    block_size: int
    num_blocks: int
    strides: dict[str, int]

    @property
    def dtype(self) -> int:
        return self.infos[0].dtype

    @property
    def device(self) -> tuple[int, int]:
        return self.infos[0].device

    def reading(self) -> str:
        """How the layout read the engine's tensors, for messages about sizes that disagree."""
        info = self.infos[0]
        axes = ", ".join(
            f"{axis}={size}" for axis, size in zip(self.layout.axes, info.shape, strict=True)
        )
        return f"layout {self.layout.name} read {info.name} of shape {info.shape} as [{axes}]"

    def bases(self) -> list[int]:
        """Base addresses: per layer, or per (kv, layer) with K first."""
        if self.layout.container == layouts.SINGLE:
            info = self.infos[0]
            return [
                info.ptr + layer * self.strides["layer"] * info.itemsize
                for layer in range(self.num_layers)
            ]
        return [info.ptr for info in self.infos]


def _paged_names(layout: layouts.PagedLayout, count: int, num_layers: int) -> list[str]:
    if layout.container == layouts.SINGLE:
        return ["paged"]
    if layout.container == layouts.LAYER_LIST:
        return [f"paged[{i}]" for i in range(count)]
    if layout.container == layouts.KV_TUPLES:
        return [f"paged[{i % num_layers}][{i // num_layers}]" for i in range(count)]
    return [f"paged[{i // num_layers}][{i % num_layers}]" for i in range(count)]


def resolve_paged(paged: Any, layout: str | int | layouts.PagedLayout) -> PagedCache:
    """Checks an engine's paged cache against ``layout`` and reads its geometry.

    Every tensor of the cache must share dtype, device, shape and strides (the strides are those of
    the first one); head vectors must be contiguous (the ``dim`` stride is 1).
    """
    layout = layouts.paged_layout(layout)
    tensors, num_layers = layouts.flatten_paged(layout, paged, is_tensor)
    names = _paged_names(layout, len(tensors), num_layers)
    infos = [describe(t, name) for t, name in zip(tensors, names, strict=True)]
    first = infos[0]
    sizes = layouts.axis_sizes(layout.axes, first.shape, f"{first.name} (layout {layout.name})")
    for info in infos[1:]:
        for attr in ("dtype", "shape", "strides"):
            if getattr(info, attr) != getattr(first, attr):
                raise InvalidArgumentError(
                    f"{info.name}: expected the {attr} of {first.name} ({getattr(first, attr)}), "
                    f"got {getattr(info, attr)}"
                )
    require_same_device(infos)
    strides = dict(zip(layout.axes, first.strides, strict=True))
    if "kv" in sizes and sizes["kv"] != 2:
        raise InvalidArgumentError(
            f"{first.name}: the kv axis of layout {layout.name} must have size 2, got {sizes['kv']}"
        )
    if sizes["dim"] > 1 and strides["dim"] != 1:
        raise InvalidArgumentError(
            f"{first.name}: head vectors must be contiguous (stride 1 along the last axis), "
            f"got stride {strides['dim']}"
        )
    return PagedCache(
        layout=layout,
        infos=infos,
        num_layers=num_layers,
        num_kv=sizes.get("kv", layout.num_kv_fixed or 2),
        num_heads=sizes.get("head", 1),
        head_size=sizes["dim"],
        block_size=sizes.get("token", 1),
        num_blocks=sizes["block"],
        strides=strides,
    )


def _expect(name: str, what: str, expected: int, got: int, why: str = "") -> None:
    if expected != got:
        raise InvalidArgumentError(f"{name}: expected {what} {expected}, got {got}{why}")


def _dense_strides(
    info: ArrayInfo, fmt: layouts.DenseFormat, cache: PagedCache, num_tokens: int
) -> dict[str, int]:
    """Checks the dense buffer's shape against the paged cache and returns its strides by axis."""
    axes = layouts.dense_axes(fmt, len(info.shape))
    sizes = layouts.axis_sizes(axes, info.shape, f"dense (format {fmt.name})")
    strides = dict(zip(axes, info.strides, strict=True))
    # Sizes taken from the paged cache say how they were read: a tensor in another layout than
    # the one named (NHD passed as HND) shows up here first.
    why = (
        f" ({cache.reading()}; dense format {fmt.name} reads shape {info.shape} "
        f"as [{', '.join(axes)}])"
    )
    _expect("dense", "K/V planes (first axis of the kv dimension)", cache.num_kv, sizes["kv"], why)
    _expect("dense", "layers", cache.num_layers, sizes.get("layer", 1), why)
    _expect("dense", "tokens (len(slot_mapping))", num_tokens, sizes["token"])
    if "hd" in sizes:
        _expect(
            "dense", "num_heads * head_size", cache.num_heads * cache.head_size, sizes["hd"], why
        )
        if sizes["hd"] > 1 and strides["hd"] != 1:
            raise InvalidArgumentError(
                f"dense: the H*D axis must be contiguous (stride 1), got stride {strides['hd']}"
            )
        strides["head"] = cache.head_size
    else:
        _expect("dense", "heads", cache.num_heads, sizes["head"], why)
        _expect("dense", "head size", cache.head_size, sizes["dim"], why)
        if sizes["dim"] > 1 and strides["dim"] != 1:
            raise InvalidArgumentError(
                f"dense: head vectors must be contiguous (stride 1), got stride {strides['dim']}"
            )
    return strides


def _slot_mapping(slot_mapping: Any, device: tuple[int, int]) -> ArrayInfo:
    info = describe(slot_mapping, "slot_mapping")
    if info.dtype != lib.KVX_DTYPE_INT64:
        raise InvalidArgumentError(
            f"slot_mapping: expected dtype int64, got {getattr(slot_mapping, 'dtype', '?')}"
        )
    if len(info.shape) != 1:
        raise InvalidArgumentError(f"slot_mapping: expected a 1-D array, got shape {info.shape}")
    if _devices.by_kvx_type(device[0]).plans_on_host:
        # These backends (Ascend, CNRT) plan on the host: take the mapping from the host or the
        # cache's device and hand over a host copy (`.cpu()` waits for the device work that
        # produced it).
        if info.device != device and info.device_type != lib.KVX_DEVICE_CPU:
            raise InvalidArgumentError(
                f"slot_mapping: expected the host or the paged cache's device {device}, "
                f"got {info.device}"
            )
        if info.device_type != lib.KVX_DEVICE_CPU:
            slot_mapping = slot_mapping.cpu()
            info = describe(slot_mapping, "slot_mapping")
    elif not reachable_from(info, device):
        raise InvalidArgumentError(
            f"slot_mapping: expected the paged cache's device {device}, got {info.device}"
        )
    if info.shape[0] > 1 and info.strides[0] != 1:
        contiguous = (
            np.ascontiguousarray(slot_mapping)
            if isinstance(slot_mapping, np.ndarray)
            else slot_mapping.contiguous()
        )
        return describe(contiguous, "slot_mapping")
    return info


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def transfer(
    paged: Any,
    dense: Any,
    slot_mapping: Any,
    *,
    direction: str | int | Direction,
    layout: str | int | layouts.PagedLayout = "vllm_nhd",
    dense_format: str | layouts.DenseFormat = "KV_2LTD",
) -> None:
    """Copies every layer's K/V between a paged KV cache and a dense buffer.

    Args:
        paged: the engine's cache in ``layout`` (a name from ``kvx.layouts.PAGED_LAYOUTS`` or an
            LMCache ``EngineKVFormat`` number): e.g. for ``"vllm_nhd"`` a list of L tensors
            ``[2, num_blocks, block_size, num_heads, head_size]``. Any dtype (fp8, fp16, bf16,
            fp32, ...); any strides as long as head vectors are contiguous.
        dense: the dense buffer in ``dense_format``, e.g. ``KV_2LTD`` ``[2, L, T, H*D]``; same
            dtype and device as ``paged`` (or, for a GPU cache, pinned host memory: the offload
            to CPU RAM is then a single kernel launch).
        slot_mapping: int64 ``[T]``, on the cache's device: the slot (``block * block_size +
            offset``) of each dense token; negative entries skip the token in both directions.
        direction: ``"store"`` (paged -> dense) or ``"load"`` (dense -> paged), or a
            :class:`Direction`.

    Raises:
        kvx.InvalidArgumentError: bad shapes, dtypes, devices, a read-only destination, or a slot
            at or beyond ``num_blocks * block_size``; nothing is written in that case.

    The copy is ordered on the device's current stream (asynchronous on GPUs: there an
    out-of-range slot is skipped and reported by :func:`synchronize`). If two dense tokens map to
    the same slot when loading, which one lands is unspecified.
    """
    direction = _direction(direction)
    cache = resolve_paged(paged, layout)
    slots = _slot_mapping(slot_mapping, cache.device)
    num_tokens = slots.shape[0]
    fmt = layouts.dense_format(dense_format)
    dense_info = describe(dense, "dense")
    if dense_info.dtype != cache.dtype:
        raise InvalidArgumentError(
            f"dense: expected the paged cache's dtype {getattr(cache.infos[0].obj, 'dtype', '?')}, "
            f"got {getattr(dense, 'dtype', '?')}"
        )
    require_same_device([cache.infos[0], dense_info])
    strides = _dense_strides(dense_info, fmt, cache, num_tokens)
    for info in cache.infos if direction == Direction.DENSE_TO_PAGED else [dense_info]:
        require_writable(info)
    for info in cache.infos:
        if _overlaps(info.extent(), dense_info.extent()):
            raise InvalidArgumentError(
                f"dense: expected memory separate from the paged cache, but it overlaps {info.name}"
            )
    _call_transfer(cache, dense_info, strides, slots, direction)


def _descriptors(
    cache: PagedCache,
    bases: Sequence[int],
    dense_base: int,
    dense_strides: dict[str, int],
    num_tokens: int,
) -> tuple[Any, Any, Any]:
    """(kvx_paged_desc, kvx_dense_desc, the bases array they point into: keep it alive) for the
    cache's geometry with its planes at `bases` and the dense buffer at `dense_base`."""
    bases_array = ffi.new("void *[]", [ffi.cast("void *", b) for b in bases])
    p = ffi.new("kvx_paged_desc *")
    p.struct_size = ffi.sizeof("kvx_paged_desc")
    p.dtype, p.num_layers, p.num_kv = cache.dtype, cache.num_layers, cache.num_kv
    p.num_heads, p.head_size = cache.num_heads, cache.head_size
    p.num_bases, p.bases = len(bases_array), bases_array
    p.block_size, p.num_blocks = cache.block_size, cache.num_blocks
    s = cache.strides
    p.kv_stride, p.block_stride = s.get("kv", 0), s["block"]
    p.token_stride, p.head_stride = s.get("token", 0), s.get("head", 0)

    d = ffi.new("kvx_dense_desc *")
    d.struct_size = ffi.sizeof("kvx_dense_desc")
    d.dtype, d.num_layers, d.num_kv = cache.dtype, cache.num_layers, cache.num_kv
    d.num_heads, d.head_size, d.num_tokens = cache.num_heads, cache.head_size, num_tokens
    d.base = ffi.cast("void *", dense_base)
    d.kv_stride, d.layer_stride = dense_strides.get("kv", 0), dense_strides.get("layer", 0)
    d.token_stride, d.head_stride = dense_strides["token"], dense_strides.get("head", 0)
    return p, d, bases_array


def _call_transfer(
    cache: PagedCache,
    dense: ArrayInfo,
    dense_strides: dict[str, int],
    slots: ArrayInfo,
    direction: Direction,
) -> None:
    p, d, _bases = _descriptors(cache, cache.bases(), dense.ptr, dense_strides, slots.shape[0])
    stream = current_stream(cache.device)
    check(lib.kvx_transfer(p, d, ffi.cast("int64_t *", slots.ptr), int(direction), stream))


def synchronize(x: Any = None) -> None:
    """Waits for the work kvx enqueued on the current stream of ``x``'s device (a tensor; None
    means the CPU) and raises what asynchronous backends found while running it, e.g. an
    out-of-range slot (:class:`kvx.InvalidArgumentError`; that token was skipped). ``x`` may
    have any dtype, int16 CDF tables included: only its device matters."""
    if x is None:
        device = (lib.KVX_DEVICE_CPU, 0)
    elif _torch.is_tensor(x):
        # an empty uint8 tensor on x's device stands for it, whatever x's dtype
        device = describe(x.new_empty(0, dtype=_torch.imported().uint8), "x").device
    else:
        device = describe(x, "x").device
    check(lib.kvx_synchronize(current_stream(device)))


def store(paged: Any, dense: Any, slot_mapping: Any, **kwargs: Any) -> None:
    """``transfer(..., direction="store")``: gather from the paged cache into ``dense``."""
    transfer(paged, dense, slot_mapping, direction=Direction.PAGED_TO_DENSE, **kwargs)


def load(paged: Any, dense: Any, slot_mapping: Any, **kwargs: Any) -> None:
    """``transfer(..., direction="load")``: scatter ``dense`` into the paged cache."""
    transfer(paged, dense, slot_mapping, direction=Direction.DENSE_TO_PAGED, **kwargs)


__all__: Sequence[str] = [
    "Direction",
    "PagedCache",
    "load",
    "resolve_paged",
    "store",
    "synchronize",
    "transfer",
]
