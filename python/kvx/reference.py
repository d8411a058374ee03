"""Plain-torch implementations of kvx's operations, with the same semantics.

They are the test oracle and the last-resort fallback on devices without a native backend. They
are written from the layouts' *axis names* with torch's own indexing (``select``, ``permute``,
advanced indexing), not from the stride arithmetic the C library uses, so the two can disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layouts
from ._errors import InvalidArgumentError
from .transfer import Direction, _direction

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

# Same-size integer dtypes: indexing moves bit patterns, so NaNs and fp8 copy byte-exactly.
_BITS_DTYPE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _as_torch(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def _bits(t: Any) -> Any:
    return t.view(getattr(torch, _BITS_DTYPE[t.element_size()]))


def _standard_view(
    t: Any, axes: tuple[str, ...], layer: int, kv: int, order: tuple[str, ...]
) -> Any:
    """Selects `layer` and `kv`, adds missing axes of size 1, permutes to `order`."""
    names = list(axes)
    for axis, index in (("layer", layer), ("kv", kv)):
        if axis in names:
            t = t.select(names.index(axis), index)
            names.remove(axis)
    for axis in order:
        if axis not in names:
            t = t.unsqueeze(-1)
            names.append(axis)
    return t.permute(*[names.index(axis) for axis in order])


def _paged_views(paged: Any, layout: layouts.PagedLayout) -> tuple[list[list[Any]], int]:
    """views[kv][layer] = [num_blocks, block_size, num_heads, head_size] view of the cache."""
    tensors, num_layers = layouts.flatten_paged(layout, paged, lambda x: hasattr(x, "shape"))
    tensors = [_bits(_as_torch(t)) for t in tensors]
    num_kv = layout.num_kv_fixed or 2
    order = ("block", "token", "head", "dim")
    views = [[None] * num_layers for _ in range(num_kv)]
    for kv in range(num_kv):
        for layer in range(num_layers):
            if layout.container == layouts.SINGLE:
                views[kv][layer] = _standard_view(tensors[0], layout.axes, layer, kv, order)
            elif layout.container == layouts.LAYER_LIST:
                views[kv][layer] = _standard_view(tensors[layer], layout.axes, 0, kv, order)
            else:
                views[kv][layer] = _standard_view(
                    tensors[kv * num_layers + layer], layout.axes, 0, 0, order
                )
    return views, num_layers


def _dense_view(dense: Any, fmt: layouts.DenseFormat, layer: int, kv: int, num_heads: int) -> Any:
    """[num_tokens, num_heads, head_size] view of one (layer, kv) plane of the dense buffer."""
    t = _bits(_as_torch(dense))
    axes = layouts.dense_axes(fmt, t.dim())
    names = list(axes)
    for axis, index in (("layer", layer), ("kv", kv)):
        if axis in names:
            t = t.select(names.index(axis), index)
            names.remove(axis)
    if "hd" in names:
        i = names.index("hd")
        t = t.unflatten(i, (num_heads, -1))
        names[i : i + 1] = ["head", "dim"]
    return t.permute(*[names.index(axis) for axis in ("token", "head", "dim")])


def transfer(
    paged: Any,
    dense: Any,
    slot_mapping: Any,
    *,
    direction: str | int | Direction,
    layout: str | int | layouts.PagedLayout = "vllm_nhd",
    dense_format: str | layouts.DenseFormat = "KV_2LTD",
) -> None:
    """Reference for :func:`kvx.transfer` (same arguments, same semantics)."""
    direction = _direction(direction)
    layout = layouts.paged_layout(layout)
    fmt = layouts.dense_format(dense_format)
    views, _num_layers = _paged_views(paged, layout)
    slots = _as_torch(slot_mapping).to("cpu", torch.int64)
    num_blocks, block_size, num_heads, _ = views[0][0].shape
    capacity = num_blocks * block_size
    if (slots >= capacity).any():
        bad = int(torch.nonzero(slots >= capacity)[0])
        raise InvalidArgumentError(
            f"slot_mapping[{bad}]: slot {int(slots[bad])} is out of range (capacity {capacity})"
        )
    tokens = torch.nonzero(slots >= 0).flatten()
    valid = slots[tokens]
    blocks, offsets = valid // block_size, valid % block_size
    for kv, planes in enumerate(views):
        for layer, pv in enumerate(planes):
            dv = _dense_view(dense, fmt, layer, kv, num_heads)
            device = pv.device
            t, b, o = tokens.to(device), blocks.to(device), offsets.to(device)
            if direction == Direction.PAGED_TO_DENSE:
                dv[t] = pv[b, o]
            else:
                pv[b, o] = dv[t]
