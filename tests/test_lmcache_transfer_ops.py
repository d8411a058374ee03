"""kvx.lmcache.transfer_ops against LMCache 0.5.6's own torch versions (fetched from PyPI at test
time): same parameters, same bytes on the same inputs for every format LMCache's version handles,
both directions, raw pointers and tensor lists; plus what only kvx does (HND formats, padded
blocks, negative slots in the flash ops) against plain torch indexing, and bad input (nothing
written)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import kvx
import lmcache_env
import pytest
import torch
from kvx.lmcache import transfer_ops as ops

H2D, D2H = 0, 1
NL, NB, BS, NH, HS = 3, 6, 4, 2, 8
PBS, HIDDEN = NB * BS, NH * HS
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn]


@pytest.fixture(scope="module")
def lmc() -> Any:
    """LMCache's torch ops (``lmcache.v1.platform.torch_ops``)."""
    lmcache_env.activate()
    from lmcache.v1.platform import torch_ops

    # libcudart may exist without a driver; LMCache's CPU pointer views must not try it.
    sys.modules["lmcache.v1.platform.torch_ops._tensor_from_ptr"]._copy_lib = None
    return torch_ops


@pytest.fixture(scope="module")
def native(lmc) -> Any:
    import lmcache.lmcache_native as native

    return native


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random bytes (NaN and infinity patterns included): copies must keep them exactly."""
    n = torch.Size(shape).numel() * dtype.itemsize
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen).view(dtype).view(shape)


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)
    )


def _slots(num_tokens: int, capacity: int, seed: int, negatives: int = 2) -> torch.Tensor:
    """Distinct slots (so loads have one answer), with ``negatives`` of them -1."""
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randperm(capacity, generator=gen)[:num_tokens].clone()
    slots[torch.randperm(num_tokens, generator=gen)[:negatives]] = -1
    return slots


def _ptrs(tensors: list[torch.Tensor], dtype: torch.dtype = torch.uint64) -> torch.Tensor:
    return torch.tensor([t.data_ptr() for t in tensors], dtype=dtype)


Build = Callable[[torch.dtype], tuple[list[torch.Tensor], Callable[[Callable[..., Any]], Any]]]


def _compare(
    build: Build, dtype: torch.dtype, theirs: Callable, ours: Callable, copies: bool = True
) -> None:
    """``build(dtype)`` makes fresh inputs (the same bytes each time) and a runner calling an op
    on them; LMCache's op and kvx's run on separate copies, which must end byte for byte equal.
    LMCache's torch ops cannot index fp8 tensors on the CPU: for fp8 they get the same bytes as
    uint8 (both copy bytes)."""
    theirs_dtype = torch.uint8 if dtype.is_floating_point and dtype.itemsize == 1 else dtype
    before, _ = build(theirs_dtype)
    expected, run = build(theirs_dtype)
    run(theirs)
    assert copies != all(map(_same_bytes, before, expected)), "the case copies (nothing)"
    got, run = build(dtype)
    run(ours)
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert _same_bytes(e, g), f"tensor {i} differs"


def test_signatures_are_lmcache_s(lmc) -> None:
    for name in ops.__all__:
        if name == "FALLBACKS":
            continue
        ours = inspect.signature(getattr(ops, name)).parameters.values()
        theirs = inspect.signature(getattr(lmc, name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in ours] == [
            (p.name, p.kind, p.default) for p in theirs
        ], name


# ---------------------------------------------------------------- multi_layer_kv_transfer

# LMCache's torch reading of each per-layer pointer: [2, PBS, hidden], [NB, 2, BS, hidden] or MLA
# [PBS, hidden].
MULTI_LAYER_SHAPES = {
    **dict.fromkeys((0, 1, 4, 9, 11, 13, 16), (2, PBS, HIDDEN)),
    **dict.fromkeys((2, 18), (NB, 2, BS, HIDDEN)),
    **dict.fromkeys((3, 5), (PBS, HIDDEN)),
}


def _multi_layer_case(fmt: int, direction: int, mode: str, skip: int = 0) -> Build:
    shape = MULTI_LAYER_SHAPES[fmt]
    planes = 1 if len(shape) == 2 else 2

    def build(dtype):
        layers = [_random(shape, dtype, 10 + i) for i in range(NL)]
        key_value = _random((planes, NL, 9, HIDDEN), dtype, 1)
        slot_mapping = _slots(9, PBS, fmt)
        ptrs = layers if mode == "list" else _ptrs(layers, getattr(torch, mode))

        def run(op):
            op(key_value, ptrs, slot_mapping, torch.device("cpu"), PBS, direction, fmt, BS, 0, skip)

        return [key_value, *layers], run

    return build


@pytest.mark.parametrize("mode", ["uint64", "int64", "list"])
@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", sorted(MULTI_LAYER_SHAPES))
def test_multi_layer_kv_transfer_equals_lmcache(lmc, fmt, direction, mode) -> None:
    build = _multi_layer_case(fmt, direction, mode)
    for dtype in DTYPES:
        _compare(build, dtype, lmc.multi_layer_kv_transfer, ops.multi_layer_kv_transfer)


@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_multi_layer_kv_transfer_skips_the_prefix_as_lmcache(lmc, fmt, direction) -> None:
    for skip in (1, 4, 9, 12):  # 9 tokens: the last two skip all of them
        build = _multi_layer_case(fmt, direction, "uint64", skip)
        theirs, ours = lmc.multi_layer_kv_transfer, ops.multi_layer_kv_transfer
        _compare(build, torch.bfloat16, theirs, ours, copies=skip < 9)


def test_multi_layer_kv_transfer_views_engine_tensors_in_lmcache_s_shape() -> None:
    """A list of vLLM's own [2, NB, BS, NH, HS] tensors is LMCache's [2, PBS, hidden] reading."""
    engine = [_random((2, NB, BS, NH, HS), torch.bfloat16, i) for i in range(NL)]
    slot_mapping = _slots(9, PBS, 0)
    by_list = torch.zeros(2, NL, 9, HIDDEN, dtype=torch.bfloat16)
    by_ptr = by_list.clone()
    ops.multi_layer_kv_transfer(by_list, engine, slot_mapping, "cpu", PBS, D2H, 1, BS)
    ops.multi_layer_kv_transfer(by_ptr, _ptrs(engine), slot_mapping, "cpu", PBS, D2H, 1, BS)
    assert _same_bytes(by_list, by_ptr)
    valid = slot_mapping >= 0
    flat = torch.stack(engine).view(NL, 2, PBS, HIDDEN)[:, :, slot_mapping[valid]]
    assert _same_bytes(by_list[:, :, valid], flat.transpose(0, 1))


# ---------------------------------------------------------------- ..._unilateral


@pytest.mark.parametrize("mode", ["uint64", "list"])
@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", [4, 9, 3, 5])
def test_multi_layer_kv_transfer_unilateral_equals_lmcache(lmc, fmt, direction, mode) -> None:
    mla = fmt in (3, 5)

    def build(dtype):
        count = NL if mla else 2 * NL
        buffers = [_random((PBS, HIDDEN), dtype, 20 + i) for i in range(count)]
        key_value = _random((1 if mla else 2, NL, 9, HIDDEN), dtype, 2)
        slot_mapping = _slots(9, PBS, fmt + 1)
        ptrs = buffers if mode == "list" else _ptrs(buffers)

        def run(op):
            op(key_value, ptrs, slot_mapping, torch.device("cpu"), PBS, direction, fmt)

        return [key_value, *buffers], run

    for dtype in DTYPES:
        _compare(
            build,
            dtype,
            lmc.multi_layer_kv_transfer_unilateral,
            ops.multi_layer_kv_transfer_unilateral,
        )


# ---------------------------------------------------------------- single_layer_kv_transfer

SINGLE_LAYER_SHAPES = {
    3: (NB, BS, HS),
    5: (PBS, 1, HS),
    1: (2, NB, BS, NH, HS),
    **dict.fromkeys((0, 2, 4, 9, 11, 16), (NB, 2, BS, NH, HS)),
}


@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize(
    "fmt,token_major",
    [
        (f, major)
        for f, shape in SINGLE_LAYER_SHAPES.items()
        for major in (False, True)[: len(shape) - 2]
    ],
)
def test_single_layer_kv_transfer_equals_lmcache(lmc, fmt, token_major, direction) -> None:
    """MLA buffers ([T, HS]) have no token-major variant."""
    shape = SINGLE_LAYER_SHAPES[fmt]
    mla = len(shape) == 3

    def build(dtype):
        paged = _random(shape, dtype, 30)
        lmc_shape = (9, HS) if mla else (9, 2, HIDDEN) if token_major else (2, 9, HIDDEN)
        lmc_kv = _random(lmc_shape, dtype, 3)
        slot_mapping = _slots(9, PBS, fmt + 2)

        def run(op):
            op(lmc_kv, paged, slot_mapping, direction, fmt, token_major)

        return [lmc_kv, paged], run

    for dtype in DTYPES:
        _compare(build, dtype, lmc.single_layer_kv_transfer, ops.single_layer_kv_transfer)


@pytest.mark.parametrize("token_major", [False, True])
@pytest.mark.parametrize("direction", [H2D, D2H])
def test_single_layer_kv_transfer_sgl_equals_lmcache(lmc, direction, token_major) -> None:

    def build(dtype):
        k, v = _random((NB, BS, NH, HS), dtype, 40), _random((NB, BS, NH, HS), dtype, 41)
        lmc_kv = _random((9, 2, HIDDEN) if token_major else (2, 9, HIDDEN), dtype, 4)
        slot_mapping = _slots(9, PBS, 5)

        def run(op):
            op(lmc_kv, k, v, slot_mapping, direction, token_major)

        return [lmc_kv, k, v], run

    for dtype in DTYPES:
        _compare(build, dtype, lmc.single_layer_kv_transfer_sgl, ops.single_layer_kv_transfer_sgl)


# ---------------------------------------------------------------- flash ops


@pytest.mark.parametrize("name", ["load_and_reshape_flash", "reshape_and_cache_back_flash"])
def test_flash_ops_equal_lmcache(lmc, name) -> None:
    for layer_idx in (0, 2, -1):

        def build(dtype, layer_idx=layer_idx):
            k, v = _random((NB, BS, NH, HS), dtype, 50), _random((NB, BS, NH, HS), dtype, 51)
            key_value = _random((2, NL, 9, HIDDEN), dtype, 6)
            slot_mapping = _slots(9, PBS, 7, negatives=0)

            def run(op):
                op(key_value, k, v, slot_mapping, layer_idx)

            return [key_value, k, v], run

        for dtype in DTYPES:
            _compare(build, dtype, getattr(lmc, name), getattr(ops, name))


@pytest.mark.parametrize("name", ["load_and_reshape_flash", "reshape_and_cache_back_flash"])
def test_flash_ops_skip_negative_slots(lmc, name) -> None:
    """LMCache's torch version reads or writes the cache's last slot for slot -1; kvx leaves the
    token alone, so it equals LMCache's version run on the other tokens."""
    k, v = (
        _random((NB, BS, NH, HS), torch.bfloat16, 52),
        _random((NB, BS, NH, HS), torch.bfloat16, 53),
    )
    key_value = _random((2, NL, 9, HIDDEN), torch.bfloat16, 8)
    slot_mapping = _slots(9, PBS, 9, negatives=3)
    valid = slot_mapping >= 0
    expected = [key_value.clone(), k.clone(), v.clone()]
    subset = expected[0][:, :, valid].clone()
    getattr(lmc, name)(subset, expected[1], expected[2], slot_mapping[valid], 1)
    expected[0][:, :, valid] = subset
    got = [key_value.clone(), k.clone(), v.clone()]
    getattr(ops, name)(got[0], got[1], got[2], slot_mapping, 1)
    for e, g in zip(expected, got, strict=True):
        assert _same_bytes(e, g)


