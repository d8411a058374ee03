"""How LMCache's transfer ops lay out K and V, as kvx strided views, and the one libkvx call.

LMCache's torch ops read an ``EngineKVFormat`` per op, not once: ``multi_layer_kv_transfer``
reads every per-layer pointer of format 1 (``[2, NB, BS, NH, HS]``) as ``[2, PBS, hidden]``,
``multi_layer_block_kv_transfer`` reads it as ``[2, NB, BS, NH, HS]``. Each such reading is a
:class:`kvx.layouts.PagedLayout`: the axes of one paged tensor and how the tensors are grouped.
The ops (:mod:`.transfer_ops`) pick a reading per format, then

* :func:`paged_tensors` views LMCache's tensors (``list[torch.Tensor]``) as that reading's axes;
* :func:`paged_pointers` builds the same description from raw pointers and the geometry LMCache
  passes (page_buffer_size, block_size, ``PageBufferShapeDesc``), without making tensors of the
  pointers, so it works on any device;
* :func:`plan` checks one copy the way kvx.transfer() does and returns it ready
  to run as one ``kvx_transfer`` call (several are checked before the first one runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any

import torch

from .. import _devices, _tensors, layouts
from .._errors import InvalidArgumentError
from ..layouts import KV_LISTS, LAYER_LIST, PagedLayout
from ..transfer import (
    Direction,
    PagedCache,
    _call_transfer,
    _dense_strides,
    _overlaps,
    _slot_mapping,
    resolve_paged,
)

# Readings kvx.layouts has no preset for. A size-1 `token` axis (block_size 1) stands for a flat
# slot axis: consecutive slots then count as adjacent, so runs of them copy as one piece.
TWO_PBS = PagedLayout(
    "lmcache_two_pbs",
    ("kv", "block", "token", "dim"),
    LAYER_LIST,
    "LMCache's per-layer [2, PBS, hidden] (formats read as K/V planes over all slots)",
)
PLANE = PagedLayout(
    "lmcache_plane",
    ("block", "token", "dim"),
    LAYER_LIST,
    "one plane per layer [PBS, hidden] (MLA; plane 0 of [2, PBS, hidden])",
)
NB_TWO = PagedLayout(
    "lmcache_nb_two",
    ("block", "kv", "token", "dim"),
    LAYER_LIST,
    "LMCache's per-layer [NB, 2, BS, hidden] (K/V interleaved per block)",
)
UNILATERAL = PagedLayout(
    "lmcache_unilateral",
    ("block", "token", "dim"),
    KV_LISTS,
    "SGLang's K list and V list, each [PBS, hidden]",
)
PACKED_HND = PagedLayout(
    "lmcache_packed_hnd",
    ("block", "head", "token", "dim"),
    LAYER_LIST,
    "K/V packed per head, one plane per layer [NB, NH, BS, CS] (CS = 2 * HS)",
)
PACKED_NHD = PagedLayout(
    "lmcache_packed_nhd",
    ("block", "token", "head", "dim"),
    LAYER_LIST,
    "one plane per layer [NB, BS, NH, CS] (K/V packed per head, or one K or V component)",
)
PRESET = layouts.PAGED_LAYOUTS

# Axes inside one (plane, block) of a paged cache: what LMCache's PageBufferShapeDesc calls a
# block's scalars (bs * nh * hs when tight, block_stride_elems when padded).
_BLOCK_CONTENT = frozenset({"token", "head", "dim"})


def direction(lmcache_direction: Any) -> Direction:
    """kvx's direction for LMCache's ``TransferDirection`` (H2D = 0: LMCache -> paged buffer,
    D2H = 1: paged buffer -> LMCache), compared by value as LMCache does."""
    value = int(lmcache_direction)
    if value == 0:
        return Direction.DENSE_TO_PAGED
    if value == 1:
        return Direction.PAGED_TO_DENSE
    raise InvalidArgumentError(
        f"direction: expected TransferDirection.H2D (0) or D2H (1), got {lmcache_direction!r}"
    )


def pointers(ptrs: torch.Tensor) -> list[int]:
    """The addresses in a 1-D int64/uint64 pointer tensor (on any device), as unsigned ints."""
    if ptrs.dtype not in (torch.int64, torch.uint64) or ptrs.dim() != 1:
        raise InvalidArgumentError(
            f"key_value_ptrs: expected a 1-D int64 or uint64 tensor of pointers, got "
            f"{ptrs.dtype} of shape {tuple(ptrs.shape)}"
        )
    return [p & 0xFFFF_FFFF_FFFF_FFFF for p in ptrs.tolist()]


def view(t: Any, shape: Sequence[int], name: str, layout: PagedLayout) -> torch.Tensor:
    """``t`` viewed as ``shape`` (one -1 allowed), never copied: kvx writes through the view."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    try:
        return t.view(*shape)
    except RuntimeError:
        raise InvalidArgumentError(
            f"{name}: shape {tuple(t.shape)} (strides {t.stride()}) cannot be viewed as "
            f"{tuple(shape)} ({layout.description}) without a copy"
        ) from None


