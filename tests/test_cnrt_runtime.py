"""The CNRT backend's runtime handling, on the stub CNRT: finding the runtime, picking the copy
entry point (cnrtMemcpyAsync_V3, else _V2, else the plain call; 2D copies only where
cnrtMemcpy2DAsync exists), error mapping by injected failures, host-side slot checks."""

import json

import pytest

import device_stub_cases as dsc
from kvx import Direction
from kvx._native import ffi as kffi
from kvx._native import lib as klib

pytestmark = pytest.mark.skipif(dsc.compiler() is None, reason="no C compiler to build the stub CNRT runtime")

STORE, LOAD = int(Direction.PAGED_TO_DENSE), int(Direction.DENSE_TO_PAGED)


def staged(dense_on_device=False, layout="vllm_hnd", size="blocks", seed=7):
    st = dsc.stub("cnrt")
    paged, dense, slots, fmt = dsc.make_inputs(layout, size, seed)
    case = dsc.stage(st, "cnrt", layout, paged, dense, slots, fmt, dense_on_device)
    st.reset()
    return st, case


NO_RUNTIME = """
    from kvx._native import ffi, lib
    print(lib.kvx_backend_compiled(33), lib.kvx_backend_available(33))
    print(ffi.string(lib.kvx_last_error()).decode())
"""


def test_unavailable_without_runtime_says_why():
    r = dsc.run_python(NO_RUNTIME, {"LD_LIBRARY_PATH": ""})
    assert r.returncode == 0, r.stderr
    flags, reason = r.stdout.splitlines()[:2]
    assert flags == "1 0"
    assert "libcnrt.so" in reason and "cnrt" in reason


def test_loads_runtime_from_library_path():
    path = dsc.build_stub("cnrt")
    r = dsc.run_python(NO_RUNTIME, {"LD_LIBRARY_PATH": str(path.parent)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1 1"


VARIANT = """
    import json, device_stub_cases as dsc
    defines = tuple(filter(None, "{defines}".split(",")))
    dsc._loaded["cnrt"] = st = dsc.Stub("cnrt", dsc.build_stub("cnrt", defines))
    out = {{}}
    for layout in ("vllm_nhd", "vllm_hnd"):
        for dense_on_device in (False, True):
            for direction in ("store", "load"):
                case = dsc.check_against_reference("cnrt", layout, "blocks", direction, dense_on_device)
                key = "-".join([layout, "device" if dense_on_device else "host", direction])
                out[key] = {{n: st.calls(n) for n in ("cnrtMemcpyAsync_V3", "cnrtMemcpyAsync_V2", "cnrtMemcpyAsync",
                                                     "cnrtMemcpy2DAsync")}}
                out[key]["expected"] = dsc.expected_copies(case, allow_2d={allow_2d})
                out[key]["copies"] = st.copies()
    print(json.dumps(out))
"""


@pytest.mark.parametrize("defines,used,allow_2d", [
    (["STUB_NO_V3"], "cnrtMemcpyAsync_V2", True),
    (["STUB_NO_V3", "STUB_NO_V2"], "cnrtMemcpyAsync", True),
    (["STUB_NO_2D"], "cnrtMemcpyAsync_V3", False),
])
def test_api_selection(defines, used, allow_2d):
    r = dsc.run_python(VARIANT.format(defines=",".join(defines), allow_2d=allow_2d))
    assert r.returncode == 0, r.stdout + r.stderr
    for key, counts in json.loads(r.stdout.splitlines()[-1]).items():
        assert counts[used] + counts["cnrtMemcpy2DAsync"] == counts["expected"] == counts["copies"], key
        for other in ("cnrtMemcpyAsync_V3", "cnrtMemcpyAsync_V2", "cnrtMemcpyAsync"):
            if other != used:
                assert counts[other] == 0, (key, other)
        if not allow_2d:
            assert counts["cnrtMemcpy2DAsync"] == 0
        elif "hnd" in key:
            assert counts["cnrtMemcpy2DAsync"] > 0, key


@pytest.mark.parametrize("function,layout", [
    ("cnrtPointerGetAttributes", "vllm_nhd"),
    ("cnrtMemcpyAsync_V3", "vllm_nhd"),
    ("cnrtMemcpy2DAsync", "vllm_hnd"),
])
@pytest.mark.parametrize("code", [100006, 632015, 100050])
def test_error_codes_map_to_device_error(function, layout, code):
    st, case = staged(layout=layout)
    st.inject(function, code)
    rc = case.run(STORE)
    msg = dsc.last_error()
    assert rc == klib.KVX_ERR_DEVICE, msg
    assert function in msg and str(code) in msg
    assert case.synchronize() == 0
    assert st.errors() == (0, "")
    case.release()


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
    st, case = staged(dense_on_device=True)
    cap = case.paged_desc.num_blocks * case.paged_desc.block_size
    case.slots[-1] = cap + 7
    assert case.run(LOAD) == klib.KVX_ERR_INVALID_ARGUMENT
    assert f"slot_mapping[{case.slots.numel() - 1}]" in dsc.last_error()
    assert st.calls("cnrtMemcpyAsync_V3") == st.calls("cnrtMemcpy2DAsync") == 0
    assert case.synchronize() == 0 and st.copies() == 0
    case.release()


def test_slot_mapping_in_device_memory_is_rejected():
    st, case = staged()
    dev = st.alloc(case.slots.numel() * 8)
    st.memcpy(dev, case.slots.data_ptr(), case.slots.numel() * 8)
    rc = klib.kvx_transfer(case.paged_desc, case.dense_desc, kffi.cast("int64_t *", dev), STORE, case.stream)
    assert rc == klib.KVX_ERR_INVALID_ARGUMENT and "slot_mapping" in dsc.last_error()
    st.free(dev)
    case.release()


def test_wrong_device_is_rejected():
    st, case = staged()
    case.stream.device_index = 1
    assert case.run(STORE) == klib.KVX_ERR_INVALID_ARGUMENT
    assert "MLU 1" in dsc.last_error() and "MLU 0" in dsc.last_error()
    case.release()