# ---------------------------------------------------------------- multi_layer_block_kv_transfer

# The engine's tensors per format ("per layer", "kv lists", "kv tuples" or "cross layer").
BLOCK_SHAPES = {
    0: ("cross layer", (NB, NL, 2, BS, NH, HS)),
    8: ("cross layer", (NB, NL, 2, NH, BS, HS)),
    1: ("per layer", (2, NB, BS, NH, HS)),
    2: ("per layer", (NB, 2, BS, NH, HS)),
    6: ("per layer", (2, NB, NH, BS, HS)),
    7: ("per layer", (NB, 2, NH, BS, HS)),
    15: ("per layer", (2, NB, NH, BS, HS)),  # LMCache's pointer reading (no singleton)
    3: ("per layer", (NB, BS, HS)),
    5: ("per layer", (PBS, 1, HS)),
    10: ("per layer", (NB, NH, BS, HS)),
    12: ("per layer", (NB, NH, BS, HS)),
    11: ("per layer", (NB, BS, NH, HS)),
    13: ("per layer", (NB, BS, NH, HS)),
    18: ("per layer", (NB, BS, NH, HS)),
    4: ("kv lists", (PBS, NH, HS)),
    9: ("kv lists", (NB, BS, NH, HS)),
    16: ("kv tuples", (NB, BS, NH, HS)),
}
CHUNK = 2 * BS  # two blocks per LMCache object


