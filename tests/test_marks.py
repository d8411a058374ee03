"""Stream marks (kvx_mark_record, kvx_mark_passed, kvx_mark_release; kvx.mark): on the CPU, at
the C ABI and through kvx.mark, and on the Ascend and CNRT stub runtimes, whose streams the
tests pause and run task by task (never a sleep), so that "not passed yet" is seen for certain.
"""

from __future__ import annotations

import threading

import device_stub_cases as dsc
import kvx
import numpy as np
import pytest
from kvx._native import ffi, lib

BACKENDS = ["ascend", "cnrt"]
RUNTIME = {"ascend": ("AscendCL", "aclrtCreateEvent"), "cnrt": ("CNRT", "cnrtNotifierCreate")}
RECORD = {"ascend": "aclrtRecordEvent", "cnrt": "cnrtPlaceNotifier"}
QUERY = {"ascend": "aclrtQueryEventStatus", "cnrt": "cnrtQueryNotifier"}


def _record(stream) -> tuple[int, object, str]:
    out = ffi.new("kvx_mark **")
    rc = lib.kvx_mark_record(stream, out)
    return rc, out[0] if rc == 0 else None, ffi.string(lib.kvx_last_error()).decode()


def _stream(device_type: int, index: int = 0, handle: int = 0):
    s = ffi.new("kvx_stream *")
    s.device_type, s.device_index, s.handle = device_type, index, ffi.cast("void *", handle)
    return s


# ---------------------------------------------------------------- the CPU, at the C ABI


@pytest.mark.parametrize("on", ["NULL", "cpu stream"])
def test_cpu_mark_has_passed_when_recorded(on) -> None:
    stream = ffi.NULL if on == "NULL" else _stream(lib.KVX_DEVICE_CPU)
    rc, mark, msg = _record(stream)
    assert rc == lib.KVX_OK, msg
    assert lib.kvx_mark_passed(mark) == 1
    assert lib.kvx_mark_passed(mark) == 1  # and stays so
    assert lib.kvx_mark_release(mark) == lib.KVX_OK


def test_cpu_mark_is_passed_after_work_the_call_did() -> None:
    """The CPU's work is done when its call returns: a mark recorded after a copy passes, and the
    bytes are there."""
    src = np.arange(4096, dtype=np.uint8)
    dst = np.zeros_like(src)
    kvx.copy_batch([src.ctypes.data], [dst.ctypes.data], [src.nbytes])
    m = kvx.mark()
    assert m.passed() and np.array_equal(dst, src)
    m.release()


def test_argument_errors_name_the_argument() -> None:
    assert lib.kvx_mark_record(ffi.NULL, ffi.NULL) == lib.KVX_ERR_INVALID_ARGUMENT
    assert ffi.string(lib.kvx_last_error()).decode() == (
        "mark: expected where to store the new mark, got NULL"
    )
    assert lib.kvx_mark_passed(ffi.NULL) == lib.KVX_ERR_INVALID_ARGUMENT
    assert ffi.string(lib.kvx_last_error()).decode() == (
        "mark: expected a mark from kvx_mark_record, got NULL"
    )
    assert lib.kvx_mark_release(ffi.NULL) == lib.KVX_OK


def test_backend_not_compiled_in_is_not_available_and_writes_nothing() -> None:
    missing = next(
        t for t in (lib.KVX_DEVICE_CUDA, lib.KVX_DEVICE_HIP) if not lib.kvx_backend_compiled(t)
    )
    out = ffi.new("kvx_mark **")
    out[0] = ffi.cast("kvx_mark *", 1)
    assert lib.kvx_mark_record(_stream(missing), out) == lib.KVX_ERR_NOT_AVAILABLE
    assert "stream->device_type" in ffi.string(lib.kvx_last_error()).decode()
    assert int(ffi.cast("uintptr_t", out[0])) == 1


# ---------------------------------------------------------------- kvx.mark on the CPU


def test_python_mark_on_the_cpu() -> None:
    for device, stream in ((None, None), ("cpu", 0), ("cpu", 12345)):  # no streams on the CPU
        m = kvx.mark(device, stream)
        assert m.stream == (lib.KVX_DEVICE_CPU, 0, 0)
        assert m.passed() is True
        m.release()
        m.release()  # a second release does nothing
        with pytest.raises(kvx.InvalidArgumentError, match="mark: released already"):
            m.passed()
    assert isinstance(kvx.mark(), kvx.Mark)  # left to the garbage collector


@pytest.mark.parametrize(
    "device,stream,error",
    [
        (42, None, "device: expected None, a device name"),
        ("cuda:x", None, "device: expected 'type' or 'type:index'"),
    ],
)
def test_python_mark_refuses_bad_devices(device, stream, error) -> None:
    with pytest.raises(kvx.InvalidArgumentError, match=error):
        kvx.mark(device, stream)


def test_python_mark_on_a_backend_that_cannot_run() -> None:
    name = next(
        n
        for n in ("cuda", "hip")
        if not lib.kvx_backend_compiled(getattr(lib, f"KVX_DEVICE_{n.upper()}"))
    )
    with pytest.raises(kvx.NotAvailableError):
        kvx.mark(f"{name}:0", 0)


