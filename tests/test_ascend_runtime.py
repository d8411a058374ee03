"""The Ascend backend's runtime handling, on the stub AscendCL (how the runtime is found:
test_device_runtimes.py; the host-staged codec: test_staged_codec.py): which copy API is picked
(batch V2, batch, loop; fallback when the chip lacks batch copies), error mapping by injected
failures, host-side slot checks, device selection, and the lifetime of the batch descriptor
arrays the runtime reads asynchronously."""

import functools
import json
import os

import device_stub_cases as dsc
import pytest
import torch
from kvx._native import lib as klib

pytestmark = dsc.needs_compiler("ascend")

STORE, LOAD = dsc.STORE, dsc.LOAD
staged = functools.partial(dsc.staged_transfer, "ascend")  # (dense_on_device, layout, size, seed)


# ---------------------------------------------------------------- API selection

VARIANT = """
    import json, device_stub_cases as dsc
    defines = tuple(filter(None, "{defines}".split(",")))
    dsc._loaded["ascend"] = st = dsc.Stub("ascend", dsc.build_stub("ascend", defines))
    out = {{}}
    for dense_on_device in (False, True):
        for direction in ("store", "load"):
            case = dsc.check_against_reference("ascend", "{layout}", "blocks", direction,
                                               dense_on_device)
            key = ("device" if dense_on_device else "host") + "-" + direction
            out[key] = {{n: st.calls(n) for n in ("aclrtMemcpyBatchAsyncV2",
                                                 "aclrtMemcpyBatchAsync", "aclrtMemcpyAsync",
                                                 "aclrtMemcpy2dAsync")}}
            # 2D copies are host <-> device only (the AscendCL reference)
            out[key]["expected"] = dsc.expected_copies(case,
                                                       allow_2d={allow_2d} and not dense_on_device)
            out[key]["copies"] = st.copies()
    print(json.dumps(out))
"""


def run_variant(defines, layout="vllm_nhd"):
    allow_2d = "STUB_NO_2D" not in defines
    r = dsc.run_python(VARIANT.format(defines=",".join(defines), layout=layout, allow_2d=allow_2d))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("layout", ["vllm_nhd", "flashinfer_hnd"])
def test_batch_v1_when_v2_missing(layout):
    """flashinfer_hnd without aclrtMemcpy2dAsync: split rows go through the batch, one entry per
    (token, head)."""
    out = run_variant(["STUB_NO_BATCH_V2", "STUB_NO_2D"], layout)
    for key in ("host-store", "host-load"):
        assert out[key]["aclrtMemcpyBatchAsync"] == 1 and out[key]["aclrtMemcpyAsync"] == 0
        assert out[key]["copies"] == out[key]["expected"]
    for key in ("device-store", "device-load"):
        assert out[key]["aclrtMemcpyBatchAsync"] == 0
        assert out[key]["aclrtMemcpyAsync"] == out[key]["expected"]


def test_loop_when_runtime_has_no_batch_api():
    out = run_variant(["STUB_NO_BATCH"])
    for key, counts in out.items():
        assert counts["aclrtMemcpyAsync"] == counts["expected"] == counts["copies"], key


def test_hnd_uses_2d_copies_between_host_and_device():
    """Device <-> device goes as 1D copies: aclrtMemcpy2dAsync is documented (and, on the stub,
    accepted) between host and device only (test_runtime_rules.py covers the refusals)."""
    out = run_variant([], "vllm_hnd")
    for key, counts in out.items():
        assert counts["copies"] == counts["expected"], key
        assert counts["aclrtMemcpyBatchAsyncV2"] == 0, key
        assert counts["aclrtMemcpy2dAsync"] + counts["aclrtMemcpyAsync"] == counts["expected"], key
        assert (counts["aclrtMemcpy2dAsync"] > 0) == key.startswith("host"), key


FEATURE_NOT_SUPPORTED = """
    import json, device_stub_cases as dsc
    st = dsc.stub("ascend")
    # a 310P: the symbol exists, the feature does not
    inject = lambda st: st.inject("aclrtMemcpyBatchAsyncV2", 207000)
    first = dsc.check_against_reference("ascend", "vllm_nhd", "blocks", "store", False,
                                        before_run=inject)
    a = {n: st.calls(n) for n in ("aclrtMemcpyBatchAsyncV2", "aclrtMemcpyAsync")}
    second = dsc.check_against_reference("ascend", "vllm_nhd", "blocks", "load", False)
    b = {n: st.calls(n) for n in ("aclrtMemcpyBatchAsyncV2", "aclrtMemcpyAsync")}
    print(json.dumps([a, b, dsc.expected_copies(first, False), dsc.expected_copies(second, False)]))
"""