def _shape_desc(native, dtype: torch.dtype, block_stride_elems: int = 0) -> Any:
    desc = native.PageBufferShapeDesc()
    desc.nl, desc.nb, desc.bs, desc.nh, desc.hs = NL, NB, BS, NH, HS
    desc.kv_size, desc.element_size = 2, dtype.itemsize
    desc.block_stride_elems = block_stride_elems
    return desc


def _object_shape(fmt: int) -> tuple[int, ...]:
    if fmt in (3, 5):
        return (NL, CHUNK, HS)
    if fmt in (10, 11, 12, 13, 18):
        return (NL, CHUNK, NH * HS)
    return (2, NL, CHUNK, NH * HS)


def _block_case(native, fmt, direction, paged_mode, object_mode, block_ids, skip) -> Build:
    kind, shape = BLOCK_SHAPES[fmt]

    def build(dtype):
        count = {"cross layer": 1, "per layer": NL, "kv lists": 2 * NL, "kv tuples": 2 * NL}
        tensors = [_random(shape, dtype, 60 + i) for i in range(count[kind])]
        objects = [_random(_object_shape(fmt), dtype, 70 + i) for i in range(3)]
        if paged_mode == "pointers":
            paged = _ptrs(tensors)
        elif kind == "cross layer":
            paged = tensors[0]
        elif kind == "kv lists":  # nested, or flat (K layers then V layers): both are taken
            paged = [tensors[:NL], tensors[NL:]] if fmt == 9 else tensors
        elif kind == "kv tuples":
            # [K, V] lists: LMCache's dtype lookup misses (K, V) tuples (it takes fp16 for bf16)
            paged = [[tensors[i], tensors[NL + i]] for i in range(NL)]
        else:
            paged = tensors
        objs = objects if object_mode == "tensors" else [o.data_ptr() for o in objects]

        def run(op):
            op(
                paged,
                objs,
                block_ids,
                "cpu",
                direction,
                _shape_desc(native, dtype),
                CHUNK,
                fmt,
                skip,
            )

        return [*tensors, *objects], run

    return build


