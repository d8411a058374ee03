"""Bad input to kvx.transfer: every argument is rejected with an error that names it and what was
expected, and nothing is written."""

import kvx
import numpy as np
import pytest
import torch
import transfer_cases as tc

G = tc.Geometry(layers=2, blocks=4, block_size=4, heads=2, head_size=8)


@pytest.fixture
def setup():
    gen = torch.Generator().manual_seed(0)
    paged = tc.make_paged("vllm_nhd", G, torch.float16, gen)
    dense = tc.make_dense("vllm_nhd", G, 6, torch.float16, gen)
    slots = torch.tensor([0, 1, -1, 5, 9, 15], dtype=torch.int64)
    return paged, dense, slots


def _rejects(match, paged, dense, slots, **kwargs):
    """Asserts the call fails with InvalidArgumentError matching `match`, writing nothing."""
    kwargs.setdefault("direction", "store")
    paged_before, dense_before = (
        tc.clone_paged(paged),
        dense.clone() if isinstance(dense, torch.Tensor) else None,
    )
    with pytest.raises(kvx.InvalidArgumentError, match=match) as info:
        kvx.transfer(paged, dense, slots, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, kvx.KvxError)
    assert tc.paged_equal(paged, paged_before)
    if dense_before is not None:
        assert tc.bits_equal(dense, dense_before)


@pytest.mark.parametrize("direction", ["store", "load"])
def test_slot_out_of_range_writes_nothing(setup, direction):
    paged, dense, slots = setup
    slots[4] = 16  # capacity is 4 blocks * 4
    _rejects(
        r"slot_mapping\[4\]: slot 16 is out of range; the paged cache holds 16 slots",
        paged,
        dense,
        slots,
        direction=direction,
    )


def test_slot_mapping_dtype(setup):
    paged, dense, slots = setup
    _rejects(r"slot_mapping: expected dtype int64, got torch.int32", paged, dense, slots.int())


def test_slot_mapping_rank(setup):
    paged, dense, slots = setup
    _rejects(r"slot_mapping: expected a 1-D array", paged, dense, slots[None])


def test_slot_mapping_type(setup):
    paged, dense, _ = setup
    _rejects(
        r"slot_mapping: expected a torch.Tensor or numpy.ndarray, got list",
        paged,
        dense,
        [0, 1, 2, 3, 4, 5],
    )


def test_slot_mapping_device(setup):
    paged, dense, slots = setup
    _rejects(
        r"device: libkvx does not support torch device type 'meta'", paged, dense, slots.to("meta")
    )


def test_slot_mapping_length(setup):
    paged, dense, slots = setup
    _rejects(r"dense: expected tokens \(len\(slot_mapping\)\) 5, got 6", paged, dense, slots[:5])


def test_non_contiguous_slot_mapping_is_accepted(setup):
    paged, dense, slots = setup
    wide = torch.stack([slots, slots], 1)[:, 0]
    expected = dense.clone()
    kvx.reference.transfer(paged, expected, slots, direction="store")
    kvx.transfer(paged, dense, wide, direction="store")
    assert tc.bits_equal(dense, expected)


def test_direction(setup):
    paged, dense, slots = setup
    _rejects(r"direction: expected one of", paged, dense, slots, direction="sideways")
    _rejects(r"direction: expected one of", paged, dense, slots, direction=2)


def test_layout_name(setup):
    paged, dense, slots = setup
    _rejects(r"layout: expected one of .*got 'vllm'", paged, dense, slots, layout="vllm")


def test_wrong_layout_names_how_each_axis_was_read():
    """An NHD cache passed as vllm_hnd: the message says which axis the layout took for what."""
    gen = torch.Generator().manual_seed(1)
    nhd = [torch.zeros(2, 4, 16, 2, 8) for _ in range(2)]  # [2, NB, BS=16, H=2, D=8]
    dense = tc.make_dense("vllm_nhd", tc.Geometry(2, 4, 16, 2, 8), 3, torch.float32, gen)
    _rejects(
        r"expected num_heads \* head_size 128, got 16 \(layout vllm_hnd read paged\[0\] of shape "
        r"\(2, 4, 16, 2, 8\) as \[kv=2, block=4, head=16, token=2, dim=8\]; dense format KV_2LTD",
        nhd,
        dense,
        torch.tensor([0, 1, 2]),
        layout="vllm_hnd",
    )


def test_dense_format_name(setup):
    paged, dense, slots = setup
    _rejects(
        r"dense_format: expected one of .*got 'KV_X'", paged, dense, slots, dense_format="KV_X"
    )


@pytest.mark.parametrize("paged", [42, []])
def test_paged_not_a_list(setup, paged):
    _, dense, slots = setup
    before = dense.clone()
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"paged: layout vllm_nhd expects a non-empty list"
    ):
        kvx.transfer(paged, dense, slots, direction="store")
    assert tc.bits_equal(dense, before)


def test_paged_rank(setup):
    paged, dense, slots = setup
    bad = [p[0] for p in paged]
    _rejects(
        r"paged\[0\] \(layout vllm_nhd\): expected 5 dimensions \[kv, block, token, head, dim\]",
        bad,
        dense,
        slots,
    )


