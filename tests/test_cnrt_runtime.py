"""The CNRT backend's runtime handling, on the stub CNRT (finding the runtime:
test_device_runtimes.py; the host-staged codec: test_staged_codec.py): picking the copy
entry point (cnrtMemcpyAsync_V3, else _V2, else the plain call; 2D copies only where
cnrtMemcpy2DAsync exists), error mapping by injected failures, host-side slot checks."""

import functools
import json

import device_stub_cases as dsc
import pytest
from kvx._native import lib as klib

pytestmark = dsc.needs_compiler("cnrt")

STORE, LOAD = dsc.STORE, dsc.LOAD
staged = functools.partial(
    dsc.staged_transfer, "cnrt", layout="vllm_hnd"
)  # (dense_on_device, layout, size, seed)


VARIANT = """
    import json, device_stub_cases as dsc
    defines = tuple(filter(None, "{defines}".split(",")))
    dsc._loaded["cnrt"] = st = dsc.Stub("cnrt", dsc.build_stub("cnrt", defines))
    out = {{}}
    for layout in ("vllm_nhd", "vllm_hnd"):
        for dense_on_device in (False, True):
            for direction in ("store", "load"):
                case = dsc.check_against_reference("cnrt", layout, "blocks", direction,
                                                   dense_on_device)
                key = "-".join([layout, "device" if dense_on_device else "host", direction])
                out[key] = {{n: st.calls(n) for n in ("cnrtMemcpyAsync_V3", "cnrtMemcpyAsync_V2",
                                                     "cnrtMemcpyAsync", "cnrtMemcpy2DAsync")}}
                out[key]["expected"] = dsc.expected_copies(case, allow_2d={allow_2d})
                out[key]["copies"] = st.copies()
    print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "defines,used,allow_2d",
    [
        (["STUB_NO_V3"], "cnrtMemcpyAsync_V2", True),
        (["STUB_NO_V3", "STUB_NO_V2"], "cnrtMemcpyAsync", True),
        (["STUB_NO_2D"], "cnrtMemcpyAsync_V3", False),
    ],
)
def test_api_selection(defines, used, allow_2d):
    r = dsc.run_python(VARIANT.format(defines=",".join(defines), allow_2d=allow_2d))
    assert r.returncode == 0, r.stdout + r.stderr
    for key, counts in json.loads(r.stdout.splitlines()[-1]).items():
        assert (
            counts[used] + counts["cnrtMemcpy2DAsync"] == counts["expected"] == counts["copies"]
        ), key
        for other in ("cnrtMemcpyAsync_V3", "cnrtMemcpyAsync_V2", "cnrtMemcpyAsync"):
            if other != used:
                assert counts[other] == 0, (key, other)
        if not allow_2d:
            assert counts["cnrtMemcpy2DAsync"] == 0
        elif "hnd" in key:
            assert counts["cnrtMemcpy2DAsync"] > 0, key


@pytest.mark.parametrize(
    "function,layout",
    [
        ("cnrtPointerGetAttributes", "vllm_nhd"),
        ("cnrtMemcpyAsync_V3", "vllm_nhd"),
        ("cnrtMemcpy2DAsync", "vllm_hnd"),
    ],
)
@pytest.mark.parametrize("code", [100006, 632015, 100050])
def test_error_codes_map_to_device_error(function, layout, code):
    dsc.check_injected_error(*staged(layout=layout), function, code, STORE)


def test_set_device_failure_maps_to_device_error():
    st, case = staged()
    st.inject("cnrtGetDevice", 632019)  # no context on this thread: kvx selects the queue's MLU
    st.inject("cnrtSetDevice", 100005)
    assert case.run(STORE) == klib.KVX_ERR_DEVICE
    assert "cnrtSetDevice" in dsc.last_error() and "100005" in dsc.last_error()
    case.release()


def test_async_error_reported_by_synchronize():
    st, case = staged(layout="vllm_nhd")
    st.inject_async("cnrtMemcpyAsync_V3", 632015)
    assert case.run(LOAD) == 0, dsc.last_error()
    assert case.synchronize() == klib.KVX_ERR_DEVICE
    assert "cnrtQueueSync" in dsc.last_error() and "632015" in dsc.last_error()
    case.release()


def test_out_of_range_slot_rejected_before_anything_is_enqueued():
    dsc.check_out_of_range_slot_rejected("cnrt", -1, ("cnrtMemcpyAsync_V3", "cnrtMemcpy2DAsync"))


def test_slot_mapping_in_device_memory_is_rejected():
    dsc.check_slot_mapping_in_device_memory_rejected("cnrt")


def test_wrong_device_is_rejected():
    _st, case = staged()
    case.stream.device_index = 1
    assert case.run(STORE) == klib.KVX_ERR_INVALID_ARGUMENT
    assert "MLU 1" in dsc.last_error() and "MLU 0" in dsc.last_error()
    case.release()
