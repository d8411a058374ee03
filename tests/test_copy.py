"""kvx_copy_batch / kvx.copy_batch: every byte of every range copied and every byte outside them
untouched, on the CPU backend for any thread count (many small ranges grouped, large ones split)
and from several Python threads at once; argument errors and overlaps named, with nothing
copied; and on the Ascend and CNRT stub runtimes (tests/stubs/): host <-> device in one batch
call per direction where the runtime has batches, device <-> device (unaligned pieces through
host memory on Ascend), queued on the stream, host-to-host and another device's memory refused
before anything is queued, injected runtime failures naming the range."""

from __future__ import annotations

import device_stub_cases as dsc
import kvx
import numpy as np
import pytest
from concurrency import failures_in_threads
from kvx._native import ffi, lib

SENTINEL = 0xA5


@pytest.fixture
def restore_threads():
    yield
    kvx.set_num_threads(0)


def scattered(rng, sizes, src_gap=5, dst_gap=3):
    """Source bytes and ranges: range i reads a block of src at increasing offsets (gaps
    between), and writes a slot of dst in shuffled order (gaps between). Returns src, dst (filled
    with SENTINEL), the offsets, and dst as it must be afterwards."""
    sizes = np.asarray(sizes, dtype=np.int64)
    src_off = np.concatenate([[0], np.cumsum(sizes + src_gap)[:-1]])
    src = rng.integers(0, 256, int(src_off[-1] + sizes[-1] + src_gap), dtype=np.uint8)
    slots = rng.permutation(len(sizes))
    slot_size = sizes + dst_gap
    slot_start = np.concatenate([[0], np.cumsum(slot_size[slots])[:-1]])
    dst_off = np.empty_like(sizes)
    dst_off[slots] = slot_start
    dst = np.full(int(slot_size.sum()), SENTINEL, dtype=np.uint8)
    expected = dst.copy()
    for s, d, n in zip(src_off, dst_off, sizes, strict=True):
        expected[d : d + n] = src[s : s + n]
    return src, dst, src_off, dst_off, sizes, expected


def run_scattered(src, dst, src_off, dst_off, sizes, as_lists):
    srcs = src.ctypes.data + src_off.astype(np.uint64)
    dsts = dst.ctypes.data + dst_off.astype(np.uint64)
    if as_lists:
        kvx.copy_batch([int(a) for a in srcs], [int(a) for a in dsts], [int(n) for n in sizes])
    else:
        kvx.copy_batch(srcs, dsts, sizes)


CPU_CASES = {
    # many small ranges: grouped into pieces of many ranges each
    "small": [int(n) for n in np.random.default_rng(1).integers(0, 300, 5000)],
    # large ranges: each split over pieces and threads, at odd sizes
    "large": [3 << 20, (5 << 20) + 3, 1, (2 << 20) - 7, 9 << 20],
    # both, and empty ranges
    "mixed": [0, 7, 1 << 20, 0, 64, (3 << 20) + 1, *range(0, 900, 13), 0],
    "one": [12345],
}


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("case", sorted(CPU_CASES))
def test_cpu_copies_every_byte(case, threads, restore_threads, rng):
    kvx.set_num_threads(threads)
    src, dst, src_off, dst_off, sizes, expected = scattered(rng, CPU_CASES[case])
    before = src.copy()
    run_scattered(src, dst, src_off, dst_off, sizes, as_lists=case != "large")
    assert np.array_equal(dst, expected)
    assert np.array_equal(src, before)


def test_ranges_over_separate_allocations(rng, restore_threads):
    """Destinations in buffers far apart in the address space (small ones from the heap, a large
    one mapped on its own), in shuffled order: the overlap check sorts over all the address
    bits."""
    kvx.set_num_threads(2)
    buffers = [np.full(n, SENTINEL, np.uint8) for n in (3000, 5 << 20, 700)]
    src = rng.integers(0, 256, 2000, dtype=np.uint8)
    ranges = []  # (buffer, offset, size, src offset)
    for b, buf in enumerate(buffers):
        for off in range(0, min(len(buf), 2800) - 100, 150):
            ranges.append((b, off, 100, int(rng.integers(0, 1900))))
    order = rng.permutation(len(ranges))
    ranges = [ranges[i] for i in order]
    kvx.copy_batch(
        [src.ctypes.data + s for *_, s in ranges],
        [buffers[b].ctypes.data + off for b, off, _, _ in ranges],
        [n for _, _, n, _ in ranges],
    )
    for b, buf in enumerate(buffers):
        want = np.full(len(buf), SENTINEL, np.uint8)
        for rb, off, n, s in ranges:
            if rb == b:
                want[off : off + n] = src[s : s + n]
        assert np.array_equal(buf, want), b