def test_paged_layers_disagree(setup):
    paged, dense, slots = setup
    paged[1] = paged[1].float()
    _rejects(r"paged\[1\]: expected the dtype of paged\[0\]", paged, dense, slots)
    paged[1] = torch.zeros(2, 5, 4, 2, 8, dtype=torch.float16)
    _rejects(r"paged\[1\]: expected the shape of paged\[0\]", paged, dense, slots)


def test_paged_kv_axis(setup):
    _, dense, slots = setup
    paged = [torch.zeros(3, 4, 4, 2, 8, dtype=torch.float16) for _ in range(2)]
    _rejects(
        r"paged\[0\]: the kv axis of layout vllm_nhd must have size 2, got 3", paged, dense, slots
    )


def test_paged_head_vectors_not_contiguous(setup):
    _, dense, slots = setup
    paged = [torch.zeros(2, 4, 4, 2, 16, dtype=torch.float16)[..., ::2] for _ in range(2)]
    _rejects(r"paged\[0\]: head vectors must be contiguous", paged, dense, slots)


def test_paged_unsupported_dtype(setup):
    _, dense, slots = setup
    paged = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.complex64) for _ in range(2)]
    _rejects(r"paged\[0\]: dtype torch.complex64 has no libkvx equivalent", paged, dense, slots)


def test_dense_dtype(setup):
    paged, dense, slots = setup
    _rejects(
        r"dense: expected the paged cache's dtype torch.float16, got torch.float32",
        paged,
        dense.float(),
        slots,
    )


@pytest.mark.parametrize(
    "shape,match",
    [
        ((2, 3, 6, 16), r"dense: expected layers 2, got 3"),
        ((1, 2, 6, 16), r"dense: expected K/V planes .* 2, got 1"),
        ((2, 2, 6, 15), r"dense: expected num_heads \* head_size 16, got 15"),
        ((2, 2, 6), r"dense \(format KV_2LTD\): expected 4 dimensions"),
    ],
)
def test_dense_shape(setup, shape, match):
    paged, _, slots = setup
    _rejects(match, paged, torch.zeros(shape, dtype=torch.float16), slots)


def test_dense_split_heads_shape(setup):
    paged, _, slots = setup
    _rejects(
        r"dense: expected heads 2, got 4",
        paged,
        torch.zeros(2, 2, 6, 4, 4, dtype=torch.float16),
        slots,
    )


def test_dense_read_only_numpy_on_store(setup):
    paged, dense, slots = setup
    ro = dense.numpy().copy()
    ro.flags.writeable = False
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"dense: expected a writable array, got a read-only one"
    ):
        kvx.transfer([p.numpy() for p in paged], ro, slots.numpy(), direction="store")


def test_paged_read_only_numpy_on_load(setup):
    paged, dense, slots = setup
    ro = [p.numpy().copy() for p in paged]
    for r in ro:
        r.flags.writeable = False
    with pytest.raises(kvx.InvalidArgumentError, match=r"paged\[0\]: expected a writable array"):
        kvx.transfer(ro, dense.numpy(), slots.numpy(), direction="load")


def test_outputs_tracked_by_autograd(setup):
    paged, dense, slots = setup
    tracked = dense.float().requires_grad_()
    src = [p.float() for p in paged]
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"dense: expected a tensor that does not require grad"
    ):
        kvx.transfer(src, tracked, slots, direction="store")
    tracked = [p.float().requires_grad_() for p in paged]
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"paged\[0\]: expected a tensor that does not require grad"
    ):
        kvx.transfer(tracked, dense.float(), slots, direction="load")


def test_dense_broadcast_output(setup):
    paged, _, slots = setup
    dense = torch.zeros(1, 1, 1, 16, dtype=torch.float16).expand(2, 2, 6, 16)
    _rejects(r"dense: expected a writable view, got one with broadcast", paged, dense, slots)


def test_dense_overlapping_paged(setup):
    paged, _, slots = setup
    dense = paged[0].view(-1)[: 2 * 2 * 6 * 16].view(2, 2, 6, 16)
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"dense: expected memory separate from the paged cache"
    ):
        kvx.transfer(paged, dense, slots, direction="store")


def test_dense_not_contiguous_rows(setup):
    paged, _, slots = setup
    dense = torch.zeros(2, 2, 6, 32, dtype=torch.float16)[..., ::2]
    _rejects(r"dense: the H\*D axis must be contiguous", paged, dense, slots)


def test_view_outside_storage_is_rejected():
    """numpy lets a view claim memory past its allocation; kvx refuses to touch it."""
    storage = np.zeros(100, dtype=np.float16)
    bogus = np.lib.stride_tricks.as_strided(storage, (2, 4, 4, 2, 8), (512, 128, 32, 16, 2))
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"paged\[0\]: view reaches outside its storage"
    ):
        kvx.transfer(
            [bogus],
            np.zeros((2, 1, 1, 16), dtype=np.float16),
            np.zeros(1, dtype=np.int64),
            direction="store",
        )