def paged_tensors(paged: Any, layout: PagedLayout) -> PagedCache:
    """LMCache's tensors, already viewed as ``layout``'s axes, checked as kvx.transfer does."""
    return resolve_paged(paged, layout)


def block_strides(
    layout: PagedLayout, shape: Sequence[int], block_elems: int = 0
) -> tuple[int, ...]:
    """Row-major strides of ``shape``, except that with ``block_elems`` > 0 one (plane, block) of
    the cache spans ``block_elems`` elements (LMCache's ``block_stride_elems``: padded pools)
    rather than its tight token * head * dim."""
    strides, step, inside = [0] * len(shape), 1, True
    for i in reversed(range(len(shape))):
        if inside and layout.axes[i] not in _BLOCK_CONTENT:
            inside = False
            if block_elems > 0:
                if block_elems < step:
                    raise InvalidArgumentError(
                        f"block_stride_elems: expected 0 or at least one block's {step} "
                        f"elements, got {block_elems}"
                    )
                step = block_elems
        strides[i] = step
        step *= shape[i]
    return tuple(strides)


def kvx_device(device: Any) -> tuple[int, int]:
    """(kvx device type, index) of a torch device or device string."""
    device = torch.device(device)
    kind = _devices.by_torch_device(device)
    if device.index is not None or kind is _devices.CPU:
        return kind.kvx_type, device.index or 0
    module = kind.torch_module(torch)
    return kind.kvx_type, int(module.current_device()) if module is not None else 0


def _dtype_code(dtype: torch.dtype) -> int:
    code = _tensors._TORCH_DTYPES.get(dtype) or _tensors._fill_torch_dtypes().get(dtype)
    if code is None:
        raise InvalidArgumentError(f"dtype {dtype} has no libkvx equivalent")
    return code


def _dtype_name(code: int) -> str:
    names = {c: str(dtype) for dtype, c in _tensors._TORCH_DTYPES.items()}
    return names.get(code, f"kvx dtype {code}")


def raw_array(
    ptr: int,
    shape: Sequence[int],
    strides: Sequence[int],
    dtype: torch.dtype,
    device: tuple[int, int],
    name: str,
    pinned: bool = False,
) -> _tensors.ArrayInfo:
    """What kvx knows of memory given as a raw pointer: LMCache's geometry, taken on trust."""
    if ptr == 0:
        raise InvalidArgumentError(f"{name}: expected a non-zero pointer")
    itemsize = dtype.itemsize
    shape, strides = tuple(int(n) for n in shape), tuple(int(s) for s in strides)
    span = _tensors._extent(ptr, shape, strides, itemsize)
    return _tensors.ArrayInfo(
        None,
        name,
        ptr,
        _dtype_code(dtype),
        itemsize,
        shape,
        strides,
        device[0],
        device[1],
        True,
        span,
        span,
        pinned,
    )


