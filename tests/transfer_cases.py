"""Builders for transfer tests: paged caches in every layout, dense buffers, slot mappings.

Caches are filled with random *bits* (NaNs and all), so comparisons are byte-exact and a copy
that converts through floats would be caught.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvx
import numpy as np
import torch
from kvx import layouts

DTYPES = [
    torch.uint8,
    torch.float8_e4m3fn,
    torch.float8_e4m3fnuz,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
]


@dataclass(frozen=True)
class Geometry:
    layers: int
    blocks: int
    block_size: int
    heads: int
    head_size: int


def random_bits(shape, dtype, gen: torch.Generator) -> torch.Tensor:
    """A tensor of `dtype` whose bytes are uniformly random."""
    size = torch.empty(0, dtype=dtype).element_size()
    raw = torch.randint(0, 256, (*shape, size), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


def _axis_sizes(layout: layouts.PagedLayout, g: Geometry) -> dict[str, int]:
    token_pool = "token" not in layout.axes
    return {
        "layer": g.layers,
        "kv": 2,
        "block": g.blocks * g.block_size if token_pool else g.blocks,
        "token": g.block_size,
        "head": 1 if layout.num_kv_fixed == 1 else g.heads,
        "dim": g.head_size,
    }


def _tensor(axes, sizes, dtype, gen, pad_axis: str | None) -> torch.Tensor:
    """Random tensor with the given axes; `pad_axis` is allocated larger and sliced back."""
    shape = [sizes[a] for a in axes]
    if pad_axis is None or pad_axis not in axes:
        return random_bits(shape, dtype, gen)
    i = axes.index(pad_axis)
    padded = list(shape)
    padded[i] += 3
    return random_bits(padded, dtype, gen).narrow(i, 0, shape[i])


def make_paged(layout_name: str, g: Geometry, dtype, gen, pad_axis: str | None = None):
    """An engine cache in `layout_name`, as the engine would pass it."""
    layout = layouts.paged_layout(layout_name)
    sizes = _axis_sizes(layout, g)
    make = lambda: _tensor(layout.axes, sizes, dtype, gen, pad_axis)  # noqa: E731
    if layout.container == layouts.SINGLE:
        return make()
    if layout.container == layouts.LAYER_LIST:
        return [make() for _ in range(g.layers)]
    if layout.container == layouts.KV_TUPLES:
        return [(make(), make()) for _ in range(g.layers)]
    return ([make() for _ in range(g.layers)], [make() for _ in range(g.layers)])


def clone_keep_layout(t: torch.Tensor) -> torch.Tensor:
    """A copy with the same strides and padding: the whole allocation is copied, then re-viewed."""
    base = t if t._base is None else t._base
    copy = base.clone()
    return copy.as_strided(t.size(), t.stride(), t.storage_offset())


def clone_paged(paged):
    if isinstance(paged, torch.Tensor):
        return clone_keep_layout(paged)
    return type(paged)(clone_paged(p) for p in paged)


def whole(t: torch.Tensor) -> torch.Tensor:
    """The allocation behind a view, padding included."""
    return t if t._base is None else t._base


def paged_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return bits_equal(whole(a), whole(b))
    return all(paged_equal(x, y) for x, y in zip(a, b, strict=True))


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return torch.equal(a.view(ints[a.element_size()]), b.view(ints[b.element_size()]))


def num_kv(layout_name: str) -> int:
    return layouts.paged_layout(layout_name).num_kv_fixed or 2


def capacity(layout_name: str, g: Geometry) -> int:
    return g.blocks * g.block_size


def make_dense(
    layout_name: str, g: Geometry, tokens: int, dtype, gen, fmt: str = "KV_2LTD", token_gap: int = 0
) -> torch.Tensor:
    """A dense buffer; `token_gap` > 0 makes it a non-contiguous view (rows spaced apart)."""
    heads = 1 if num_kv(layout_name) == 1 else g.heads
    hd = heads * g.head_size
    kv = num_kv(layout_name)
    shape = {
        "KV_2LTD": (kv, g.layers, tokens, hd),
        "MLA_1LTD": (kv, g.layers, tokens, hd),
        "KV_T2D": (tokens, kv, hd),
        "KV_2TD": (kv, tokens, hd),
    }[fmt]
    if not token_gap:
        return random_bits(shape, dtype, gen)
    wide = list(shape)
    wide[-1] += token_gap
    return random_bits(wide, dtype, gen)[..., :hd]


def make_slots(
    cap: int, block_size: int, tokens: int, rng: np.random.Generator, pad_fraction: float = 0.15
):
    """Slots like an engine's: runs within random blocks, plus singles and -1 padding."""
    blocks = rng.permutation(cap // block_size)
    slots = (blocks[:, None] * block_size + np.arange(block_size)[None, :]).reshape(-1)
    start = int(rng.integers(0, block_size))
    slots = slots[start : start + tokens]
    if len(slots) < tokens:
        slots = np.concatenate([slots, rng.permutation(cap)[: tokens - len(slots)]])
    slots = slots.copy()
    slots[rng.random(tokens) < pad_fraction] = -1
    return torch.from_numpy(slots.astype(np.int64))


def unique_valid(slots: torch.Tensor) -> bool:
    valid = slots[slots >= 0]
    return len(torch.unique(valid)) == len(valid)


# A store big enough that the thread pool splits it (the thread and fork tests use it).
POOL_GEOMETRY = Geometry(layers=4, blocks=64, block_size=16, heads=4, head_size=64)


def pool_store_case(seed: int, tokens: int = 700):
    """(paged, dense, slots, expected): a vLLM NHD store of `tokens` tokens over POOL_GEOMETRY and
    the dense buffer kvx.reference gives for it (padding tokens keep dense's values)."""
    gen = torch.Generator().manual_seed(seed)
    paged = make_paged("vllm_nhd", POOL_GEOMETRY, torch.bfloat16, gen)
    dense = make_dense("vllm_nhd", POOL_GEOMETRY, tokens, torch.bfloat16, gen)
    slots = make_slots(
        POOL_GEOMETRY.blocks * POOL_GEOMETRY.block_size,
        POOL_GEOMETRY.block_size,
        tokens,
        np.random.default_rng(seed),
    )
    expected = dense.clone()
    kvx.reference.transfer(paged, expected, slots, direction="store")
    return paged, dense, slots, expected


def run_both(layout_name, paged, dense, slots, direction, fmt="KV_2LTD"):
    """Runs kvx and the reference on copies; returns ((paged, dense) of kvx, (paged, dense) of
    ref)."""
    kp, kd = clone_paged(paged), clone_keep_layout(dense)
    rp, rd = clone_paged(paged), clone_keep_layout(dense)
    kvx.transfer(kp, kd, slots, direction=direction, layout=layout_name, dense_format=fmt)
    kvx.reference.transfer(rp, rd, slots, direction=direction, layout=layout_name, dense_format=fmt)
    return (kp, kd), (rp, rd)