@pytest.mark.parametrize("seed", range(40))
def test_overlaps_found_exactly_when_present(seed):
    """Random ranges inside one buffer (sources and destinations alike): refused exactly when
    some destination meets another destination or a source (brute force), and then nothing is
    written; otherwise the bytes of a sequential copy (order does not matter then)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 20))  # about half the seeds clash
    mem = rng.integers(0, 256, 8000, dtype=np.uint8)
    sizes = rng.integers(0, 60, n)
    srcs, dsts = rng.integers(0, 7940, n), rng.integers(0, 7940, n)

    def meets(a, na, b, nb):
        return na > 0 and nb > 0 and a < b + nb and b < a + na

    clash = any(
        meets(dsts[i], sizes[i], dsts[j], sizes[j]) for i in range(n) for j in range(i)
    ) or any(meets(dsts[i], sizes[i], srcs[j], sizes[j]) for i in range(n) for j in range(n))
    want = mem.copy()
    for s, d, k in zip(srcs, dsts, sizes, strict=True):
        want[d : d + k] = mem[s : s + k]
    before = mem.copy()
    base = mem.ctypes.data
    if clash:
        with pytest.raises(kvx.InvalidArgumentError, match="a destination range must not"):
            kvx.copy_batch(base + srcs.astype(np.uint64), base + dsts.astype(np.uint64), sizes)
        assert np.array_equal(mem, before)
    else:
        kvx.copy_batch(base + srcs.astype(np.uint64), base + dsts.astype(np.uint64), sizes)
        assert np.array_equal(mem, want)


def test_sources_may_overlap_one_another(rng):
    """One source copied to several places (a prefix shared by many requests)."""
    src = rng.integers(0, 256, 1000, dtype=np.uint8)
    dst = np.full(3000, SENTINEL, np.uint8)
    base, out = src.ctypes.data, dst.ctypes.data
    kvx.copy_batch([base, base + 10, base], [out, out + 1000, out + 2000], [1000, 990, 500])
    assert np.array_equal(dst[:1000], src)
    assert np.array_equal(dst[1000:1990], src[10:])
    assert (dst[1990:2000] == SENTINEL).all()
    assert np.array_equal(dst[2000:2500], src[:500])
    assert (dst[2500:] == SENTINEL).all()


def test_empty_batches_and_empty_ranges():
    """No range, or only 0-byte ranges (whose addresses are never looked at, 0 included)."""
    kvx.copy_batch([], [], [])
    kvx.copy_batch([0, 123], [0, 0], [0, 0])
    assert lib.kvx_copy_batch(ffi.NULL, ffi.NULL, ffi.NULL, 0, ffi.NULL) == 0


def test_concurrent_calls_from_python_threads(rng):
    """While one caller's job holds the pool, the others run theirs on their own threads."""
    cases = [scattered(rng, CPU_CASES["small"][:2000] + [1 << 20]) for _ in range(6)]

    def work(case):
        src, dst, src_off, dst_off, sizes, expected = case
        for _ in range(4):
            dst[:] = SENTINEL
            run_scattered(src, dst, src_off, dst_off, sizes, as_lists=False)
            assert np.array_equal(dst, expected), "mismatch"

    assert failures_in_threads(work, cases) == []


def test_inputs_as_tensors_and_tuples(rng):
    torch = pytest.importorskip("torch")
    src = rng.integers(0, 256, 64, dtype=np.uint8)
    dst = np.zeros(64, np.uint8)
    a, b = src.ctypes.data, dst.ctypes.data
    kvx.copy_batch(
        torch.tensor([a, a + 32], dtype=torch.int64),
        (b + 32, b),
        torch.tensor([32, 32], dtype=torch.int32),
    )
    assert np.array_equal(dst, np.concatenate([src[32:], src[:32]]))


