"""How the Ascend backend plans transfers, on the stub AscendCL runtime: over every paged layout x
both directions x sizes (odd rows, padded heads and blocks) x -1 padding, with the dense buffer in
host memory (batch copies) and in device memory (aclrtMemcpyAsync; unaligned pieces through
host memory), the copies submitted follow the documented planning rule and the stub records no
misuse (out-of-bounds device ranges, copy kinds or batch attributes that do not match the
pointers, destMax < size). The bytes moved
are checked, on this matrix and more, by tests/test_conformance.py."""

import device_stub_cases as dsc
import pytest
import transfer_cases as tc

pytestmark = dsc.needs_compiler("ascend")


@dsc.over_the_matrix
def test_plan_over_the_matrix(layout_name, size, direction, dense_on_device):
    st = dsc.stub("ascend")
    case = dsc.run_for_plan("ascend", layout_name, size, direction, dense_on_device)
    # AscendCL documents 2D copies between host and device only, and on-chip device <-> device
    # copies need 64-byte-aligned ends (others go through host memory: two copies)
    if dense_on_device:
        expected, uses_2d = dsc.expected_plan(case, allow_2d=False, d2d_alignment=64)
    else:
        expected, uses_2d = dsc.expected_plan(case, allow_2d=True)
    assert st.copies() == expected
    if dense_on_device:
        # device <-> device: batch and 2D copies are host <-> device only: aclrtMemcpyAsync
        assert st.calls("aclrtMemcpyBatchAsyncV2") == st.calls("aclrtMemcpy2dAsync") == 0
        assert st.calls("aclrtMemcpyAsync") == expected
    elif uses_2d:
        # rows split per head or padded: a 2D copy per (run, head) grid, 1D for single tokens
        assert st.calls("aclrtMemcpyBatchAsyncV2") == 0
        assert st.calls("aclrtMemcpy2dAsync") + st.calls("aclrtMemcpyAsync") == expected
        assert st.calls("aclrtMemcpy2dAsync") > 0
    else:
        assert st.calls("aclrtMemcpyBatchAsyncV2") == 1
        assert st.calls("aclrtMemcpyBatchAsync") == 0
        assert st.calls("aclrtMemcpyAsync") == 0


@pytest.mark.parametrize("pad_axis,runs", [(None, 4), ("token", 5)])
def test_plan_by_hand(pad_axis, runs):
    """vllm_nhd, block 4, slots: a whole block, padding, a run that crosses from block 2 into
    block 3, a single, another whole block. Blocks laid end to end (no padding) make the crossing
    run one run: 4 runs per plane; a padded token axis separates blocks: 5. Counted by hand."""
    import kvx
    import torch
    from kvx import Direction

    st = dsc.stub("ascend")
    g = tc.Geometry(layers=2, blocks=8, block_size=4, heads=2, head_size=4)
    gen = torch.Generator().manual_seed(3)
    paged = tc.make_paged("vllm_nhd", g, torch.float16, gen, pad_axis)
    slots = torch.tensor([20, 21, 22, 23, -1, 10, 11, 12, 13, 30, 0, 1, 2, 3], dtype=torch.int64)
    dense = tc.make_dense("vllm_nhd", g, len(slots), torch.float16, gen)
    rp, rd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
    kvx.reference.transfer(rp, rd, slots, direction="store", layout="vllm_nhd")
    case = dsc.stage(
        st, "ascend", "vllm_nhd", paged, dense, slots, "KV_2LTD", dense_on_device=False
    )
    st.reset()
    assert case.run(int(Direction.PAGED_TO_DENSE)) == 0, dsc.last_error()
    assert case.synchronize() == 0
    assert st.copies() == 4 * runs  # 2 layers x K/V = 4 planes
    assert st.calls("aclrtMemcpyBatchAsyncV2") == 1
    assert st.copied_bytes() == 4 * 13 * 2 * 4 * 2  # planes x valid tokens x row bytes
    case.download()
    case.release()
    assert tc.bits_equal(dense, rd)