def test_falls_back_to_loop_when_chip_lacks_batch_copies():
    r = dsc.run_python(FEATURE_NOT_SUPPORTED)
    assert r.returncode == 0, r.stdout + r.stderr
    first, second, n1, n2 = json.loads(r.stdout.splitlines()[-1])
    assert first == {
        "aclrtMemcpyBatchAsyncV2": 1,
        "aclrtMemcpyAsync": n1,
    }  # tried once, then looped
    assert second == {"aclrtMemcpyBatchAsyncV2": 0, "aclrtMemcpyAsync": n2}  # remembered


# ---------------------------------------------------------------- errors


# (a failed aclrtPointerGetAttributes means host memory: test_runtime_rules.py)
@pytest.mark.parametrize(
    "function,dense_on_device",
    [
        ("aclrtMemcpyBatchAsyncV2", False),
        ("aclrtRecordEvent", False),
        ("aclrtMemcpyAsync", True),
    ],
)
@pytest.mark.parametrize("code", [107000, 507000, 100000])
def test_error_codes_map_to_device_error(function, dense_on_device, code):
    dsc.check_injected_error(*staged(dense_on_device), function, code, STORE)


def test_async_error_reported_by_synchronize():
    st, case = staged()
    st.inject_async("aclrtMemcpyBatchAsyncV2", 507000)
    assert case.run(STORE) == 0, dsc.last_error()
    assert case.synchronize() == klib.KVX_ERR_DEVICE
    msg = dsc.last_error()
    assert "aclrtSynchronizeStream" in msg and "507000" in msg
    assert case.synchronize() == 0  # reported once
    case.release()


FRESH_THREADS = """
    import json, threading, device_stub_cases as dsc
    st, case = dsc.staged_transfer("ascend")
    results = []

    def work(inject):
        if inject:
            st.inject("aclrtSetDevice", 107002)
        rc = case.run(dsc.STORE)
        results.append((rc, dsc.last_error(), st.calls("aclrtSetDevice")))

    for inject in (True, False, False):
        t = threading.Thread(target=work, args=(inject,))
        t.start()
        t.join()
    assert case.synchronize() == 0 and st.errors() == (0, "")
    print(json.dumps(results))
"""


def test_set_device_on_fresh_threads():
    """A thread that never chose an NPU gets the stream's NPU from kvx (the stub refuses work
    from a thread without a current device); a failing aclrtSetDevice maps to KVX_ERR_DEVICE.
    aclrtSetDevice takes a reference on the NPU: kvx takes one per NPU and process (the first
    that succeeds) and later makes the context it made current again."""
    r = dsc.run_python(FRESH_THREADS)
    assert r.returncode == 0, r.stdout + r.stderr
    (rc1, msg1, _), (rc2, msg2, calls2), (rc3, msg3, calls3) = json.loads(r.stdout.splitlines()[-1])
    assert rc1 == klib.KVX_ERR_DEVICE and "aclrtSetDevice" in msg1 and "107002" in msg1
    assert rc2 == 0 and rc3 == 0, (msg2, msg3)
    assert calls2 == calls3 == 2


def test_out_of_range_slot_rejected_before_anything_is_enqueued():
    dsc.check_out_of_range_slot_rejected(
        "ascend",
        5,
        (
            "aclrtMemcpyAsync",
            "aclrtMemcpyBatchAsyncV2",
            "aclrtMemcpyBatchAsync",
            "aclrtRecordEvent",
        ),
    )


def test_slot_mapping_in_device_memory_is_rejected():
    st = dsc.check_slot_mapping_in_device_memory_rejected("ascend")
    assert st.calls("aclrtMemcpyBatchAsyncV2") == 0


def test_paged_cache_in_host_memory_is_rejected():
    st = dsc.stub("ascend")
    paged, dense, slots, fmt = dsc.make_inputs("vllm_nhd", "small", 3)
    case = dsc.stage(st, "ascend", "vllm_nhd", paged, dense, slots, fmt, False)
    from kvx._native import ffi as kffi

    case.bases[0] = kffi.cast("void *", paged[0].data_ptr())  # layer 0 back on the host
    assert case.run(STORE) == klib.KVX_ERR_INVALID_ARGUMENT
    assert "paged->bases[0]" in dsc.last_error() and "NPU memory" in dsc.last_error()
    case.release()


# ---------------------------------------------------------------- descriptor lifetime