@pytest.mark.parametrize("object_mode", ["tensors", "pointers"])
@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize(
    "fmt,paged_mode",
    [(f, mode) for f in sorted(BLOCK_SHAPES) for mode in ("tensors", "pointers")[: 1 + (f != 16)]],
)
def test_multi_layer_block_kv_transfer_equals_lmcache(
    lmc, native, fmt, paged_mode, direction, object_mode
) -> None:
    """LMCache's (K, V) tuple format (16) has no pointer form."""
    block_ids = [4, 1, 5, 0, 2]  # objects 0 and 1 full, object 2 half
    build = _block_case(native, fmt, direction, paged_mode, object_mode, block_ids, 0)
    for dtype in DTYPES:
        _compare(build, dtype, lmc.multi_layer_block_kv_transfer, ops.multi_layer_block_kv_transfer)


@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", [0, 1, 2, 3, 6, 9, 13])
def test_multi_layer_block_kv_transfer_skips_blocks_as_lmcache(lmc, native, fmt, direction):
    theirs, ours = lmc.multi_layer_block_kv_transfer, ops.multi_layer_block_kv_transfer
    for skip in (1, 2, 3, 5, 7):  # 2 blocks per object: skip whole objects or half of one
        for block_ids in ([3, 0, 5, 1, 4], torch.tensor([2, 5, 1], dtype=torch.int32)):
            build = _block_case(native, fmt, direction, "pointers", "tensors", block_ids, skip)
            _compare(build, torch.float16, theirs, ours, copies=skip < len(block_ids))