def paged_pointers(
    ptrs: Sequence[int],
    layout: PagedLayout,
    sizes: dict[str, int],
    dtype: torch.dtype,
    device: tuple[int, int],
    num_layers: int,
    block_elems: int = 0,
) -> PagedCache:
    """The paged cache at raw ``ptrs`` (one per tensor of ``layout``'s container: per layer, K
    layers then V layers, or one for a cross-layer cache), each a tensor of ``layout``'s axes
    with ``sizes`` and row-major strides (padded blocks: see :func:`block_strides`)."""
    expected = {LAYER_LIST: num_layers, KV_LISTS: 2 * num_layers}.get(layout.container, 1)
    if len(ptrs) < expected:
        raise InvalidArgumentError(
            f"key_value_ptrs: expected {expected} pointers for {layout.description}, "
            f"got {len(ptrs)}"
        )
    sizes = {axis: sizes[axis] for axis in layout.axes}
    shape = tuple(sizes.values())
    if min(shape, default=1) <= 0:
        raise InvalidArgumentError(
            f"paged cache: every size of [{', '.join(layout.axes)}] must be positive, "
            f"got {shape} ({layout.description})"
        )
    strides = block_strides(layout, shape, block_elems)
    first = raw_array(ptrs[0], shape, strides, dtype, device, "key_value_ptrs[0]")
    infos = [first]
    for i, p in enumerate(ptrs[1:expected], 1):  # the same geometry at other addresses
        if p == 0:
            raise InvalidArgumentError(f"key_value_ptrs[{i}]: expected a non-zero pointer")
        span = (p, p + first.span[1] - first.ptr)
        infos.append(_replace(first, name=f"key_value_ptrs[{i}]", ptr=p, storage=span, span=span))
    return PagedCache(
        layout=layout,
        infos=infos,
        num_layers=num_layers,
        num_kv=sizes["kv"] if "kv" in layout.axes else (layout.num_kv_fixed or 2),
        num_heads=sizes.get("head", 1),
        head_size=sizes["dim"],
        block_size=sizes.get("token", 1),
        num_blocks=sizes["block"],
        strides=dict(zip(layout.axes, strides, strict=True)),
    )


@dataclass(frozen=True)
class Copy:
    """One checked ``kvx_transfer`` call."""

    cache: PagedCache
    dense: _tensors.ArrayInfo
    dense_strides: dict[str, int]
    slots: _tensors.ArrayInfo
    direction: Direction

    def run(self) -> None:
        _call_transfer(self.cache, self.dense, self.dense_strides, self.slots, self.direction)


def slot_tensor(slot_mapping: Any, device: torch.device) -> torch.Tensor:
    """LMCache's slot mapping as kvx takes it: int64, where the paged cache's device reads it
    (LMCache's torch ops take any integer dtype and device and convert the same way)."""
    if not isinstance(slot_mapping, torch.Tensor):
        slot_mapping = torch.as_tensor(slot_mapping)
    if slot_mapping.dtype == torch.int64 and _readable(slot_mapping, device):
        return slot_mapping
    return slot_mapping.to(device=device, dtype=torch.int64)


def _readable(t: torch.Tensor, device: torch.device) -> bool:
    if t.device.type == device.type:
        return device.index is None or t.device.index == device.index
    if not t.is_cpu:
        return False
    # Host memory: backends that plan on the host read it anywhere, GPUs only when pinned.
    return _devices.by_torch_device(device).plans_on_host or t.is_pinned()


def plan(
    cache: PagedCache,
    dense: Any,
    dense_format: str,
    slot_mapping: torch.Tensor,
    kvx_direction: Direction,
    name: str = "key_value",
) -> Copy:
    """Checks one copy between ``cache`` and ``dense`` (a tensor, or an ArrayInfo of raw memory)
    as kvx.transfer() does: shapes, dtypes, devices, writability, overlap."""
    slots = _slot_mapping(slot_mapping, cache.device)
    info = dense if isinstance(dense, _tensors.ArrayInfo) else _tensors.describe(dense, name)
    if info.dtype != cache.dtype:
        raise InvalidArgumentError(
            f"{info.name}: expected the paged cache's dtype {_dtype_name(cache.dtype)}, got "
            f"{_dtype_name(info.dtype)}"
        )
    _tensors.require_same_device([cache.infos[0], info])
    strides = _dense_strides(info, layouts.dense_format(dense_format), cache, slots.shape[0])
    for target in cache.infos if kvx_direction == Direction.DENSE_TO_PAGED else [info]:
        _tensors.require_writable(target)
    for paged in cache.infos:
        if _overlaps(paged.extent(), info.extent()):
            raise InvalidArgumentError(
                f"{info.name}: expected memory separate from the paged cache, but it overlaps "
                f"{paged.name}"
            )
    return Copy(cache, info, strides, slots, kvx_direction)