# ---------------------------------------------------------------- errors: nothing copied


class Batch:
    """Four valid ranges between two numpy buffers, to break one of them; `run` calls the C
    entry and returns (status, message); `untouched` says whether dst still holds SENTINEL."""

    def __init__(self):
        self.src = np.arange(4096, dtype=np.uint8)
        self.dst = np.full(4096, SENTINEL, np.uint8)
        s, d = self.src.ctypes.data, self.dst.ctypes.data
        self.srcs = [s, s + 1000, s + 2000, s + 3000]
        self.dsts = [d + 3000, d + 2000, d + 1000, d]
        self.sizes = [1000, 1000, 1000, 1000]

    def run(self, count=None):
        srcs = ffi.new("uint64_t[]", self.srcs)
        dsts = ffi.new("uint64_t[]", self.dsts)
        sizes = ffi.new("int64_t[]", self.sizes)
        rc = lib.kvx_copy_batch(
            ffi.cast("const void *const *", srcs),
            ffi.cast("void *const *", dsts),
            sizes,
            len(self.sizes) if count is None else count,
            ffi.NULL,
        )
        return rc, ffi.string(lib.kvx_last_error()).decode()

    def untouched(self):
        return bool((self.dst == SENTINEL).all())


def test_the_batch_itself_is_valid():
    b = Batch()
    assert b.run() == (0, "")
    for i in range(4):
        assert np.array_equal(
            b.dst[3000 - 1000 * i : 4000 - 1000 * i], b.src[1000 * i : 1000 * (i + 1)]
        )
    assert (b.dst[4000:] == SENTINEL).all()


def test_negative_size():
    b = Batch()
    b.sizes[3] = -1
    assert b.run() == (lib.KVX_ERR_INVALID_ARGUMENT, "sizes[3]: expected >= 0 bytes, got -1")
    assert b.untouched()


@pytest.mark.parametrize("which", ["srcs", "dsts"])
def test_null_pointer_in_a_range(which):
    b = Batch()
    getattr(b, which)[2] = 0
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == f"{which}[2]: expected a pointer to sizes[2] = 1000 bytes, got NULL"
    assert b.untouched()


def test_range_past_the_end_of_the_address_space():
    b = Batch()
    b.srcs[1] = (1 << 64) - 100
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg.startswith("srcs[1]: 1000 bytes from 0xffffffffffffff9c run past the end")
    assert b.untouched()


def test_sizes_whose_total_overflows():
    b = Batch()
    b.srcs[3], b.dsts[3] = 1 << 40, 1 << 41  # never read: the total fails first
    b.sizes[3] = (1 << 63) - 500
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == "sizes: the total of the first 4 entries overflows int64"
    assert b.untouched()


@pytest.mark.parametrize(
    "count,message",
    [(-1, "count: expected 0..")],
)
def test_negative_count(count, message):
    b = Batch()
    rc, msg = b.run(count)
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT and msg.startswith(message)
    assert b.untouched()


@pytest.mark.parametrize(
    "which,what", [("srcs", "pointers"), ("dsts", "pointers"), ("sizes", "int64 entries")]
)
def test_null_array(which, what):
    arrays = {
        "srcs": ffi.new("uint64_t[]", [1]),
        "dsts": ffi.new("uint64_t[]", [2]),
        "sizes": ffi.new("int64_t[]", [1]),
    }
    arrays[which] = ffi.NULL
    rc = lib.kvx_copy_batch(
        ffi.cast("const void *const *", arrays["srcs"]),
        ffi.cast("void *const *", arrays["dsts"]),
        ffi.cast("int64_t *", arrays["sizes"]),
        1,
        ffi.NULL,
    )
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert ffi.string(lib.kvx_last_error()).decode() == f"{which}: expected 1 {what}, got NULL"


def _overlap_message(b, dst_index, other, other_index, other_start, other_len):
    d = b.dsts[dst_index]
    return (
        f"dsts[{dst_index}]: bytes [{d:#x}, {d + b.sizes[dst_index]:#x}) overlap "
        f"{other}[{other_index}]'s [{other_start:#x}, {other_start + other_len:#x}); a "
        "destination range must not overlap another destination range or any source range"
    )