# ---------------------------------------------------------------- Ascend and CNRT stubs


class StubStream:
    """A stub runtime's stream of device `device` as a kvx_stream."""

    def __init__(self, backend: str, device: int = 0):
        self.backend = backend
        self.st = dsc.stub(backend)
        self.st.reset()
        self.handle = self.st.stream(device)
        self.stream = _stream(dsc.DEVICE_TYPE[backend], device, self.handle)

    def mark(self):
        rc, mark, msg = _record(self.stream)
        assert rc == lib.KVX_OK, msg
        return mark

    def close(self) -> None:
        self.st.pause(self.handle, False)
        assert lib.kvx_synchronize(self.stream) == lib.KVX_OK
        assert self.st.errors() == (0, ""), self.st.errors()


@pytest.fixture(params=BACKENDS)
def dev(request):
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    d = StubStream(request.param)
    yield d
    d.close()


def test_stub_mark_passes_only_once_the_stream_got_there(dev) -> None:
    dev.st.pause(dev.handle, True)
    mark = dev.mark()
    assert lib.kvx_mark_passed(mark) == 0
    assert lib.kvx_mark_passed(mark) == 0
    dev.st.pause(dev.handle, False)
    assert lib.kvx_synchronize(dev.stream) == lib.KVX_OK
    assert lib.kvx_mark_passed(mark) == 1
    # passed stays passed: neither asking again nor releasing asks the runtime
    query = QUERY[dev.backend]
    asked = dev.st.calls(query)
    assert lib.kvx_mark_passed(mark) == 1
    assert lib.kvx_mark_release(mark) == lib.KVX_OK
    assert dev.st.calls(query) == asked


def test_stub_marks_pass_in_stream_order_around_the_work(dev) -> None:
    """mark, a copy, mark: with the stream run one task at a time, the first mark passes while
    the copy has not run and the second has not passed; the second passes with the copy done."""
    src = np.arange(1024, dtype=np.uint8)
    zeros = np.zeros_like(src)
    dst = dev.st.alloc(src.nbytes)
    dev.st.memcpy(dst, zeros.ctypes.data, src.nbytes)
    dev.st.pause(dev.handle, True)
    first = dev.mark()
    srcs, dsts = ffi.new("uint64_t[]", [src.ctypes.data]), ffi.new("uint64_t[]", [dst])
    rc = lib.kvx_copy_batch(
        ffi.cast("const void *const *", srcs),
        ffi.cast("void *const *", dsts),
        ffi.new("int64_t[]", [src.nbytes]),
        1,
        dev.stream,
    )
    assert rc == lib.KVX_OK, ffi.string(lib.kvx_last_error())
    second = dev.mark()
    assert [lib.kvx_mark_passed(m) for m in (first, second)] == [0, 0]
    assert dev.st.step(dev.handle, 1) == 1  # the first mark's event, nothing else
    assert [lib.kvx_mark_passed(m) for m in (first, second)] == [1, 0]
    back = np.empty_like(src)
    dev.st.memcpy(back.ctypes.data, dst, src.nbytes)
    assert not back.any()  # the copy has not run
    dev.st.pause(dev.handle, False)
    assert lib.kvx_synchronize(dev.stream) == lib.KVX_OK
    assert [lib.kvx_mark_passed(m) for m in (first, second)] == [1, 1]
    dev.st.memcpy(back.ctypes.data, dst, src.nbytes)
    assert np.array_equal(back, src)
    for m in (first, second):
        assert lib.kvx_mark_release(m) == lib.KVX_OK
    dev.st.free(dst)


def test_stub_marks_of_other_streams_do_not_wait_for_a_paused_one(dev) -> None:
    other = dev.st.stream(0)
    dev.st.pause(dev.handle, True)
    waiting = dev.mark()
    rc, free_running, msg = _record(_stream(dsc.DEVICE_TYPE[dev.backend], 0, other))
    assert rc == lib.KVX_OK, msg
    assert dev.st.sync(other) == 0
    assert lib.kvx_mark_passed(free_running) == 1
    assert lib.kvx_mark_passed(waiting) == 0
    for m in (free_running, waiting):
        assert lib.kvx_mark_release(m) == lib.KVX_OK


def test_stub_mark_is_an_event_of_the_streams_device(dev) -> None:
    """Recorded on device 1's stream from a thread on device 0 (the stubs refuse an event of
    another device); the runtime's event calls are the ones counted."""
    one = StubStream(dev.backend, device=1)
    record = RECORD[dev.backend]
    before = dev.st.calls(record)
    mark = one.mark()
    assert dev.st.calls(record) == before + 1
    assert one.st.sync(one.handle) == 0
    assert lib.kvx_mark_passed(mark) == 1
    assert lib.kvx_mark_release(mark) == lib.KVX_OK
    one.close()