LIFETIME = """
    import gc, json, torch, device_stub_cases as dsc, transfer_cases as tc, kvx
    st = dsc.stub("ascend")
    out = []
    for direction in ("store", "load"):
        paged, dense, slots, fmt = dsc.make_inputs("vllm_hnd", "blocks", 4)  # hundreds of copies
        kp, kd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
        rp, rd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
        kvx.reference.transfer(rp, rd, slots, direction=direction, layout="vllm_hnd",
                               dense_format=fmt)
        case = dsc.stage(st, "ascend", "vllm_hnd", kp, kd, slots, fmt, False)
        before = tc.clone_keep_layout(kd)
        st.reset()
        st.pause(case.handle, True)  # the stream holds the batch until resumed
        d = 0 if direction == "store" else 1
        assert case.run(d) == 0, dsc.last_error()
        returned_before_copies = st.copies() == 0 and tc.bits_equal(kd, before)
        # churn the heap: anything freed by now gets reused and (MALLOC_PERTURB_) overwritten
        junk = [bytearray(b"\\x5a" * n) for n in range(1000, 200000, 997)]
        del junk; gc.collect()
        for _ in range(3):
            other = dsc.stage(st, "ascend", "vllm_nhd",
                              *dsc.make_inputs("vllm_nhd", "small", 9)[0:3], "KV_2LTD", False,
                              handle=st.stream())
            assert other.run(0) == 0 and other.synchronize() == 0
            other.release()
        st.pause(case.handle, False)
        assert case.synchronize() == 0
        case.download(); case.release()
        out.append(dict(returned_before_copies=returned_before_copies, errors=st.errors()[0],
                        dense_ok=tc.bits_equal(tc.whole(kd), tc.whole(rd)),
                        paged_ok=tc.paged_equal(kp, rp)))
    print(json.dumps(out))
"""

PERTURB = {
    "MALLOC_PERTURB_": "165",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.perturb=165",
}
# Under a preloaded ASan runtime, malloc is ASan's (freed memory is quarantined, not poisoned with
# MALLOC_PERTURB_'s byte), so a read of freed memory by the uninstrumented stub goes unseen.
glibc_malloc = pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="relies on glibc malloc (MALLOC_PERTURB_); ASan's allocator is preloaded",
)


@glibc_malloc
def test_batch_descriptors_outlive_the_call():
    """The stub reads the batch arrays when the (paused) stream reaches the copy, after
    kvx_transfer returned and after the heap was churned with freed memory poisoned: kvx must
    still own them then."""
    r = dsc.run_python(LIFETIME, PERTURB)
    assert r.returncode == 0, r.stdout + r.stderr
    for result in json.loads(r.stdout.splitlines()[-1]):
        assert result == {
            "returned_before_copies": True,
            "errors": 0,
            "dense_ok": True,
            "paged_ok": True,
        }


EARLY_FREE = """
    import cffi, device_stub_cases as dsc
    st = dsc.stub("ascend")
    ffi = cffi.FFI()
    ffi.cdef("int aclrtSetDevice(int); int aclrtMemcpyBatchAsyncV2(void **, size_t *, void **,"
             " size_t *, size_t, void *, size_t *, size_t, void *);")
    acl = ffi.dlopen(str(st.path))
    acl.aclrtSetDevice(0)
    n = 200
    dev = st.alloc(64 * n)
    host = ffi.new("char[]", 64 * n)
    s = st.stream()
    st.pause(s, True)
    arrays = dict(dsts=ffi.new("void *[]", [ffi.cast("void *", dev + 64 * i) for i in range(n)]),
                  srcs=ffi.new("void *[]", [host + 64 * i for i in range(n)]),
                  sizes=ffi.new("size_t[]", [64] * n), maxs=ffi.new("size_t[]", [64] * n),
                  attr=ffi.new("uint32_t[]", [0, 1, 0, 0, 0, 0, 0, 0]),
                  index=ffi.new("size_t[]", [0]))
    a = arrays
    assert acl.aclrtMemcpyBatchAsyncV2(a["dsts"], a["maxs"], a["srcs"], a["sizes"], n, a["attr"],
                                       a["index"], 1, ffi.cast("void *", s)) == 0
    del a, arrays  # freed while the stream still has to read them: the bug the test above rules out
    junk = [bytearray(b"\\x5a" * k) for k in range(1000, 200000, 997)]
    st.pause(s, False)
    st.sync(s)
    print("stub errors:", st.errors()[0])
"""


@glibc_malloc
def test_lifetime_check_can_fail():
    """Negative control for the test above: a batch whose arrays are freed before the stream runs
    is caught (stub error or crash)."""
    r = dsc.run_python(EARLY_FREE, PERTURB)
    caught = r.returncode != 0 or "stub errors: 0" not in r.stdout
    assert caught, r.stdout + r.stderr


# ---------------------------------------------------------------- Python layer


def test_python_layer_passes_a_host_slot_mapping():
    from kvx.transfer import _slot_mapping

    slots = torch.arange(8, dtype=torch.int64)[::2]
    info = _slot_mapping(slots, (klib.KVX_DEVICE_ASCEND, 0))
    assert info.device_type == klib.KVX_DEVICE_CPU and info.strides == (1,)
    info = _slot_mapping(slots.numpy(), (klib.KVX_DEVICE_CNRT, 1))
    assert info.device_type == klib.KVX_DEVICE_CPU