def test_destinations_overlapping_one_another():
    b = Batch()
    b.dsts[3] = b.dsts[1] + 999  # its first byte is dsts[1]'s last
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == _overlap_message(b, 3, "dsts", 1, b.dsts[1], 1000)
    assert b.untouched()


def test_destination_overlapping_a_source():
    b = Batch()
    b.srcs[2] = b.dsts[0] + 500  # range 2 reads what range 0 writes
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == _overlap_message(b, 0, "srcs", 2, b.srcs[2], 1000)
    assert b.untouched()


def test_a_range_overlapping_itself():
    """memmove's case (LMCache's batched_memcpy allows it): refused, memcpy semantics."""
    b = Batch()
    b.srcs[1] = b.dsts[1] - 10
    rc, msg = b.run()
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == _overlap_message(b, 1, "srcs", 1, b.srcs[1], 1000)
    assert b.untouched()


def test_touching_ranges_do_not_overlap():
    """Ranges that end where the next begins are fine, destinations and sources alike."""
    b = Batch()
    d = b.dst.ctypes.data
    b.dsts = [d, d + 1000, d + 2000, d + 3000]
    b.sizes[3] = 96
    b.srcs[3] = d + 3096  # starts where dsts[3] ends; no destination covers it
    assert b.run() == (0, "")
    assert np.array_equal(b.dst[:3000], b.src[:3000])
    assert (b.dst[3000:] == SENTINEL).all()


def test_python_argument_errors():
    with pytest.raises(kvx.InvalidArgumentError, match=r"expected the same length, got 2, 1, 2"):
        kvx.copy_batch([1, 2], [3], [0, 0])
    with pytest.raises(kvx.InvalidArgumentError, match=r"src_ptrs: expected a sequence of int"):
        kvx.copy_batch([1.5], [3], [0])
    with pytest.raises(kvx.InvalidArgumentError, match=r"dst_ptrs: expected a sequence of int"):
        kvx.copy_batch([1], [-3], [0])
    with pytest.raises(kvx.InvalidArgumentError, match=r"dst_ptrs: expected addresses >= 0"):
        kvx.copy_batch([1], np.array([-3]), [0])
    with pytest.raises(kvx.InvalidArgumentError, match=r"sizes: expected a 1-D array of int"):
        kvx.copy_batch([1], [3], np.array([0.0]))
    with pytest.raises(kvx.InvalidArgumentError, match=r"sizes\[0\]: expected >= 0 bytes"):
        kvx.copy_batch([1], [3], [-1])
    with pytest.raises(kvx.InvalidArgumentError, match=r"device: .*'tpu'"):
        kvx.copy_batch([], [], [], device="tpu")
    with pytest.raises(kvx.InvalidArgumentError, match=r"device: expected 'type' or"):
        kvx.copy_batch([], [], [], device="cuda:x")
    with pytest.raises(kvx.InvalidArgumentError, match=r"device: expected None, a device name"):
        kvx.copy_batch([], [], [], device=3)


def test_device_without_its_backend_is_not_available():
    """A device whose backend cannot run here: libkvx's reason, before torch is asked for a
    stream on it."""
    kind = next((k for k in ("hip", "cuda") if not lib.kvx_backend_available(
        getattr(lib, f"KVX_DEVICE_{k.upper()}"))), None)  # fmt: skip
    if kind is None:
        pytest.skip("both GPU backends are available here")
    with pytest.raises(kvx.NotAvailableError):
        kvx.copy_batch([], [], [], device=f"{kind}:0")


def test_supported_natively_everywhere_it_is_compiled():
    for device in ("CPU", "ASCEND", "CNRT", "CUDA", "HIP"):
        device_type = getattr(lib, f"KVX_DEVICE_{device}")
        want = lib.KVX_SUPPORT_NATIVE if lib.kvx_backend_compiled(device_type) else 0
        assert lib.kvx_backend_supports(device_type, lib.KVX_OP_COPY) == want, device


# ---------------------------------------------------------------- Ascend and CNRT stubs

