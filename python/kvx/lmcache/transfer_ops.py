"""LMCache's KV transfer ops on libkvx: LMCache 0.5.6's names, parameters and meaning.

Each op moves every token of every layer in one ``kvx_transfer`` call (the block transfer: one
per LMCache object), on the paged cache's device and its current stream. ``direction`` is
LMCache's ``TransferDirection``: H2D (0) copies LMCache's buffer into the engine's paged cache,
D2H (1) the other way. ``engine_kv_format`` is an ``EngineKVFormat`` (compared by value).

Where LMCache's torch version (``lmcache.v1.platform.torch_ops``) defines what an op does with a
format, kvx does the same, byte for byte, with ``key_value_ptrs`` as raw pointers (an int64 or
uint64 tensor) or as a list of tensors. It differs only where that version is unsafe or defines
nothing:

* a negative slot skips its token everywhere (LMCache's flash ops index slot -1, the last slot
  of the cache, and so read or overwrite it);
* a slot or block id out of range raises :class:`kvx.InvalidArgumentError` before anything is
  written (on an accelerator the copy is asynchronous: such tokens are skipped and reported by
  :func:`kvx.synchronize`); so do a ``direction`` other than H2D/D2H and a list tensor that
  cannot be viewed in LMCache's shape without a copy;
* HND formats, which LMCache's torch ``multi_layer_kv_transfer`` rejects and its
  ``single_layer_kv_transfer`` reads as NHD, get the HND copy of LMCache's CUDA ops;
* ``multi_layer_block_kv_transfer`` with raw pointers honours ``block_stride_elems`` (padded
  pools) as LMCache's CUDA op does, where the torch version ignores it (cross-layer, SGLang
  lists) or raises NotImplementedError.

Formats kvx has no layout for (the blocked-scale indexer pages, per-layer plane tuples) and
the cases LMCache leaves undefined (see :data:`FALLBACKS`) run LMCache's torch version, logged
once (:mod:`._fallback`).
"""

from __future__ import annotations

from typing import Any

import torch

from .._errors import InvalidArgumentError
from . import _engine_formats as ef
from . import _fallback

_P = ef.PRESET
_NO_LAYOUT = {
    14: "kvx has no layout for the blocked-scale indexer pages ([BS x values][BS x scales])",
    17: "kvx has no layout for per-layer tuples of planes of different widths",
}
_HND_NEEDS_HEAD_SIZE = "HND formats need head_size > 0 (LMCache's torch version rejects them)"

# multi_layer_kv_transfer: LMCache's torch reading of each per-layer pointer (HND: its CUDA one).
_MULTI_LAYER: dict[int, ef.PagedLayout] = {
    **dict.fromkeys((0, 1, 4, 9, 11, 13, 16), ef.TWO_PBS),  # [2, PBS, hidden]
    **dict.fromkeys((2, 18), ef.NB_TWO),  # [NB, 2, BS, hidden]
    **dict.fromkeys((3, 5), ef.PLANE),  # MLA [PBS, hidden]
    **dict.fromkeys((6, 15), _P["vllm_hnd"]),  # [2, NB, NH, BS, HS] (15: its singleton dropped)
    7: _P["flashinfer_hnd"],  # [NB, 2, NH, BS, HS]
    **dict.fromkeys((10, 12), ef.PACKED_HND),  # [NB, NH, BS, 2 * HS], one plane
}
_HND = frozenset({6, 7, 10, 12, 15})
# single_layer_kv_transfer: how LMCache reads the one layer it is given (HND: as its CUDA op).
_SINGLE_LAYER: dict[int, ef.PagedLayout] = {
    **dict.fromkeys((3, 5), _P["mla"]),  # [NB, BS, HS]
    1: _P["vllm_nhd"],  # [2, NB, BS, NH, HS]
    6: _P["vllm_hnd"],  # [2, NB, NH, BS, HS]
    **dict.fromkeys((0, 2, 4, 9, 11, 16), _P["flashinfer_nhd"]),  # [NB, 2, BS, NH, HS]
    **dict.fromkeys((7, 8), _P["flashinfer_hnd"]),  # [NB, 2, NH, BS, HS]
}
# multi_layer_block_kv_transfer: the engine's own tensors.
_BLOCK: dict[int, ef.PagedLayout] = {
    0: _P["cross_layer"],  # [NB, NL, 2, BS, NH, HS]
    8: _P["cross_layer_hnd"],  # [NB, NL, 2, NH, BS, HS]
    1: _P["vllm_nhd"],
    2: _P["flashinfer_nhd"],
    **dict.fromkeys((6, 15), _P["vllm_hnd"]),
    7: _P["flashinfer_hnd"],
    **dict.fromkeys((3, 5), _P["mla"]),  # [NB, BS, HS]; 5: [NB * BS, 1, HS]
    **dict.fromkeys((4, 9), _P["kv_lists"]),  # 2 x NL x [NB, BS, NH, HS]; 4: [NB * BS, NH, HS]
    16: _P["kv_tuples"],  # NL x (K, V), each [NB, BS, NH, HS]
    **dict.fromkeys((10, 12), ef.PACKED_HND),  # [NB, NH, BS, CS]
    **dict.fromkeys((11, 13, 18), ef.PACKED_NHD),  # [NB, BS, NH, CS]
}