# ---------------------------------------------------------------- multi_layer_block_kv_transfer


def is_pointer_tensor(x: Any) -> bool:
    """Whether ``x`` is LMCache's 1-D int64/uint64 tensor of raw addresses."""
    return isinstance(x, torch.Tensor) and x.dtype in (torch.int64, torch.uint64) and x.dim() == 1


_ELEMENT_SIZE_DTYPES = {1: torch.uint8, 2: torch.float16, 4: torch.float32}


def block_dtype(paged: Any, objects: Any, shape_desc: Any) -> torch.dtype:
    """The KV dtype, found where LMCache's torch version looks, in the same order:
    ``shape_desc.dtype``, the paged tensors, the object tensors, ``shape_desc.element_size``
    (1: uint8, 2: float16, 4: float32), else bfloat16. Only raw pointers take it from here."""
    dtype = getattr(shape_desc, "dtype", None)
    if dtype is not None:
        return dtype
    first = paged[0] if isinstance(paged, list) and paged else None
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], torch.Tensor):
        return first[0].dtype
    if isinstance(first, torch.Tensor):
        return first.dtype
    if isinstance(paged, torch.Tensor) and not is_pointer_tensor(paged):
        return paged.dtype
    if isinstance(objects, list) and objects and isinstance(objects[0], torch.Tensor):
        return objects[0].dtype
    size = int(getattr(shape_desc, "element_size", 0) or 0)
    if size > 0:
        if size not in _ELEMENT_SIZE_DTYPES:
            raise InvalidArgumentError(
                f"shape_desc.element_size: expected one of {sorted(_ELEMENT_SIZE_DTYPES)}, "
                f"got {size}"
            )
        return _ELEMENT_SIZE_DTYPES[size]
    return torch.bfloat16