BACKENDS = ["ascend", "cnrt"]
COPY_1D = {"ascend": "aclrtMemcpyAsync", "cnrt": "cnrtMemcpyAsync_V3"}
WORDS = {"ascend": ("NPU", "stream", "AscendCL"), "cnrt": ("MLU", "queue", "CNRT")}


class StubDevice:
    """A stub runtime's device memory and a stream of device 0; `call` runs kvx_copy_batch
    there."""

    def __init__(self, backend: str):
        self.backend = backend
        self.st = dsc.stub(backend)
        self.st.reset()
        self.handle = self.st.stream(0)
        self.stream = ffi.new("kvx_stream *")
        self.stream.device_type, self.stream.device_index = dsc.DEVICE_TYPE[backend], 0
        self.stream.handle = ffi.cast("void *", self.handle)
        self.allocated: list[int] = []

    def put(self, host: np.ndarray, device: int = 0) -> int:
        dev = self.st.alloc(host.nbytes, device)
        self.st.memcpy(dev, host.ctypes.data, host.nbytes)
        self.allocated.append(dev)
        return dev

    def get(self, dev: int, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, np.uint8)
        self.st.memcpy(out.ctypes.data, dev, nbytes)
        return out

    def call(self, srcs, dsts, sizes) -> tuple[int, str]:
        # named: a cast does not keep the array it points into alive
        src_array, dst_array = ffi.new("uint64_t[]", srcs), ffi.new("uint64_t[]", dsts)
        rc = lib.kvx_copy_batch(
            ffi.cast("const void *const *", src_array),
            ffi.cast("void *const *", dst_array),
            ffi.new("int64_t[]", sizes),
            len(sizes),
            self.stream,
        )
        return rc, ffi.string(lib.kvx_last_error()).decode()

    def sync(self) -> int:
        return lib.kvx_synchronize(self.stream)

    def release(self) -> None:
        for dev in self.allocated:
            self.st.free(dev)
        assert self.st.errors() == (0, ""), self.st.errors()


@pytest.fixture(params=BACKENDS)
def dev(request):
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    d = StubDevice(request.param)
    yield d
    d.release()


def mixed_batch(dev: StubDevice, rng):
    """Host -> device, device -> host and device -> device ranges (64-byte aligned and not)
    between host buffers and two device buffers. Returns the batch, the buffers, and what the
    device buffer and the host destination must hold afterwards."""
    host_src = rng.integers(0, 256, 8192, dtype=np.uint8)
    dev_src_host = rng.integers(0, 256, 8192, dtype=np.uint8)
    dev_dst_host = np.full(8192, SENTINEL, np.uint8)
    host_dst = np.full(8192, SENTINEL, np.uint8)
    dev_src, dev_dst = dev.put(dev_src_host), dev.put(dev_dst_host)
    h, hd = host_src.ctypes.data, host_dst.ctypes.data
    ranges = [  # (src, dst, size, kind)
        (h + 0, dev_dst + 0, 1000, "h2d"),
        (dev_src + 0, hd + 0, 640, "d2h"),
        (h + 1500, dev_dst + 1024, 333, "h2d"),
        (dev_src + 64, dev_dst + 2048, 512, "d2d aligned"),
        (dev_src + 4000, hd + 4000, 0, "empty"),
        (dev_src + 1003, dev_dst + 3001, 999, "d2d unaligned"),
        (dev_src + 5000, hd + 1000, 3000, "d2h"),
        (h + 7000, dev_dst + 7000, 1192, "h2d"),
    ]
    want_dev = dev_dst_host.copy()
    want_host = host_dst.copy()
    for src, dst, size, _ in ranges:
        data = host_src if h <= src < h + 8192 else dev_src_host
        s = src - (h if data is host_src else dev_src)
        target, base = (want_host, hd) if hd <= dst < hd + 8192 else (want_dev, dev_dst)
        target[dst - base : dst - base + size] = data[s : s + size]
    return ranges, host_src, host_dst, dev_dst, want_dev, want_host