FALLBACKS: dict[str, dict[int, str]] = {
    "multi_layer_kv_transfer": {
        8: "LMCache defines no per-layer copy of the cross-layer HND format",
        **_NO_LAYOUT,
    },
    "single_layer_kv_transfer": {
        **dict.fromkeys(
            (10, 12, 13, 15, 18),
            "LMCache defines no single-layer copy of this format (its CUDA op rejects it)",
        ),
        **_NO_LAYOUT,
    },
    "multi_layer_block_kv_transfer": _NO_LAYOUT,
}
"""Per op, the formats that run LMCache's torch version, and why (besides HND formats without
``head_size`` in :func:`multi_layer_kv_transfer`, and MLA formats of
:func:`multi_layer_kv_transfer_unilateral`, which follow :func:`multi_layer_kv_transfer`)."""


def multi_layer_kv_transfer(
    key_value: torch.Tensor,
    key_value_ptrs: torch.Tensor | list[torch.Tensor],
    slot_mapping: torch.Tensor,
    paged_memory_device: torch.device,
    page_buffer_size: int,
    direction: Any,
    engine_kv_format: Any,
    block_size: int = 0,
    head_size: int = 0,
    skip_prefix_n_tokens: int = 0,
    block_stride_elems: int = 0,
) -> None:
    """Copies every layer's K/V between LMCache's buffer and the engine's paged cache.

    Args:
        key_value: ``[2, L, T, hidden]`` (MLA and packed K/V: ``[1, L, T, hidden]``), on the
            cache's device or pinned host memory; ``hidden`` = NH * HS.
        key_value_ptrs: per layer, raw addresses (int64/uint64 ``[L]``, any device) or tensors.
            Each layer is read as LMCache does: MLA ``[PBS, hidden]``; NB-major formats (2, 18)
            ``[NB, 2, BS, hidden]``; every other format, format 0 included, ``[2, PBS, hidden]``
            (a ``[1, L, T, hidden]`` buffer uses its first plane). HND: 6 and 15
            ``[2, NB, NH, BS, HS]``, 7 ``[NB, 2, NH, BS, HS]``, 10 and 12 ``[NB, NH, BS, 2*HS]``
            (blocks ``block_stride_elems`` apart when non-zero). Tensors of another shape are
            viewed as these (never copied).
        slot_mapping: ``[T]`` integers, slot = block * BS + offset; negative: skip the token.
        paged_memory_device: the device of the pointers.
        page_buffer_size: PBS = NB * BS, the slots per layer.
        block_size: BS; needed by NB-major and HND formats.
        head_size: HS; needed by HND formats.
        skip_prefix_n_tokens: the first tokens are not copied.
        block_stride_elems: ignored but for 10 and 12, as LMCache's torch version does.
    """
    if not isinstance(key_value_ptrs, (torch.Tensor, list)):
        raise TypeError(f"Expected torch.Tensor or list, but got {type(key_value_ptrs).__name__}")
    fmt = int(engine_kv_format)
    layout = _MULTI_LAYER.get(fmt)
    reason = FALLBACKS["multi_layer_kv_transfer"].get(fmt)
    if fmt in _HND and head_size <= 0:
        layout, reason = None, _HND_NEEDS_HEAD_SIZE
    if layout is None:
        return _fallback.torch_op("multi_layer_kv_transfer", reason or "unknown format")(
            key_value,
            key_value_ptrs,
            slot_mapping,
            paged_memory_device,
            page_buffer_size,
            direction,
            engine_kv_format,
            block_size,
            head_size,
            skip_prefix_n_tokens,
            block_stride_elems,
        )
    kvx_direction = ef.direction(direction)
    if key_value.dim() != 4:
        raise InvalidArgumentError(
            f"key_value: expected [2, L, T, hidden] or [1, L, T, hidden], got shape "
            f"{tuple(key_value.shape)}"
        )
    planes, num_layers, _, hidden = key_value.shape
    sizes = _multi_layer_sizes(layout, hidden, block_size, head_size)
    # A one-plane buffer with a [2, PBS, hidden] reading uses plane 0, at the layer's address.
    first_plane = layout is ef.TWO_PBS and planes == 1
    read_as = ef.PLANE if first_plane else layout
    if isinstance(key_value_ptrs, list):
        shape = tuple(sizes[axis] for axis in layout.axes)
        views = []
        for i, t in enumerate(key_value_ptrs[:num_layers]):
            v = ef.view(t, shape, f"key_value_ptrs[{i}]", layout)
            views.append(v[0] if first_plane else v)
        cache = ef.paged_tensors(views, read_as)
        device = views[0].device if views else torch.device("cpu")
    else:
        device = torch.device(paged_memory_device)
        sizes["block"] = page_buffer_size // sizes["token"]
        elems = block_stride_elems if layout is ef.PACKED_HND else 0
        cache = ef.paged_pointers(
            ef.pointers(key_value_ptrs),
            read_as,
            sizes,
            key_value.dtype,
            ef.kvx_device(device),
            num_layers,
            elems,
        )
    skip = max(int(skip_prefix_n_tokens), 0)
    dense = key_value[: cache.num_kv, :, skip:]
    slots = ef.slot_tensor(slot_mapping, device)[skip:]
    ef.plan(cache, dense, "KV_2LTD", slots, kvx_direction).run()