def test_stub_released_events_are_reused_once_passed(dev) -> None:
    """A released mark's event goes back to the pool: marking again creates no event. One
    released before its stream got there is neither destroyed nor reused while pending (the
    AscendCL stub reports an event destroyed while pending)."""
    create = RUNTIME[dev.backend][1]
    m = dev.mark()
    assert dev.st.sync(dev.handle) == 0
    assert lib.kvx_mark_release(m) == lib.KVX_OK
    created = dev.st.calls(create)
    again = dev.mark()
    assert dev.st.calls(create) == created  # the spare event
    dev.st.pause(dev.handle, True)
    pending = dev.mark()
    assert lib.kvx_mark_release(pending) == lib.KVX_OK  # before the stream got there
    fresh = dev.mark()
    dev.st.pause(dev.handle, False)
    assert lib.kvx_synchronize(dev.stream) == lib.KVX_OK
    assert lib.kvx_mark_passed(fresh) == 1 and lib.kvx_mark_passed(again) == 1
    for m in (again, fresh):
        assert lib.kvx_mark_release(m) == lib.KVX_OK
    assert dev.st.errors() == (0, "")


def test_stub_failures_name_the_vendor_call(dev) -> None:
    runtime, record = RUNTIME[dev.backend][0], RECORD[dev.backend]
    query = QUERY[dev.backend]
    where = {"ascend": "stream", "cnrt": "queue"}[dev.backend]
    dev.st.inject(record, 507000)
    rc, mark, msg = _record(dev.stream)
    assert (rc, mark) == (lib.KVX_ERR_DEVICE, None)
    assert (
        msg == f"{record} failed with {runtime} error 507000 while recording a mark on the {where}"
    )
    mark = dev.mark()  # the event whose record failed went back to the pool
    dev.st.inject(query, 507899)
    assert lib.kvx_mark_passed(mark) == lib.KVX_ERR_DEVICE
    assert ffi.string(lib.kvx_last_error()).decode() == (
        f"{query} failed with {runtime} error 507899 while asking whether a mark passed"
    )
    assert dev.st.sync(dev.handle) == 0
    assert lib.kvx_mark_passed(mark) == 1
    assert lib.kvx_mark_release(mark) == lib.KVX_OK


def test_stub_marks_from_many_threads(dev) -> None:
    """Threads record, ask about and release marks on one paused stream at once: none passes
    before the stream runs, every one after."""
    dev.st.pause(dev.handle, True)
    marks: list[list] = [[] for _ in range(4)]
    seen: list[int] = []

    def work(mine: list) -> None:
        for _ in range(25):
            mark = dev.mark()
            seen.append(lib.kvx_mark_passed(mark))
            mine.append(mark)

    threads = [threading.Thread(target=work, args=(m,)) for m in marks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [0] * 100
    dev.st.pause(dev.handle, False)
    assert lib.kvx_synchronize(dev.stream) == lib.KVX_OK
    assert all(lib.kvx_mark_passed(m) == 1 for mine in marks for m in mine)
    for mine in marks:
        for m in mine:
            assert lib.kvx_mark_release(m) == lib.KVX_OK


@pytest.mark.parametrize(
    "backend,device",
    [("ascend", "npu:0"), ("ascend", "ascend"), ("cnrt", "mlu:0"), ("cnrt", "cnrt:0")],
)
def test_python_mark_on_a_raw_stub_stream(backend, device) -> None:
    """kvx.mark(device, handle): a raw stream handle, as LMCache passes it, needs no torch."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    d = StubStream(backend)
    d.st.pause(d.handle, True)
    m = kvx.mark(device, d.handle)
    assert m.stream == (dsc.DEVICE_TYPE[backend], 0, d.handle)
    assert m.passed() is False
    d.st.pause(d.handle, False)
    assert d.st.sync(d.handle) == 0
    assert m.passed() is True
    m.release()
    d.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_mark_refuses_a_stream_that_is_no_handle(backend) -> None:
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    dsc.stub(backend)
    with pytest.raises(kvx.InvalidArgumentError, match="stream: expected None, a raw"):
        kvx.mark(f"{backend}:0", "0")
    with pytest.raises(kvx.InvalidArgumentError, match="stream: expected a handle >= 0"):
        kvx.mark(f"{backend}:0", -1)


NO_NOTIFIER = """
    import device_stub_cases as dsc, kvx
    from kvx._native import ffi, lib
    dsc._loaded["cnrt"] = dsc.Stub("cnrt", dsc.build_stub("cnrt", ("STUB_NO_NOTIFIER",)))
    st = dsc.stub("cnrt")
    try:
        kvx.mark("cnrt:0", st.stream(0))
    except kvx.UnsupportedError as e:
        print(e)
"""


def test_cnrt_without_notifiers_cannot_mark() -> None:
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    r = dsc.run_python(NO_NOTIFIER)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == (
        "mark_record: the loaded CNRT runtime lacks cnrtNotifierCreate or another of its event "
        "functions, so the cnrt backend cannot mark a queue [KVX_ERR_UNSUPPORTED]"
    )