def test_stub_mixed_batch_copies_every_byte(dev, rng):
    ranges, _, host_dst, dev_dst, want_dev, want_host = mixed_batch(dev, rng)
    dev.st.reset()
    rc, msg = dev.call(*zip(*[(s, d, n) for s, d, n, _ in ranges], strict=True))
    assert rc == 0, msg
    assert dev.sync() == 0
    kinds = [k for *_, k in ranges]
    h2d, d2h = kinds.count("h2d"), kinds.count("d2h")
    if dev.backend == "ascend":
        # one batch call per host <-> device direction; device <-> device one aclrtMemcpyAsync,
        # the unaligned one as two (through host memory: AscendCL's 64-byte rule on chip)
        assert dev.st.calls("aclrtMemcpyBatchAsyncV2") == 2
        assert dev.st.calls("aclrtMemcpyAsync") == 1 + 2
        assert dev.st.copies() == h2d + d2h + 1 + 2
        assert dev.st.copied_bytes() == sum(n for *_, n, _ in ranges) + 999
    else:
        assert dev.st.calls("cnrtMemcpyAsync_V3") == dev.st.copies() == len(ranges) - 1
        assert dev.st.copied_bytes() == sum(n for *_, n, _ in ranges)
    assert np.array_equal(host_dst, want_host)
    assert np.array_equal(dev.get(dev_dst, 8192), want_dev)


def test_stub_copies_are_queued_on_the_stream(dev, rng):
    """The call returns with the copies queued behind a paused stream; they run when it goes."""
    host_dst = np.full(4096, SENTINEL, np.uint8)
    src = rng.integers(0, 256, 4096, dtype=np.uint8)
    dev_src = dev.put(src)
    dev.st.pause(dev.handle, True)
    try:
        a = host_dst.ctypes.data
        rc, msg = dev.call([dev_src, dev_src + 2048], [a + 2048, a], [2048, 2048])
        assert rc == 0, msg
        assert (host_dst == SENTINEL).all()
    finally:
        dev.st.pause(dev.handle, False)
    assert dev.sync() == 0
    assert np.array_equal(host_dst, np.concatenate([src[2048:], src[:2048]]))


def test_stub_host_to_host_range_is_refused_before_anything_is_queued(dev, rng):
    _, stream, runtime = WORDS[dev.backend]
    a = rng.integers(0, 256, 256, dtype=np.uint8)
    b = np.full(256, SENTINEL, np.uint8)
    dev_dst = dev.put(np.zeros(256, np.uint8))
    dev.st.reset()
    rc, msg = dev.call([a.ctypes.data, a.ctypes.data], [dev_dst, b.ctypes.data], [128, 128])
    assert rc == lib.KVX_ERR_UNSUPPORTED
    assert msg == (
        f"srcs[1] and dsts[1]: both host memory, and {runtime} has no asynchronous host-to-host "
        f"copy on a {stream} (copy host ranges with a NULL stream)"
    )
    assert dev.sync() == 0
    assert dev.st.copies() == 0 and (b == SENTINEL).all()
    assert (dev.get(dev_dst, 256) == 0).all()


def test_stub_memory_of_another_device_is_refused(dev):
    device, stream, _ = WORDS[dev.backend]
    other = dev.put(np.zeros(64, np.uint8), device=1)
    host = np.zeros(64, np.uint8)
    dev.st.reset()
    rc, msg = dev.call([host.ctypes.data], [other], [64])
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT
    assert msg == (
        f"dsts[0]: expected host memory or memory of {device} 0 (the {stream}'s), got {device} 1"
    )
    assert dev.st.copies() == 0


def test_stub_overlap_is_refused_before_the_runtime_is_asked(dev):
    d = dev.put(np.zeros(4096, np.uint8))
    host = np.zeros(4096, np.uint8)
    dev.st.reset()
    rc, msg = dev.call([host.ctypes.data, host.ctypes.data], [d, d + 100], [200, 200])
    assert rc == lib.KVX_ERR_INVALID_ARGUMENT and msg.startswith("dsts[1]: bytes [")
    assert dev.st.calls() == 0