def _multi_layer_sizes(
    layout: ef.PagedLayout, hidden: int, block_size: int, head_size: int
) -> dict[str, int]:
    """The axis sizes of multi_layer_kv_transfer's per-layer reading; ``block`` is -1, what the
    rest leaves (list tensors are viewed with it; raw pointers get it from page_buffer_size)."""
    if layout in (ef.TWO_PBS, ef.PLANE):
        # A flat slot axis, as blocks of one token (see ef.TWO_PBS).
        return {"kv": 2, "block": -1, "token": 1, "dim": hidden}
    if block_size <= 0:
        raise InvalidArgumentError(
            f"block_size: expected > 0 for {layout.description}, got {block_size}"
        )
    if layout is ef.NB_TWO:
        return {"block": -1, "kv": 2, "token": block_size, "dim": hidden}
    width = 2 * head_size if layout is ef.PACKED_HND else head_size
    if hidden % width:
        raise InvalidArgumentError(
            f"head_size: the hidden size {hidden} of key_value is not a multiple of {width} "
            f"({layout.description})"
        )
    return {"kv": 2, "block": -1, "head": hidden // width, "token": block_size, "dim": width}


def multi_layer_kv_transfer_unilateral(
    key_value: torch.Tensor,
    key_value_ptrs: torch.Tensor | list[torch.Tensor],
    slot_mapping: torch.Tensor,
    paged_memory_device: torch.device,
    page_buffer_size: int,
    direction: Any,
    engine_kv_format: Any,
) -> None:
    """:func:`multi_layer_kv_transfer` for SGLang's separate K and V buffers.

    Args:
        key_value: ``[2, L, T, hidden]`` (MLA: ``[1, L, T, hidden]``).
        key_value_ptrs: ``[K_0, ..., K_{L-1}, V_0, ..., V_{L-1}]``, raw addresses (int64/uint64
            ``[2L]``) or tensors, each ``[PBS, hidden]`` (others are viewed as that). MLA formats
            (3, 5, 14, 17) go to :func:`multi_layer_kv_transfer` (one pointer per layer).
        slot_mapping: ``[T]``; negative: skip the token.
    """
    fmt = int(engine_kv_format)
    if fmt in (3, 5, 14, 17):
        return multi_layer_kv_transfer(
            key_value,
            key_value_ptrs,
            slot_mapping,
            paged_memory_device,
            page_buffer_size,
            direction,
            engine_kv_format,
            0,
        )
    kvx_direction = ef.direction(direction)
    num_layers, hidden = key_value.size(1), key_value.size(3)
    layout = ef.UNILATERAL
    if isinstance(key_value_ptrs, list):
        if len(key_value_ptrs) < 2 * num_layers:
            raise InvalidArgumentError(
                f"key_value_ptrs: expected 2 * {num_layers} tensors (K layers, then V layers), "
                f"got {len(key_value_ptrs)}"
            )
        views = [
            ef.view(t, (-1, 1, hidden), f"key_value_ptrs[{i}]", layout)
            for i, t in enumerate(key_value_ptrs[: 2 * num_layers])
        ]
        cache = ef.paged_tensors((views[:num_layers], views[num_layers:]), layout)
        device = views[0].device
    else:
        device = torch.device(paged_memory_device)
        sizes = {"block": page_buffer_size, "token": 1, "dim": hidden}
        cache = ef.paged_pointers(
            ef.pointers(key_value_ptrs),
            layout,
            sizes,
            key_value.dtype,
            ef.kvx_device(device),
            num_layers,
        )
    slots = ef.slot_tensor(slot_mapping, device)
    ef.plan(cache, key_value[:2], "KV_2LTD", slots, kvx_direction).run()


def single_layer_kv_transfer(
    lmc_key_value_cache: torch.Tensor,
    vllm_key_value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    direction: Any,
    engine_kv_format: Any,
    token_major: bool = False,
) -> None:
    """Copies one layer between LMCache's buffer and vLLM's paged cache of that layer.

    Args:
        lmc_key_value_cache: ``[T, 2, hidden]`` if ``token_major`` else ``[2, T, hidden]``;
            MLA: ``[T, HS]``.
        vllm_key_value_cache: format 1 ``[2, NB, BS, NH, HS]``, HND 6 ``[2, NB, NH, BS, HS]``;
            MLA (3, 5) ``[NB, BS, HS]``; HND 7 and 8 ``[NB, 2, NH, BS, HS]``; the other formats
            kvx knows (0, 2, 4, 9, 11, 16) ``[NB, 2, BS, NH, HS]``, as LMCache reads them.
        slot_mapping: ``[T]``; negative: skip the token.
        token_major: the layout of ``lmc_key_value_cache``.
    """
    fmt = int(engine_kv_format)
    layout = _SINGLE_LAYER.get(fmt)
    if layout is None:
        reason = FALLBACKS["single_layer_kv_transfer"].get(fmt, "unknown format")
        return _fallback.torch_op("single_layer_kv_transfer", reason)(
            lmc_key_value_cache,
            vllm_key_value_cache,
            slot_mapping,
            direction,
            engine_kv_format,
            token_major,
        )
    kvx_direction = ef.direction(direction)
    cache = ef.paged_tensors([vllm_key_value_cache], layout)
    if layout is _P["mla"]:
        dense, dense_format = lmc_key_value_cache[None, None], "MLA_1LTD"
    else:
        dense, dense_format = lmc_key_value_cache, "KV_T2D" if token_major else "KV_2TD"
    slots = ef.slot_tensor(slot_mapping, vllm_key_value_cache.device)
    ef.plan(cache, dense, dense_format, slots, kvx_direction, "lmc_key_value_cache").run()


def single_layer_kv_transfer_sgl(
    lmc_key_value_cache: torch.Tensor,
    sgl_key_cache: torch.Tensor,
    sgl_value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    direction: Any,
    token_major: bool = False,
) -> None:
    """Copies one layer between LMCache's buffer and SGLang's K and V caches.

    Args:
        lmc_key_value_cache: ``[T, 2, hidden]`` if ``token_major`` else ``[2, T, hidden]``.
        sgl_key_cache, sgl_value_cache: ``[NB, BS, NH, HS]`` each.
        slot_mapping: ``[T]``; negative: skip the token.
    """
    kvx_direction = ef.direction(direction)
    cache = ef.paged_tensors([(sgl_key_cache, sgl_value_cache)], _P["kv_tuples"])
    slots = ef.slot_tensor(slot_mapping, sgl_key_cache.device)
    dense_format = "KV_T2D" if token_major else "KV_2TD"
    ef.plan(
        cache, lmc_key_value_cache, dense_format, slots, kvx_direction, "lmc_key_value_cache"
    ).run()


def load_and_reshape_flash(
    key_value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    layer_idx: int,
) -> None:
    """Gathers layer ``layer_idx`` from the paged K and V caches into ``key_value``.

    Args:
        key_value: ``[2, L, T, NH * HS]``; receives ``[:, layer_idx]``.
        key_cache, value_cache: ``[NB, BS, NH, HS]`` each.
        slot_mapping: ``[T]``; a negative slot leaves its token of ``key_value`` as it was
            (LMCache's torch version copies the cache's last slot there).
    """
    _flash(key_value, key_cache, value_cache, slot_mapping, layer_idx, ef.Direction.PAGED_TO_DENSE)


def reshape_and_cache_back_flash(
    key_value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    layer_idx: int,
) -> None:
    """Scatters ``key_value[:, layer_idx]`` into the paged K and V caches.

    Args:
        key_value: ``[2, L, T, NH * HS]``.
        key_cache, value_cache: ``[NB, BS, NH, HS]`` each, written.
        slot_mapping: ``[T]``; a negative slot skips its token (LMCache's torch version writes
            it to the cache's last slot).
    """
    _flash(key_value, key_cache, value_cache, slot_mapping, layer_idx, ef.Direction.DENSE_TO_PAGED)


def _flash(
    key_value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    layer_idx: int,
    kvx_direction: ef.Direction,
) -> None:
    """One layer of ``key_value`` (``[2, T, hidden]``) to or from vLLM's K and V caches."""
    cache = ef.paged_tensors([(key_cache, value_cache)], _P["kv_tuples"])
    slots = ef.slot_tensor(slot_mapping, key_cache.device)
    dense = key_value[:, layer_idx]
    ef.plan(cache, dense, "KV_2TD", slots, kvx_direction).run()


def multi_layer_block_kv_transfer(
    paged_buffer_ptrs_tensor: torch.Tensor | list,
    lmcache_objects_ptrs: list[int] | list[torch.Tensor],
    block_ids: torch.Tensor | list[int],
    device: torch.device | str,
    direction: Any,
    shape_desc: Any,
    lmcache_chunk_size: int,
    engine_kv_format: Any,
    skip_prefix_n_blocks: int,
) -> None:
    """Copies whole engine blocks between the paged cache and LMCache's chunk objects.

    Block ``block_ids[i]`` (``i >= skip_prefix_n_blocks``) is tokens ``(i % B) * BS`` onwards of
    object ``i // B``, with B = ``lmcache_chunk_size // BS`` blocks per object.

    Args:
        paged_buffer_ptrs_tensor: the engine's cache, as raw addresses (int64/uint64, on any
            device: per layer; K layers then V layers for SGLang's lists 4 and 9; one for the
            cross-layer formats 0 and 8) or as its tensors: per layer ``[2, NB, BS, NH, HS]``
            (1; HND 6 ``[2, NB, NH, BS, HS]``, 15 the same with a singleton after NH),
            ``[NB, 2, BS, NH, HS]`` (2; HND 7 ``[NB, 2, NH, BS, HS]``), MLA ``[NB, BS, HS]`` (3;
            5 ``[NB * BS, 1, HS]``), one plane ``[NB, NH, BS, CS]`` (10, 12) or
            ``[NB, BS, NH, CS]`` (11, 13, 18), (K, V) pairs of ``[NB, BS, NH, HS]`` (16);
            ``[[K_0, ...], [V_0, ...]]`` or ``[K_0, ..., V_0, ...]`` of ``[NB, BS, NH, HS]``
            (9; 4 ``[NB * BS, NH, HS]``); one ``[NB, NL, 2, BS, NH, HS]`` tensor (0; HND 8
            ``[NB, NL, 2, NH, BS, HS]``).
        lmcache_objects_ptrs: chunk tensors ``[2, NL, chunk, NH * HS]`` (MLA ``[NL, chunk, HS]``,
            one-plane formats ``[NL, chunk, NH * CS]``), or their raw host addresses.
        block_ids: int ``[N]``, ids below NB.
        device: the device of raw paged pointers.
        shape_desc: LMCache's ``PageBufferShapeDesc`` (nl, nb, bs, nh, hs, block_stride_elems,
            dtype or element_size) for raw pointers; its ``bs`` always.
        lmcache_chunk_size: tokens per object, a multiple of BS.
    """
    block_size = int(shape_desc.bs)
    if lmcache_chunk_size <= 0:
        raise InvalidArgumentError("lmcache_chunk_size must be positive")
    if block_size <= 0 or lmcache_chunk_size % block_size != 0:
        raise InvalidArgumentError(
            "lmcache_chunk_size must be a positive multiple of shape_desc.bs"
        )
    if skip_prefix_n_blocks < 0:
        raise InvalidArgumentError("skip_prefix_n_blocks must be >= 0")
    fmt = int(engine_kv_format)
    layout = _BLOCK.get(fmt)
    if layout is None:
        reason = FALLBACKS["multi_layer_block_kv_transfer"].get(fmt, "unknown format")
        return _fallback.torch_op("multi_layer_block_kv_transfer", reason)(
            paged_buffer_ptrs_tensor,
            lmcache_objects_ptrs,
            block_ids,
            device,
            direction,
            shape_desc,
            lmcache_chunk_size,
            engine_kv_format,
            skip_prefix_n_blocks,
        )
    kvx_direction = ef.direction(direction)
    dtype = ef.block_dtype(paged_buffer_ptrs_tensor, lmcache_objects_ptrs, shape_desc)
    cache, paged_device = _block_cache(
        paged_buffer_ptrs_tensor, fmt, layout, shape_desc, dtype, device
    )
    objects = ef.block_objects(lmcache_objects_ptrs, cache, shape_desc, lmcache_chunk_size, dtype)
    ids = ef.block_id_tensor(block_ids, cache.num_blocks, paged_device)
    slots = (ids[:, None] * block_size + torch.arange(block_size, device=ids.device)).reshape(-1)
    dense_format = "KV_2LTD" if cache.num_kv == 2 else "MLA_1LTD"
    per_object = lmcache_chunk_size // block_size
    copies = []
    for index, obj in enumerate(objects):
        first = max(index * per_object, skip_prefix_n_blocks)
        end = min((index + 1) * per_object, ids.numel())
        if first >= end:
            continue
        tokens = obj.tokens((first - index * per_object) * block_size, (end - first) * block_size)
        slice_ = slots[first * block_size : end * block_size]
        copies.append(ef.plan(cache, tokens, dense_format, slice_, kvx_direction, obj.name))
    for copy in copies:  # every object checked before the first is written
        copy.run()


def _block_cache(
    paged: Any,
    fmt: int,
    layout: ef.PagedLayout,
    shape_desc: Any,
    dtype: torch.dtype,
    device: Any,
) -> tuple[ef.PagedCache, torch.device]:
    """The engine's cache for multi_layer_block_kv_transfer, and its torch device."""
    bs = int(shape_desc.bs)
    if ef.is_pointer_tensor(paged):
        if fmt == 16:
            raise TypeError(
                "Per-layer (K, V) tuple format requires a list of (K, V) tensor pairs; got: Tensor"
            )
        ptrs = ef.pointers(paged)
        sizes = {
            "block": int(shape_desc.nb),
            "layer": int(shape_desc.nl),
            "kv": 2,
            "token": bs,
            "head": int(shape_desc.nh),
            "dim": int(shape_desc.hs),
        }
        per_layer = layout.container == ef.LAYER_LIST
        num_layers = len(ptrs) if per_layer else int(shape_desc.nl)
        elems = int(getattr(shape_desc, "block_stride_elems", 0) or 0)
        cache = ef.paged_pointers(
            ptrs, layout, sizes, dtype, ef.kvx_device(device), num_layers, elems
        )
        return cache, torch.device(device)
    container = ef.engine_tensors(paged, layout)
    views = ef.map_tensors(container, lambda t, name: _block_view(t, fmt, bs, name, layout))
    cache = ef.paged_tensors(views, layout)
    return cache, cache.infos[0].obj.device


def _block_view(t: Any, fmt: int, bs: int, name: str, layout: ef.PagedLayout) -> torch.Tensor:
    """An engine tensor as the axes of its reading (see _BLOCK), never copied."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if fmt == 4:  # [NB * BS, NH, HS]
        return ef.view(t, (-1, bs, *t.shape[1:]), name, layout)
    if fmt == 5:  # [NB * BS, 1, HS]
        return ef.view(t, (-1, bs, t.shape[-1]), name, layout)
    if fmt in (10, 11, 12, 13) and t.dim() == 5:  # K/V split out of the packed content
        return ef.view(t, (*t.shape[:3], -1), name, layout)
    if fmt == 15 and t.dim() == 6:  # [2, NB, NH, 1, BS, HS]
        return ef.view(t, (*t.shape[:3], *t.shape[4:]), name, layout)
    return t


__all__ = [
    "FALLBACKS",
    "load_and_reshape_flash",
    "multi_layer_block_kv_transfer",
    "multi_layer_kv_transfer",
    "multi_layer_kv_transfer_unilateral",
    "reshape_and_cache_back_flash",
    "single_layer_kv_transfer",
    "single_layer_kv_transfer_sgl",
]