def test_block_transfer_with_padded_blocks_equals_lmcache_on_the_views(lmc, native) -> None:
    """Raw pointers with ``block_stride_elems``: each (plane, block) of the pool spans that many
    elements (LMCache's CUDA meaning; its torch version only takes such pools as tensors)."""
    pad = BS * NH * HS + 24
    cases = {  # format: (padded storage shape, the tensor LMCache sees), per layer or one
        0: ((NB, NL, 2, pad), (NB, NL, 2, BS, NH, HS)),
        1: ((2, NB, pad), (2, NB, BS, NH, HS)),
        2: ((NB, 2, pad), (NB, 2, BS, NH, HS)),
        7: ((NB, 2, pad), (NB, 2, NH, BS, HS)),
        13: ((NB, pad), (NB, BS, NH, HS)),
        9: ((NB, pad), (NB, BS, NH, HS)),
    }
    theirs, ours = lmc.multi_layer_block_kv_transfer, ops.multi_layer_block_kv_transfer
    for fmt, (storage, shape) in cases.items():
        count = 1 if fmt == 0 else 2 * NL if fmt == 9 else NL
        for direction in (H2D, D2H):
            results = []
            for op in (theirs, ours):
                pools = [_random(storage, torch.bfloat16, 80 + i) for i in range(count)]
                views = [p[..., : BS * NH * HS].view(shape) for p in pools]
                objects = [_random(_object_shape(fmt), torch.bfloat16, 90 + i) for i in range(2)]
                desc = _shape_desc(native, torch.bfloat16, block_stride_elems=pad)
                if op is theirs:
                    paged = (
                        views[0] if fmt == 0 else [views[:NL], views[NL:]] if fmt == 9 else views
                    )
                else:
                    paged = _ptrs(pools)
                op(paged, objects, [5, 0, 3], "cpu", direction, desc, CHUNK, fmt, 0)
                results.append([*pools, *objects])
            for e, g in zip(*results, strict=True):
                assert _same_bytes(e, g), (fmt, direction)


# ---------------------------------------------------------------- HND formats (kvx only)


def _as_nhd(paged: torch.Tensor, fmt: int) -> torch.Tensor:
    """A per-layer HND tensor viewed as [planes, NB, BS, NH, width]: the reference reads and
    writes the tokens through it with plain indexing."""
    if fmt == 15:
        paged, fmt = paged[:, :, :, 0], 6
    if fmt == 6:
        return paged.permute(0, 1, 3, 2, 4)
    if fmt in (7, 8):
        return paged.permute(1, 0, 3, 2, 4)
    return paged.permute(0, 2, 1, 3)[None]  # 10, 12: [NB, NH, BS, 2 * HS], one plane


def _reference(layers, key_value, slot_mapping, fmt, direction) -> None:
    """Plain torch: token t of layer l <-> slot slot_mapping[t] of layers[l] (fp8 moved as the
    same bytes in uint8: torch cannot index fp8 tensors on the CPU)."""
    if key_value.dtype.itemsize == 1:
        key_value, layers = key_value.view(torch.uint8), [p.view(torch.uint8) for p in layers]
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    blocks, offsets = slots // BS, slots % BS
    for l, paged in enumerate(layers):
        nhd = _as_nhd(paged, fmt)
        planes, n = nhd.shape[0], int(valid.sum())
        if direction == D2H:
            key_value[:, l, valid] = nhd[:, blocks, offsets].reshape(planes, n, -1)
        else:
            nhd[:, blocks, offsets] = key_value[:, l, valid].reshape(planes, n, NH, -1)


HND_SHAPES = {
    6: (2, NB, NH, BS, HS),
    15: (2, NB, NH, 1, BS, HS),
    7: (NB, 2, NH, BS, HS),
    10: (NB, NH, BS, 2 * HS),
    12: (NB, NH, BS, 2 * HS),
}


@pytest.mark.parametrize("mode", ["pointers", "list"])
@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", sorted(HND_SHAPES))
def test_multi_layer_kv_transfer_copies_hnd_formats(fmt, direction, mode) -> None:
    """LMCache's torch version rejects HND formats; kvx does its CUDA op's copy."""
    packed = fmt in (10, 12)
    for dtype in (torch.bfloat16, torch.float8_e5m2):
        results = []
        for run_kvx in (False, True):
            layers = [_random(HND_SHAPES[fmt], dtype, 100 + i) for i in range(NL)]
            key_value = _random((1, NL, 9, 2 * HIDDEN) if packed else (2, NL, 9, HIDDEN), dtype, 11)
            slot_mapping = _slots(9, PBS, 12)
            if run_kvx:
                ptrs = layers if mode == "list" else _ptrs(layers)
                ops.multi_layer_kv_transfer(
                    key_value, ptrs, slot_mapping, "cpu", PBS, direction, fmt, BS, HS
                )
            else:
                _reference(layers, key_value, slot_mapping, fmt, direction)
            results.append([key_value, *layers])
        for e, g in zip(*results, strict=True):
            assert _same_bytes(e, g)


