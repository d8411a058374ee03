"""Property tests: a store then a load into a fresh cache restores exactly the selected slots and
touches nothing else, for random geometries, layouts and slot mappings."""

import kvx
import torch
import transfer_cases as tc
from hypothesis import given, settings
from hypothesis import strategies as st
from kvx import layouts


@st.composite
def cases(draw):
    layout_name = draw(st.sampled_from(sorted(layouts.PAGED_LAYOUTS)))
    g = tc.Geometry(
        layers=draw(st.integers(1, 3)),
        blocks=draw(st.integers(1, 6)),
        block_size=draw(st.integers(1, 5)),
        heads=draw(st.integers(1, 3)),
        head_size=draw(st.integers(1, 9)),
    )
    cap = g.blocks * g.block_size
    slots = draw(st.lists(st.integers(-1, cap - 1), min_size=0, max_size=cap + 3))
    valid = [s for s in slots if s >= 0]
    if len(set(valid)) != len(valid):  # loads need distinct slots to be deterministic
        seen, unique = set(), []
        for s in slots:
            unique.append(-1 if s in seen else s)
            if s >= 0:
                seen.add(s)
        slots = unique
    dtype = draw(st.sampled_from([torch.uint8, torch.bfloat16, torch.float32]))
    return (
        layout_name,
        g,
        torch.tensor(slots, dtype=torch.int64),
        dtype,
        draw(st.integers(0, 2**31)),
    )


def _planes(layout_name, paged):
    """[kv][layer] -> [capacity, H*D] bit views of the cache via the reference's own views."""
    views, _ = kvx.reference._paged_views(paged, layouts.paged_layout(layout_name))
    return [[v.reshape(v.shape[0] * v.shape[1], -1) for v in plane] for plane in views]


@settings(max_examples=150, deadline=None)
@given(cases())
def test_store_then_load_restores_exactly_the_selected_slots(case):
    layout_name, g, slots, dtype, seed = case
    gen = torch.Generator().manual_seed(seed)
    fmt = "MLA_1LTD" if tc.num_kv(layout_name) == 1 else "KV_2LTD"
    source = tc.make_paged(layout_name, g, dtype, gen)
    target = tc.make_paged(layout_name, g, dtype, gen)
    before = tc.clone_paged(target)
    dense = tc.make_dense(layout_name, g, len(slots), dtype, gen, fmt)
    dense_before = dense.clone()

    kvx.store(source, dense, slots, layout=layout_name, dense_format=fmt)
    kvx.load(target, dense, slots, layout=layout_name, dense_format=fmt)

    selected = slots[slots >= 0]
    skipped = torch.nonzero(slots < 0).flatten()
    for src_plane, dst_plane, old_plane in zip(
        _planes(layout_name, source),
        _planes(layout_name, target),
        _planes(layout_name, before),
        strict=True,
    ):
        for src, dst, old in zip(src_plane, dst_plane, old_plane, strict=True):
            assert tc.bits_equal(dst[selected], src[selected])
            untouched = torch.ones(dst.shape[0], dtype=torch.bool)
            untouched[selected] = False
            assert tc.bits_equal(dst[untouched], old[untouched])
    # Tokens with slot -1 keep the dense buffer's previous contents.
    t_axis = 2 if dense.dim() == 4 else 1
    assert tc.bits_equal(
        dense.index_select(t_axis, skipped), dense_before.index_select(t_axis, skipped)
    )
