"""How the CNRT backend plans transfers, on the stub CNRT runtime: over every paged layout x both
directions x sizes (odd rows, padded heads and blocks) x -1 padding, dense buffer in host and in
device memory, the copies submitted follow the documented planning rule through the newest entry
points, and the stub records no misuse (out-of-bounds device ranges, directions that do not match
the pointers, 2D copies outside CNRT's limits). The bytes moved are checked, on this matrix and
more, by tests/test_conformance.py."""

import device_stub_cases as dsc
import kvx
import pytest
import torch
import transfer_cases as tc
from kvx import Direction

pytestmark = dsc.needs_compiler("cnrt")


@dsc.over_the_matrix
def test_plan_over_the_matrix(layout_name, size, direction, dense_on_device):
    st = dsc.stub("cnrt")
    case = dsc.run_for_plan("cnrt", layout_name, size, direction, dense_on_device)
    expected = dsc.expected_copies(case, allow_2d=True)
    assert st.copies() == expected
    # every 1D copy through the newest entry point, the queue before the direction
    assert st.calls("cnrtMemcpyAsync_V3") + st.calls("cnrtMemcpy2DAsync") == expected
    assert st.calls("cnrtMemcpyAsync_V2") == st.calls("cnrtMemcpyAsync") == 0


@pytest.mark.parametrize("direction", [Direction.PAGED_TO_DENSE, Direction.DENSE_TO_PAGED])
def test_hnd_uses_2d_copies(direction):
    """vllm HND [2, NB, H, BS, D]: a run of tokens in one block is, per head, a grid of rows D
    elements apart on the paged side and H*D apart on the dense side: one 2D copy per (plane, run,
    head). Counted by hand."""
    st = dsc.stub("cnrt")
    g = tc.Geometry(layers=1, blocks=6, block_size=8, heads=2, head_size=4)
    gen = torch.Generator().manual_seed(5)
    paged = tc.make_paged("vllm_hnd", g, torch.bfloat16, gen)
    slots = torch.tensor(
        [8, 9, 10, 11, 12, -1, 40, 41, 3], dtype=torch.int64
    )  # runs: 5, 2, 1 tokens
    dense = tc.make_dense("vllm_hnd", g, len(slots), torch.bfloat16, gen)
    rp, rd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
    kvx.reference.transfer(rp, rd, slots, direction=int(direction), layout="vllm_hnd")
    case = dsc.stage(st, "cnrt", "vllm_hnd", paged, dense, slots, "KV_2LTD", dense_on_device=False)
    st.reset()
    assert case.run(int(direction)) == 0, dsc.last_error()
    assert case.synchronize() == 0
    # 2 planes x 2 heads x (2D for the runs of 5 and 2 tokens, 1D for the single token)
    assert st.calls("cnrtMemcpy2DAsync") == 2 * 2 * 2
    assert st.calls("cnrtMemcpyAsync_V3") == 2 * 2 * 1
    assert st.errors() == (0, "")
    case.download()
    case.release()
    assert tc.paged_equal(paged, rp) and tc.bits_equal(dense, rd)