def test_multi_layer_kv_transfer_honours_block_stride_of_packed_hnd() -> None:
    """Formats 10 and 12 read ``block_stride_elems`` as LMCache's CUDA op does."""
    pad = NH * BS * 2 * HS + 16
    pools = [_random((NB, pad), torch.float16, 110 + i) for i in range(NL)]
    views = [p[:, : NH * BS * 2 * HS].view(NB, NH, BS, 2 * HS) for p in pools]
    key_value = _random((1, NL, 9, 2 * HIDDEN), torch.float16, 13)
    slot_mapping = _slots(9, PBS, 14)
    expected = key_value.clone()
    _reference(views, expected, slot_mapping, 12, D2H)
    ops.multi_layer_kv_transfer(
        key_value, _ptrs(pools), slot_mapping, "cpu", PBS, D2H, 12, BS, HS, 0, pad
    )
    assert _same_bytes(key_value, expected)


@pytest.mark.parametrize("direction", [H2D, D2H])
@pytest.mark.parametrize("fmt", [6, 7, 8])
def test_single_layer_kv_transfer_copies_hnd_formats(fmt, direction) -> None:
    """LMCache's torch version reads HND tensors as NHD; kvx copies as its CUDA op does (8: one
    layer of the cross-layer cache, ``[NB, 2, NH, BS, HS]``)."""
    shape = HND_SHAPES[7 if fmt == 8 else fmt]
    results = []
    for run_kvx in (False, True):
        paged = _random(shape, torch.bfloat16, 120)
        lmc_kv = _random((2, 9, HIDDEN), torch.bfloat16, 15)
        slot_mapping = _slots(9, PBS, 16)
        if run_kvx:
            ops.single_layer_kv_transfer(lmc_kv, paged, slot_mapping, direction, fmt)
        else:
            _reference([paged], lmc_kv[:, None], slot_mapping, fmt, direction)
        results.append([lmc_kv, paged])
    for e, g in zip(*results, strict=True):
        assert _same_bytes(e, g)


# ---------------------------------------------------------------- LMCache's torch version


def test_formats_kvx_has_no_layout_for_run_lmcache_s_torch_version(lmc, caplog) -> None:
    """Logged once per op and reason; the results are LMCache's."""
    from kvx.lmcache import _fallback

    build = _multi_layer_case(3, D2H, "uint64")  # read as format 14 below: LMCache's MLA view
    expected, run = build(torch.float16)
    run(lambda *args: lmc.multi_layer_kv_transfer(*args[:6], 14, *args[7:]))
    got, run = build(torch.float16)
    with caplog.at_level("WARNING", logger="kvx.lmcache"):
        run(lambda *args: ops.multi_layer_kv_transfer(*args[:6], 14, *args[7:]))
    for e, g in zip(expected, got, strict=True):
        assert _same_bytes(e, g)
    reason = ops.FALLBACKS["multi_layer_kv_transfer"][14]
    assert ("multi_layer_kv_transfer", reason) in _fallback.announced()


@pytest.mark.parametrize(
    "call",
    [
        # no head_size: LMCache's torch version rejects HND formats
        lambda kv, ptrs, slots: ops.multi_layer_kv_transfer(
            kv, ptrs, slots, "cpu", PBS, D2H, 6, BS
        ),
        # the cross-layer HND format has no per-layer meaning anywhere in LMCache
        lambda kv, ptrs, slots: ops.multi_layer_kv_transfer(
            kv, ptrs, slots, "cpu", PBS, D2H, 8, BS, HS
        ),
    ],
)
def test_undefined_cases_raise_lmcache_s_error(lmc, call) -> None:
    layers = [torch.zeros(2, NB, NH, BS, HS) for _ in range(NL)]
    with pytest.raises(NotImplementedError):
        call(torch.zeros(2, NL, 9, HIDDEN), _ptrs(layers), _slots(9, PBS, 0))


# ---------------------------------------------------------------- bad input: nothing written


def _unchanged(tensors: list[torch.Tensor], call: Callable[[], Any], match: str) -> None:
    before = [t.clone() for t in tensors]
    with pytest.raises(kvx.InvalidArgumentError, match=match):
        call()
    for b, t in zip(before, tensors, strict=True):
        assert _same_bytes(b, t)