def test_stub_failed_copy_names_its_range(dev, rng):
    """A runtime error while submitting: KVX_ERR_DEVICE naming the vendor call, its code and
    (for one copy per range) the range; what was queued before still runs cleanly."""
    src = rng.integers(0, 256, 4096, dtype=np.uint8)
    dev_src = dev.put(src)
    host_dst = np.zeros(4096, np.uint8)
    a = host_dst.ctypes.data
    srcs, dsts, sizes = (
        [dev_src + 1024 * i for i in range(4)],
        [a + 1024 * i for i in range(4)],
        [1024] * 4,
    )
    dev.st.reset()
    if dev.backend == "ascend":
        dev.st.inject("aclrtMemcpyBatchAsyncV2", 507000)
        rc, msg = dev.call(srcs, dsts, sizes)
        assert rc == lib.KVX_ERR_DEVICE
        assert msg == (
            "aclrtMemcpyBatchAsyncV2 failed with AscendCL error 507000 while submitting the "
            "ranges' copies"
        )
    else:
        dev.st.inject("cnrtMemcpyAsync_V3", 632015, after=2)
        rc, msg = dev.call(srcs, dsts, sizes)
        assert rc == lib.KVX_ERR_DEVICE
        assert msg == (
            "cnrtMemcpyAsync_V3 failed with CNRT error 632015 copying srcs[2] to dsts[2] (the "
            "copies submitted before it are queued)"
        )
    assert dev.sync() == 0
    if dev.backend == "cnrt":
        assert np.array_equal(host_dst[:2048], src[:2048]) and (host_dst[2048:] == 0).all()


WITHOUT_BATCHES = """
    import numpy as np, test_copy as t
    {prepare}
    dev = t.StubDevice("ascend")
    rng = np.random.default_rng(5)
    for round in range(2):
        ranges, host_src, host_dst, dev_dst, want_dev, want_host = t.mixed_batch(dev, rng)
        dev.st.reset()
        {inject}
        rc, msg = dev.call(*zip(*[(s, d, n) for s, d, n, _ in ranges]))
        assert rc == 0, msg
        assert dev.sync() == 0
        assert np.array_equal(host_dst, want_host)
        assert np.array_equal(dev.get(dev_dst, 8192), want_dev)
        print(dev.st.calls("aclrtMemcpyBatchAsyncV2"), dev.st.calls("aclrtMemcpyAsync"))
    dev.release()
"""


@pytest.mark.parametrize(
    "variant,prepare,inject,calls",
    [
        # a chip without batch copies (310P): refused once, then the loop, remembered
        ("refused", "", 'dev.st.inject("aclrtMemcpyBatchAsyncV2", 207000)', ["1 8", "0 8"]),
        # a runtime without the batch API: the loop
        (
            "missing",
            't.dsc._loaded["ascend"] = t.dsc.Stub("ascend", '
            't.dsc.build_stub("ascend", ("STUB_NO_BATCH",)))',
            "",
            ["0 8", "0 8"],
        ),
    ],
)
def test_stub_ascend_without_batch_copies_loops(variant, prepare, inject, calls):
    """7 non-empty ranges: 5 host <-> device copies and 1 + 2 device <-> device ones (the
    unaligned one through host memory); in a fresh process, as what the runtime refuses is
    remembered for the process."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    r = dsc.run_python(WITHOUT_BATCHES.format(prepare=prepare, inject=inject))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-2:] == calls, variant


@pytest.mark.parametrize(
    "backend,device", [("ascend", "npu:0"), ("cnrt", "mlu"), ("cnrt", "cnrt:0")]
)
def test_python_wrapper_orders_the_copies_on_the_devices_stream(backend, device, monkeypatch, rng):
    """kvx.copy_batch(..., device=...) resolves the device and passes its current stream (torch's,
    simulated here: no torch_npu / torch_mlu) to the C entry."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    dev = StubDevice(backend)
    asked = []

    def current_stream(where):
        asked.append(where)
        return dev.stream

    monkeypatch.setattr(kvx.memory, "current_stream", current_stream)
    src = rng.integers(0, 256, 3000, dtype=np.uint8)
    d = dev.put(np.zeros(3000, np.uint8))
    s = src.ctypes.data
    kvx.copy_batch([s, s + 1000], [d + 2000, d], [1000, 2000], device=device)
    assert asked == [(dsc.DEVICE_TYPE[backend], 0)]
    assert dev.sync() == 0
    assert np.array_equal(dev.get(d, 3000), np.concatenate([src[1000:], src[:1000]]))
    dev.release()
