"""kvx_host_alloc / kvx_host_free (kvx.host_alloc / kvx.host_free): page-aligned host memory,
page-locked through the device runtime on Ascend and CNRT (their stub runtimes, tests/stubs/),
usable as the host end of device copies; every byte writable; frees checked against what was
handed out (another device type's pointer, a second free, an unknown address: refused, memory
left alone); runtime failures and missing runtimes reported with the right status."""

from __future__ import annotations

import ctypes
import mmap
import threading

import device_stub_cases as dsc
import kvx
import numpy as np
import pytest
from kvx._native import ffi, lib

PAGE = mmap.PAGESIZE
BACKENDS = ["ascend", "cnrt"]
HOST_ALLOC = {"ascend": "aclrtMallocHost", "cnrt": "cnrtHostMalloc"}
HOST_FREE = {"ascend": "aclrtFreeHost", "cnrt": "cnrtFreeHost"}


def view(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))


def last_error() -> str:
    return ffi.string(lib.kvx_last_error()).decode()


@pytest.mark.parametrize("nbytes", [1, 100, PAGE, PAGE + 1, 3 << 20])
def test_cpu_memory_is_page_aligned_and_writable(nbytes, rng):
    ptr = kvx.host_alloc(nbytes)
    try:
        assert ptr % PAGE == 0
        data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        view(ptr, nbytes)[:] = data
        assert np.array_equal(view(ptr, nbytes), data)
    finally:
        kvx.host_free(ptr)


def test_cpu_memory_serves_copies(rng):
    src = kvx.host_alloc(8192)
    dst = kvx.host_alloc(8192)
    try:
        data = rng.integers(0, 256, 8192, dtype=np.uint8)
        view(src, 8192)[:] = data
        kvx.copy_batch([src, src + 4096], [dst + 4096, dst], [4096, 4096])
        assert np.array_equal(view(dst, 8192), np.concatenate([data[4096:], data[:4096]]))
    finally:
        kvx.host_free(src)
        kvx.host_free(dst)


def test_many_allocations_freed_in_any_order(rng):
    """Enough to grow the table of allocations several times; each freed once, in random
    order, and a second free of any of them refused."""
    ptrs = [kvx.host_alloc(int(n)) for n in rng.integers(1, 5000, 700)]
    assert len(set(ptrs)) == len(ptrs)
    for i in rng.permutation(len(ptrs)):
        kvx.host_free(ptrs[i])
    for ptr in ptrs[:20]:
        with pytest.raises(kvx.InvalidArgumentError, match="or was freed already"):
            kvx.host_free(ptr)


def test_allocations_from_several_threads():
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            mine = []
            for _ in range(200):
                if mine and rng.random() < 0.4:
                    kvx.host_free(mine.pop(int(rng.integers(len(mine)))))
                else:
                    ptr = kvx.host_alloc(int(rng.integers(1, 3000)))
                    view(ptr, 1)[0] = seed
                    mine.append(ptr)
            for ptr in mine:
                kvx.host_free(ptr)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_arguments():
    with pytest.raises(kvx.InvalidArgumentError, match=r"^bytes: expected 1\.\."):
        kvx.host_alloc(0)
    with pytest.raises(kvx.InvalidArgumentError, match=r"^bytes: expected 1\.\."):
        kvx.host_alloc(-5)
    with pytest.raises(kvx.InvalidArgumentError, match="nbytes: expected an int, got float"):
        kvx.host_alloc(10.0)
    assert lib.kvx_host_alloc(lib.KVX_DEVICE_CPU, 0, 10, ffi.NULL) == lib.KVX_ERR_INVALID_ARGUMENT
    assert last_error() == "ptr: expected where to store the allocation's address, got NULL"
    out = ffi.new("void **", ffi.cast("void *", 77))
    assert lib.kvx_host_alloc(lib.KVX_DEVICE_CPU, -1, 10, out) == lib.KVX_ERR_INVALID_ARGUMENT
    assert last_error().startswith("device_index: expected 0..")
    assert int(ffi.cast("uintptr_t", out[0])) == 77  # written on success only
    assert lib.kvx_host_alloc(12345, 0, 10, out) == lib.KVX_ERR_NOT_AVAILABLE
    assert "no backend for device type 12345" in last_error()


def test_free_of_what_was_not_allocated_here():
    kvx.host_free(0)  # NULL: nothing to do
    plain = np.zeros(PAGE, np.uint8)
    with pytest.raises(kvx.InvalidArgumentError, match="is not memory from kvx_host_alloc"):
        kvx.host_free(plain.ctypes.data)
    with pytest.raises(kvx.InvalidArgumentError, match="expected an address"):
        kvx.host_free(-1)


def test_free_with_another_device_type_is_refused_and_keeps_the_memory():
    ptr = kvx.host_alloc(100)
    rc = lib.kvx_host_free(lib.KVX_DEVICE_ASCEND, ffi.cast("void *", ptr))
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert last_error() == (
        f"ptr: {ptr:#x} was allocated for device type 1, not 32 (pass the device_type given to "
        "kvx_host_alloc)"
    )
    view(ptr, 100)[:] = 1  # still allocated
    kvx.host_free(ptr, "cpu")


# ---------------------------------------------------------------- stub runtimes


@pytest.fixture(params=BACKENDS)
def st(request):
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    stub = dsc.stub(request.param)
    stub.reset()
    stub.backend = request.param
    yield stub
    assert stub.errors() == (0, ""), stub.errors()