@pytest.mark.parametrize("mode", ["pointers", "list"])
@pytest.mark.parametrize("direction", [H2D, D2H])
def test_slot_out_of_range_writes_nothing(mode, direction) -> None:
    layers = [_random((2, PBS, HIDDEN), torch.bfloat16, i) for i in range(NL)]
    key_value = _random((2, NL, 9, HIDDEN), torch.bfloat16, 17)
    slot_mapping = _slots(9, PBS, 18)
    slot_mapping[7] = PBS
    ptrs = layers if mode == "list" else _ptrs(layers)
    _unchanged(
        [key_value, *layers],
        lambda: ops.multi_layer_kv_transfer(
            key_value, ptrs, slot_mapping, "cpu", PBS, direction, 1
        ),
        "out of range",
    )
    k, v = layers[0][0].view(NB, BS, NH, HS), layers[0][1].view(NB, BS, NH, HS)
    for name in ("load_and_reshape_flash", "reshape_and_cache_back_flash"):
        _unchanged(
            [key_value, k, v],
            lambda name=name: getattr(ops, name)(key_value, k, v, slot_mapping, 1),
            "out of range",
        )


@pytest.mark.parametrize("direction", [H2D, D2H])
def test_block_out_of_range_in_a_later_object_writes_nothing(native, direction) -> None:
    layers = [_random((2, NB, BS, NH, HS), torch.bfloat16, i) for i in range(NL)]
    objects = [_random((2, NL, CHUNK, HIDDEN), torch.bfloat16, 19 + i) for i in range(2)]
    desc = _shape_desc(native, torch.bfloat16)
    for bad in (NB, -1):
        _unchanged(
            [*layers, *objects],
            lambda bad=bad: ops.multi_layer_block_kv_transfer(
                _ptrs(layers), objects, [0, 1, 2, bad], "cpu", direction, desc, CHUNK, 1, 0
            ),
            r"block_ids\[3\]",
        )


def test_bad_arguments_write_nothing(native) -> None:
    layers = [_random((2, NB, BS, NH, HS), torch.bfloat16, i) for i in range(NL)]
    key_value = _random((2, NL, 9, HIDDEN), torch.bfloat16, 21)
    slot_mapping = _slots(9, PBS, 22)
    state = [key_value, *layers]

    ptrs = _ptrs(layers)

    def multi(kv=key_value, ptrs=ptrs, slots=slot_mapping, direction=H2D, fmt=1):
        return lambda: ops.multi_layer_kv_transfer(kv, ptrs, slots, "cpu", PBS, direction, fmt)

    _unchanged(state, multi(direction=2), "direction")
    _unchanged(state, multi(ptrs=_ptrs(layers[:2])), "expected 3 pointers")
    _unchanged(state, multi(ptrs=[t.half() for t in layers]), "dtype")
    _unchanged(state, multi(slots=slot_mapping[:8]), "tokens")
    # every other block of a larger cache: its slots cannot be read as one [2, PBS, hidden] axis
    strided = [_random((2, 2 * NB, BS, NH, HS), torch.bfloat16, i)[:, ::2] for i in range(NL)]
    _unchanged([*state, *strided], multi(ptrs=strided), "without a copy")
    desc = _shape_desc(native, torch.bfloat16)
    objects = [_random((2, NL, CHUNK, HIDDEN), torch.bfloat16, 23)]
    for chunk, skip, match in ((0, 0, "positive"), (BS + 1, 0, "multiple"), (CHUNK, -1, ">= 0")):
        _unchanged(
            [*layers, *objects],
            lambda chunk=chunk, skip=skip: ops.multi_layer_block_kv_transfer(
                layers, objects, [0, 1], "cpu", H2D, desc, chunk, 1, skip
            ),
            match,
        )


def test_int32_slot_mappings_work_as_in_lmcache(lmc) -> None:
    build = _multi_layer_case(1, D2H, "list")

    def with_int32(op):
        return lambda kv, ptrs, slots, *rest: op(kv, ptrs, slots.int(), *rest)

    expected, run = build(torch.float32)
    run(with_int32(lmc.multi_layer_kv_transfer))
    got, run = build(torch.float32)
    run(with_int32(ops.multi_layer_kv_transfer))
    for e, g in zip(expected, got, strict=True):
        assert _same_bytes(e, g)