def engine_tensors(paged: Any, layout: PagedLayout) -> Any:
    """An engine's tensors in ``layout``'s container, from what LMCache's block transfer takes
    (SGLang's lists also flat: ``[K_0, ..., K_{L-1}, V_0, ..., V_{L-1}]``)."""
    got = type(paged).__name__
    if layout.container == layouts.SINGLE:
        if isinstance(paged, torch.Tensor):
            return paged
        raise TypeError(f"Cross-layer formats require a single torch.Tensor input; got: {got}")
    if not isinstance(paged, list):
        raise TypeError(
            f"paged_buffer_ptrs_tensor: expected a list of tensors or a 1-D pointer tensor "
            f"for {layout.description}; got: {got}"
        )
    if layout.container == KV_LISTS:
        if len(paged) == 2 and all(isinstance(group, (list, tuple)) for group in paged):
            return (list(paged[0]), list(paged[1]))
        if len(paged) % 2:
            raise InvalidArgumentError("Flat SGLang MHA list must have even length (2*NL)")
        return (paged[: len(paged) // 2], paged[len(paged) // 2 :])
    return paged


def map_tensors(container: Any, fn: Any, name: str = "paged_buffer_ptrs_tensor") -> Any:
    """``container`` (a tensor, or lists and tuples of them, nested) with ``fn(tensor, name)``
    applied to each tensor, ``name`` saying where it sits."""
    if isinstance(container, (list, tuple)):
        mapped = [map_tensors(item, fn, f"{name}[{i}]") for i, item in enumerate(container)]
        return tuple(mapped) if isinstance(container, tuple) else mapped
    return fn(container, name)


@dataclass(frozen=True)
class ChunkObject:
    """One LMCache object as a dense ``[planes, L, chunk, hidden]`` buffer: a view of its
    tensor, or raw host memory."""

    name: str
    tensor: torch.Tensor | None
    raw: _tensors.ArrayInfo | None = None
    dtype: torch.dtype | None = None

    def tokens(self, offset: int, count: int) -> Any:
        """Tokens ``offset .. offset + count`` of the chunk, every plane and layer."""
        if self.tensor is not None:
            return self.tensor[:, :, offset : offset + count]
        raw = self.raw
        assert raw is not None and self.dtype is not None
        shape = (*raw.shape[:2], count, *raw.shape[3:])  # within the chunk: the caller's ranges
        ptr = raw.ptr + offset * raw.strides[2] * raw.itemsize
        return raw_array(ptr, shape, raw.strides, self.dtype, raw.device, self.name, raw.pinned)


def block_objects(
    objects: Any,
    cache: PagedCache,
    shape_desc: Any,
    chunk_tokens: int,
    dtype: torch.dtype,
) -> list[ChunkObject]:
    """LMCache's objects as dense buffers for ``cache``: ``[2, L, chunk, NH * HS]``; MLA
    ``[L, chunk, HS]``; one-plane formats ``[L, chunk, NH * CS]`` (any tensor of that many
    elements, as LMCache's torch version reshapes it), or raw host addresses of those shapes.
    Raw addresses are taken as pinned host memory when the cache is on an accelerator."""
    if not isinstance(objects, list):
        raise TypeError(
            "lmcache_objects_ptrs must be a list[torch.Tensor] or list[int]; got: "
            + type(objects).__name__
        )
    if not objects:
        return []
    mla = cache.layout is PRESET["mla"]
    planes, layers = cache.num_kv, cache.num_layers
    if isinstance(objects[0], torch.Tensor):
        hidden = cache.num_heads * cache.head_size
        out = []
        for i, obj in enumerate(objects):
            name = f"lmcache_objects_ptrs[{i}]"
            if not isinstance(obj, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(obj).__name__}")
            if planes == 2:
                dense = obj
            elif mla:
                dense = obj[None]
            else:
                dense = view(obj, (1, layers, -1, hidden), name, cache.layout)
            out.append(ChunkObject(name, dense))
        return out
    if not isinstance(objects[0], int):
        raise TypeError(
            "lmcache_objects_ptrs must be a list[torch.Tensor] or list[int]; got list "
            "containing: " + type(objects[0]).__name__
        )
    layers, heads, size = int(shape_desc.nl), int(shape_desc.nh), int(shape_desc.hs)
    shape = (planes, layers, chunk_tokens, size if mla else heads * size)
    strides = _tensors._row_major_strides(shape)
    pinned = cache.device[0] != _devices.DEVICE_CPU
    return [
        ChunkObject(
            f"lmcache_objects_ptrs[{i}]",
            None,
            raw_array(
                int(p), shape, strides, dtype, (_devices.DEVICE_CPU, 0), f"object {i}", pinned
            ),
            dtype,
        )
        for i, p in enumerate(objects)
    ]


def block_id_tensor(block_ids: Any, num_blocks: int, device: torch.device) -> torch.Tensor:
    """``block_ids`` as int64 on ``device``; ids on the host are checked against ``num_blocks``
    here, so that no object is written when a later one's block is out of range (ids already on
    an accelerator are checked by the copy itself)."""
    if isinstance(block_ids, torch.Tensor):
        ids = block_ids.reshape(-1)
    elif isinstance(block_ids, list):
        ids = torch.tensor([int(b) for b in block_ids], dtype=torch.int64)
    else:
        raise TypeError("block_ids must be a torch.Tensor or list[int]")
    if ids.is_cpu and ids.numel():
        bad = ((ids < 0) | (ids >= num_blocks)).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            raise InvalidArgumentError(
                f"block_ids[{i}]: block {int(ids[i])} is out of range; the paged cache holds "
                f"{num_blocks} blocks"
            )
    return ids.to(device=device, dtype=torch.int64)
