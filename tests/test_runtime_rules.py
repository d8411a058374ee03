"""The vendor-runtime rules the copy engine of the runtime-loaded backends (libkvx/src/runtime/)
must follow, each enforced by the stub runtimes the way the real runtime enforces it
(tests/stubs/acl_stub.c, cnrt_stub.c), so that breaking a rule in libkvx fails here:

- aclrtMemcpy2dAsync copies between host and device only and calls any other kind an invalid
  parameter; a chip without 2D copies refuses those too. A refused 2D copy falls back per run,
  never replays what is already queued.
- On-chip device-to-device copies need 64-byte-aligned endpoints.
- An event belongs to the device it was created on and is recorded on streams of that device.
- aclrtSetDevice is reference-counted: libkvx puts back the caller's own context.
- kvx_synchronize without a stream handle waits for the default stream of stream->device_index.
- aclrtPointerGetAttributes knows AscendCL allocations only: a failed query is host memory.
"""

import json
import threading

import cffi
import device_stub_cases as dsc
import pytest
from kvx._native import ffi as kffi
from kvx._native import lib as klib

pytestmark = [dsc.needs_compiler("ascend"), dsc.needs_compiler("cnrt")]

STORE, LOAD = dsc.STORE, dsc.LOAD

ACL_CDEF = """
int aclrtSetDevice(int);
int aclrtGetDevice(int *);
int aclrtCreateContext(void **, int);
int aclrtGetCurrentContext(void **);
int aclrtPointerGetAttributes(const void *, void *);
long stub_acl_device_refs(int);
long stub_default_sync_count(int);
"""
CNRT_CDEF = """
int cnrtSetDevice(int);
int cnrtGetDevice(int *);
long stub_default_sync_count(int);
"""


def runtime(backend):
    """The loaded stub with the runtime calls these tests make themselves."""
    st = dsc.stub(backend)
    ffi = cffi.FFI()
    ffi.cdef(ACL_CDEF if backend == "ascend" else CNRT_CDEF)
    return st, ffi, ffi.dlopen(str(st.path))


class OnDevice:
    """A stub whose uploads and streams are on `device` (dsc.stage uses device 0)."""

    def __init__(self, st, device):
        self._st, self._device = st, device

    def __getattr__(self, name):
        return getattr(self._st, name)

    def upload(self, t):
        from kvx._tensors import describe

        start, end = describe(t, "t").storage
        dev = self._st.alloc(end - start, self._device)
        self._st.memcpy(dev, start, end - start)
        return dev

    def stream(self):
        return self._st.stream(self._device)


def transfer_on(backend, device, dense_on_device=False, seed=3):
    """A vllm_nhd transfer staged on `device`, its stream's device_index set."""
    st = dsc.stub(backend)
    paged, dense, slots, fmt = dsc.make_inputs("vllm_nhd", "blocks", seed)
    case = dsc.stage(
        OnDevice(st, device), backend, "vllm_nhd", paged, dense, slots, fmt, dense_on_device
    )
    case.stream.device_index = device
    return case


def in_thread(fn):
    """Runs fn() on a fresh thread (no current device or context) and returns its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    assert out, "the thread failed"
    return out[0]


# ---------------------------------------------------------------- 2D copies refused


DEVICE_2D = """
    import json, device_stub_cases as dsc
    st = dsc.stub("ascend")
    out = []
    for direction in ("store", "load", "store"):
        case = dsc.check_against_reference("ascend", "vllm_hnd", "blocks", direction, True)
        out.append([st.calls("aclrtMemcpy2dAsync"), st.copies(),
                    dsc.expected_copies(case, allow_2d=False)])
    print(json.dumps(out))