def where(st, ptr: int) -> int:
    """The stub's view of `ptr`: 2 device memory, 1 page-locked host memory, 0 other memory."""
    device = ffi.new("int *")
    return st.lib.stub_where(st.ffi.cast("void *", ptr), st.ffi.cast("int *", device))


def test_stub_memory_is_page_locked_through_the_runtime(st, rng):
    nbytes = 3 * PAGE + 5
    ptr = kvx.host_alloc(nbytes, st.backend)
    assert ptr % PAGE == 0
    assert st.calls(HOST_ALLOC[st.backend]) == 1
    assert where(st, ptr) == where(st, ptr + nbytes - 1) == 1
    data = rng.integers(0, 256, nbytes, dtype=np.uint8)
    view(ptr, nbytes)[:] = data
    kvx.host_free(ptr, st.backend)
    assert st.calls(HOST_FREE[st.backend]) == 1
    assert where(st, ptr) == 0  # the runtime got back the very pointer it handed out


def test_stub_memory_is_the_host_end_of_device_copies(st, rng):
    """Host -> device and back through page-locked memory, on the stream, every byte."""
    stream = ffi.new("kvx_stream *")
    stream.device_type, stream.device_index = dsc.DEVICE_TYPE[st.backend], 0
    stream.handle = ffi.cast("void *", st.stream(0))
    nbytes = 10000
    host = kvx.host_alloc(nbytes, f"{st.backend}:0")
    back = kvx.host_alloc(nbytes, st.backend)
    device = st.alloc(nbytes)
    try:
        data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        view(host, nbytes)[:] = data
        view(back, nbytes)[:] = 0
        for srcs, dsts in (([host], [device]), ([device], [back])):
            arrays = ffi.new("uint64_t[]", srcs), ffi.new("uint64_t[]", dsts)
            rc = lib.kvx_copy_batch(
                ffi.cast("const void *const *", arrays[0]),
                ffi.cast("void *const *", arrays[1]),
                ffi.new("int64_t[]", [nbytes]),
                1,
                stream,
            )
            assert rc == 0, last_error()
        assert lib.kvx_synchronize(stream) == 0
        assert np.array_equal(view(back, nbytes), data)
    finally:
        st.free(device)
        kvx.host_free(host, st.backend)
        kvx.host_free(back, st.backend)


def test_stub_memory_freed_with_the_cpu_type_is_refused(st):
    ptr = kvx.host_alloc(64, st.backend)
    with pytest.raises(kvx.InvalidArgumentError, match="was allocated for device type"):
        kvx.host_free(ptr, "cpu")
    assert st.calls(HOST_FREE[st.backend]) == 0
    kvx.host_free(ptr, st.backend)
    assert st.calls(HOST_FREE[st.backend]) == 1


def test_stub_allocation_failure(st):
    st.inject(HOST_ALLOC[st.backend], 207001)
    runtime = {"ascend": "AscendCL", "cnrt": "CNRT"}[st.backend]
    with pytest.raises(kvx.OutOfMemoryError) as e:
        kvx.host_alloc(1000, st.backend)
    assert str(e.value).startswith(
        f"{HOST_ALLOC[st.backend]} failed with {runtime} error 207001 while allocating "
        f"{1000 + PAGE} bytes of page-locked host memory"
    )


def test_stub_allocation_on_another_device_selects_it(st):
    """Memory from device 1's context: the runtime is asked to select device 1 first."""
    select = {"ascend": "aclrtSetDevice", "cnrt": "cnrtSetDevice"}[st.backend]
    ptr = kvx.host_alloc(64, f"{st.backend}:1")
    assert st.calls(select) >= 1
    kvx.host_free(ptr, st.backend)


NO_PINNED = """
    import device_stub_cases as dsc, kvx
    dsc._loaded["{backend}"] = dsc.Stub("{backend}",
                                        dsc.build_stub("{backend}", ("STUB_NO_PINNED",)))
    dsc.stub("{backend}")
    try:
        kvx.host_alloc(10, "{backend}")
    except kvx.UnsupportedError as e:
        print(e)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_runtime_without_page_locked_memory_is_unsupported(backend):
    """The staged codec falls back to malloc there; kvx_host_alloc promises page-locked memory,
    so it says it cannot give it."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    r = dsc.run_python(NO_PINNED.format(backend=backend))
    assert r.returncode == 0, r.stdout + r.stderr
    runtime, call = {"ascend": ("AscendCL", "aclrtMallocHost"), "cnrt": ("CNRT", "cnrtHostMalloc")}[
        backend
    ]
    assert r.stdout.strip() == (
        f"host_alloc: the loaded {runtime} runtime lacks {call} or its free function, so the "
        f"{backend} backend cannot allocate page-locked host memory [KVX_ERR_UNSUPPORTED]"
    )


MISSING_RUNTIME = """
    import kvx
    for device in ("ascend", "npu:0", "cnrt", "mlu"):
        try:
            kvx.host_alloc(10, device)
        except kvx.NotAvailableError as e:
            print(str(e).split(":")[0])
"""


def test_missing_runtime_is_not_available():
    """No stub loaded, no real runtime: the backend's reason, KVX_ERR_NOT_AVAILABLE."""
    r = dsc.run_python(MISSING_RUNTIME, {"LD_LIBRARY_PATH": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["ascend backend"] * 2 + ["cnrt backend"] * 2, r.stdout