"""


def test_device_to_device_2d_refusal_never_replays_the_plan():
    """A device-to-device 2D copy is ACL_ERROR_INVALID_PARAM: the transfer still succeeds,
    byte-exact (checked inside), each piece copied once (no replay of queued copies), and later
    transfers do not ask again."""
    r = dsc.run_python(DEVICE_2D)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout.splitlines()[-1])
    for _calls_2d, copies, expected in results:
        assert copies == expected
    assert sum(calls for calls, _, _ in results) <= 1
    assert results[-1][0] == 0


HOST_2D = """
    import json, device_stub_cases as dsc
    dsc._loaded["ascend"] = st = dsc.Stub("ascend",
                                          dsc.build_stub("ascend", ("STUB_2D_HOST_REFUSED",)))
    out = []
    for direction in ("store", "load", "store", "load"):
        case = dsc.check_against_reference("ascend", "vllm_hnd", "blocks", direction, False)
        out.append([st.calls("aclrtMemcpy2dAsync"), st.copies(),
                    dsc.expected_copies(case, allow_2d=False)])
    print(json.dumps(out))
"""


def test_host_side_2d_refusal_falls_back_per_run():
    """A chip that refuses host <-> device 2D copies (ACL_ERROR_INVALID_PARAM): the refused run
    goes as 1D copies and the rest of the plan follows, nothing queued twice; each direction
    asks once."""
    r = dsc.run_python(HOST_2D)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout.splitlines()[-1])
    for _calls_2d, copies, expected in results:
        assert copies == expected
    assert [calls for calls, _, _ in results] == [1, 1, 0, 0]


# ---------------------------------------------------------------- on-chip alignment


@pytest.mark.parametrize("layout", ["vllm_nhd", "vllm_hnd"])
@pytest.mark.parametrize("direction", ["store", "load"])
def test_unaligned_device_to_device_copies_are_not_submitted_on_chip(layout, direction):
    """Rows of 48 (NHD) or 16 (HND) bytes: most device-to-device pieces are not 64-byte aligned,
    which the runtime refuses on chip. Byte-exact all the same (checked inside), stub clean."""
    st = dsc.stub("ascend")
    dsc.check_against_reference("ascend", layout, "small", direction, True)
    assert st.calls("aclrtMemcpyAsync") > 0


def test_aligned_device_to_device_copies_stay_on_chip():
    st = dsc.stub("ascend")
    case = dsc.check_against_reference("ascend", "vllm_nhd", "blocks", "store", True)
    assert st.calls("aclrtMemcpyAsync") == st.copies() == dsc.expected_copies(case, allow_2d=False)


# ---------------------------------------------------------------- events per device


def test_events_are_recorded_on_streams_of_their_own_device():
    """Batch copies keep their descriptors alive with an event: transfers on NPU 0, NPU 1, NPU 0
    each record one on their stream, which the runtime refuses for an event of another NPU."""
    st = dsc.stub("ascend")
    for device in (0, 1, 0, 1):
        case = transfer_on("ascend", device)
        st.reset()
        assert case.run(STORE) == 0, dsc.last_error()
        assert st.calls("aclrtMemcpyBatchAsyncV2") == 1 and st.calls("aclrtRecordEvent") == 1
        assert case.synchronize() == 0, dsc.last_error()
        case.release()
        assert st.errors() == (0, "")


# ---------------------------------------------------------------- device selection


def test_entering_a_device_puts_back_the_callers_context():
    """A thread working in a context of its own on NPU 0 calls kvx for a stream of NPU 1: after
    each call its context is its own again (not NPU 0's default one), and kvx has not taken an
    aclrtSetDevice reference of NPU 0, nor more than one of NPU 1 however many calls it makes."""
    st, ffi, acl = runtime("ascend")
    # device-to-device copies: no batch, no event, only the device selection at stake
    cases = [transfer_on("ascend", 1, dense_on_device=True, seed=s) for s in (1, 2, 3)]
    refs_before = acl.stub_acl_device_refs(0), acl.stub_acl_device_refs(1)

    def work():
        ctx = ffi.new("void **")
        assert acl.aclrtCreateContext(ctx, 0) == 0
        seen = []
        for case in cases:
            rc = case.run(STORE)
            now = ffi.new("void **")
            assert acl.aclrtGetCurrentContext(now) == 0
            seen.append((rc, dsc.last_error(), now[0] == ctx[0]))
        return seen

    for rc, msg, same_context in in_thread(work):
        assert rc == 0, msg
        assert same_context
    assert acl.stub_acl_device_refs(0) == refs_before[0]
    assert acl.stub_acl_device_refs(1) - refs_before[1] <= 1
    for case in cases:
        assert case.synchronize() == 0
        case.release()
    assert st.errors() == (0, "")


def test_a_thread_on_the_streams_device_is_left_alone():
    """Already on the stream's NPU: no aclrtSetDevice (it would add a reference) and no context
    switch."""
    st, _ffi, acl = runtime("ascend")
    case = transfer_on("ascend", 1, dense_on_device=True)

    def work():
        assert acl.aclrtSetDevice(1) == 0
        refs = acl.stub_acl_device_refs(1)
        st.reset()
        rc = case.run(STORE)
        return rc, dsc.last_error(), acl.stub_acl_device_refs(1) - refs, st.calls("aclrtSetDevice")

    rc, msg, new_refs, set_device_calls = in_thread(work)
    assert rc == 0, msg
    assert new_refs == 0 and set_device_calls == 0
    assert case.synchronize() == 0
    case.release()


@pytest.mark.parametrize("backend", ["ascend", "cnrt"])
@pytest.mark.parametrize("thread_device", [0, None], ids=["thread-on-device-0", "fresh-thread"])
def test_synchronize_without_a_handle_waits_for_that_devices_default_stream(backend, thread_device):
    """kvx_synchronize({device_index 1, handle NULL}) waits for device 1's default stream (the
    stub counts which one), with device 1 current only for the call."""
    _st, ffi, rt = runtime(backend)
    names = {
        "ascend": ("aclrtSetDevice", "aclrtGetDevice"),
        "cnrt": ("cnrtSetDevice", "cnrtGetDevice"),
    }
    set_device, get_device = (getattr(rt, name) for name in names[backend])
    stream = kffi.new("kvx_stream *")
    stream.device_type, stream.device_index, stream.handle = dsc.DEVICE_TYPE[backend], 1, kffi.NULL

    def work():
        if thread_device is not None:
            assert set_device(thread_device) == 0
        before = rt.stub_default_sync_count(0), rt.stub_default_sync_count(1)
        rc = klib.kvx_synchronize(stream)
        after = rt.stub_default_sync_count(0), rt.stub_default_sync_count(1)
        device = ffi.new("int *", -1)
        current = device[0] if get_device(device) == 0 else None
        return rc, dsc.last_error(), after[0] - before[0], after[1] - before[1], current

    rc, msg, synced_0, synced_1, current = in_thread(work)
    assert rc == 0, msg
    assert (synced_0, synced_1) == (0, 1)
    if thread_device is not None:
        assert current == thread_device


# ---------------------------------------------------------------- where memory lives


def test_malloc_memory_is_host_memory_though_the_query_fails():
    """The stub fails aclrtPointerGetAttributes on plain malloc memory (as AscendCL may: it is
    documented for its own allocations): the dense buffer and slot mapping (torch CPU tensors)
    are host memory all the same."""
    st, ffi, acl = runtime("ascend")
    buf = ffi.new("char[]", 4096)
    attr = ffi.new("char[]", 64)
    assert acl.aclrtPointerGetAttributes(buf, attr) != 0  # the rule the stub enforces
    dsc.check_against_reference("ascend", "vllm_nhd", "blocks", "store", False)
    dsc.check_against_reference("ascend", "vllm_nhd", "blocks", "load", False)
    assert st.calls("aclrtPointerGetAttributes") >= 2


def test_a_failed_query_of_the_paged_cache_reads_as_host_memory():
    st, case = dsc.staged_transfer("ascend")
    st.inject("aclrtPointerGetAttributes", 107000)
    assert case.run(STORE) == klib.KVX_ERR_INVALID_ARGUMENT
    assert "paged->bases[0]" in dsc.last_error() and "NPU memory" in dsc.last_error()
    assert case.synchronize() == 0 and st.copies() == 0
    case.release()
