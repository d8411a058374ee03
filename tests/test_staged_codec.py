"""The host-staged codec of the Ascend and CNRT backends (src/runtime/codec_staged.c), on the stub
runtimes, where it differs from the CPU backend: how it stages (one copy per run of a strided
view, host arrays used in place, another device's memory refused, a slow stream waited for,
malloc when the runtime has no pinned memory, the staging pool); data-dependent errors and
runtime failures injected while staging leave the device outputs untouched and name the vendor
function and code. That every entry point, with its arrays in stub device memory (PROT_NONE
outside the stub's copies, so a host dereference crashes), gives the CPU backend's bytes
(LMCache's golden vectors included) is checked by tests/test_conformance.py, which uses the
calls below."""

from __future__ import annotations

import device_stub_cases as dsc
import numpy as np
import pytest
from kvx._native import ffi as kffi
from kvx._native import lib as klib

BACKENDS = ["ascend", "cnrt"]
COPY = {"ascend": "aclrtMemcpyAsync", "cnrt": "cnrtMemcpyAsync_V3"}
HOST_ALLOC = {"ascend": "aclrtMallocHost", "cnrt": "cnrtHostMalloc"}
HOST_FREE = {"ascend": "aclrtFreeHost", "cnrt": "cnrtFreeHost"}
SYNC = {"ascend": "aclrtSynchronizeStream", "cnrt": "cnrtQueueSync"}
DTYPES = {
    "float32": klib.KVX_DTYPE_FLOAT32,
    "float16": klib.KVX_DTYPE_FLOAT16,
    "bfloat16": klib.KVX_DTYPE_BFLOAT16,
}

pytestmark = pytest.mark.skipif(
    dsc.compiler() is None, reason="no C compiler to build the stub runtimes"
)


class Device:
    """Stub device memory and a stream of one backend; `ptr(a)` places a numpy array."""

    def __init__(self, backend: str, device: int = 0):
        self.backend = backend
        self.st = dsc.stub(backend)
        self.st.reset()
        self.handle = self.st.stream(device)
        self.stream = kffi.new("kvx_stream *")
        self.stream.device_type, self.stream.device_index = dsc.DEVICE_TYPE[backend], device
        self.stream.handle = kffi.cast("void *", self.handle)
        self.arrays: dict[int, np.ndarray] = {}  # device address -> host array it mirrors
        self.device = device

    def put(self, a: np.ndarray, device: int | None = None) -> int:
        a = np.ascontiguousarray(a)
        dev = self.st.alloc(max(a.nbytes, 1), self.device if device is None else device)
        if a.nbytes:
            self.st.memcpy(dev, a.ctypes.data, a.nbytes)
        self.arrays[dev] = a
        return dev

    def get(self, dev: int) -> np.ndarray:
        out = np.empty_like(self.arrays[dev])
        if out.nbytes:
            self.st.memcpy(out.ctypes.data, dev, out.nbytes)
        return out

    def release(self) -> None:
        for dev in self.arrays:
            self.st.free(dev)
        self.arrays = {}
        assert self.st.errors() == (0, ""), self.st.errors()


def ptr(x, ctype="void *"):
    return kffi.cast(ctype, x if isinstance(x, int) else x.ctypes.data)


@pytest.fixture(autouse=True)
def no_staging_pool(monkeypatch):
    """Every staging block is allocated and freed within its call (the tests count both); the
    pool that keeps blocks between calls has its own test below."""
    monkeypatch.setenv("KVX_STAGING_POOL_BYTES", "0")


@pytest.fixture(params=BACKENDS)
def dev(request):
    d = Device(request.param)
    yield d
    d.release()


def check(rc):
    assert rc == 0, dsc.last_error()


# ---------------------------------------------------------------- one call on both sides


def quantize(x_raw, dtype, rows, tokens, channels, row_stride, token_stride, bins, on=None):
    """kvx_codec_quantize on the CPU (on=None) or on `on` (a Device, every array in its memory).
    Returns (status, message, symbols, scales)."""
    symbols = np.full((rows, tokens, channels), 0xEE, np.uint8)
    scales = np.full((rows, tokens), -1.0, np.float32)
    bins = np.asarray(bins, np.int32)
    if on is None:
        rc = klib.kvx_codec_quantize(
            ptr(x_raw),
            dtype,
            rows,
            tokens,
            channels,
            row_stride,
            token_stride,
            ptr(bins, "int32_t *"),
            ptr(symbols, "uint8_t *"),
            ptr(scales, "float *"),
            kffi.NULL,
        )
        return rc, dsc.last_error(), symbols, scales
    x, s, c = on.put(x_raw), on.put(symbols), on.put(scales)
    rc = klib.kvx_codec_quantize(
        ptr(x),
        dtype,
        rows,
        tokens,
        channels,
        row_stride,
        token_stride,
        ptr(bins, "int32_t *"),
        ptr(s, "uint8_t *"),
        ptr(c, "float *"),
        on.stream,
    )
    return rc, dsc.last_error(), on.get(s), on.get(c)


def dequantize(symbols, scales, bins, dtype, out_init, row_stride, token_stride, on=None):
    rows, tokens, channels = symbols.shape
    bins = np.asarray(bins, np.int32)
    out = out_init.copy()
    if on is None:
        rc = klib.kvx_codec_dequantize(
            ptr(symbols, "uint8_t *"),
            ptr(scales, "float *"),
            ptr(bins, "int32_t *"),
            rows,
            tokens,
            channels,
            dtype,
            ptr(out),
            row_stride,
            token_stride,
            kffi.NULL,
        )
        return rc, dsc.last_error(), out
    s, c, o = on.put(symbols), on.put(scales), on.put(out)
    rc = klib.kvx_codec_dequantize(
        ptr(s, "uint8_t *"),
        ptr(c, "float *"),
        ptr(bins, "int32_t *"),
        rows,
        tokens,
        channels,
        dtype,
        ptr(o),
        row_stride,
        token_stride,
        on.stream,
    )
    return rc, dsc.last_error(), on.get(o)


def calculate_cdf(symbols, num_bins, on=None):
    layers, tokens, channels = symbols.shape
    cdf = np.full((layers, channels, num_bins + 1), 0xBEEF, np.uint16)
    if on is None:
        rc = klib.kvx_codec_calculate_cdf(
            ptr(symbols, "uint8_t *"),
            layers,
            tokens,
            channels,
            num_bins,
            ptr(cdf, "uint16_t *"),
            kffi.NULL,
        )
        return rc, dsc.last_error(), cdf
    s, c = on.put(symbols), on.put(cdf)
    rc = klib.kvx_codec_calculate_cdf(
        ptr(s, "uint8_t *"), layers, tokens, channels, num_bins, ptr(c, "uint16_t *"), on.stream
    )
    return rc, dsc.last_error(), on.get(c)


def encode(cdf, symbols, capacity, on=None, host=()):
    """`host` names arrays left in host memory when running on a device."""
    layers, tokens, channels = symbols.shape
    streams = np.full((layers, channels, capacity), 0xAB, np.uint8)  # slack must survive
    lengths = np.full((layers, channels), -7, np.int32)
    args = {"cdf": cdf, "symbols": symbols, "streams": streams, "lengths": lengths}
    if on is None:
        p = {k: v.ctypes.data for k, v in args.items()}
    else:
        p = {k: (v.ctypes.data if k in host else on.put(v)) for k, v in args.items()}
    rc = klib.kvx_codec_encode(
        ptr(p["cdf"], "uint16_t *"),
        cdf.shape[-1],
        ptr(p["symbols"], "uint8_t *"),
        layers,
        tokens,
        channels,
        ptr(p["streams"], "uint8_t *"),
        capacity,
        ptr(p["lengths"], "int32_t *"),
        on.stream if on else kffi.NULL,
    )
    msg = dsc.last_error()
    if on is None:
        return rc, msg, streams, lengths
    back = [args[k] if k in host else on.get(p[k]) for k in ("streams", "lengths")]
    return (rc, msg, *back)


def decode(cdf, streams, lengths, tokens, on=None):
    layers, channels, capacity = streams.shape
    symbols = np.full((layers, tokens, channels), 0xEE, np.uint8)
    if on is None:
        rc = klib.kvx_codec_decode(
            ptr(cdf, "uint16_t *"),
            cdf.shape[-1],
            ptr(streams, "uint8_t *"),
            capacity,
            ptr(lengths, "int32_t *"),
            layers,
            tokens,
            channels,
            ptr(symbols, "uint8_t *"),
            kffi.NULL,
        )
        return rc, dsc.last_error(), symbols
    c, s, n, o = on.put(cdf), on.put(streams), on.put(lengths), on.put(symbols)
    rc = klib.kvx_codec_decode(
        ptr(c, "uint16_t *"),
        cdf.shape[-1],
        ptr(s, "uint8_t *"),
        capacity,
        ptr(n, "int32_t *"),
        layers,
        tokens,
        channels,
        ptr(o, "uint8_t *"),
        on.stream,
    )
    return rc, dsc.last_error(), on.get(o)


def decode_prefsum(cdf, data, ends, shape, on=None):
    layers, tokens, channels = shape
    symbols = np.full(shape, 0xEE, np.uint8)
    if on is None:
        rc = klib.kvx_codec_decode_prefsum(
            ptr(cdf, "uint16_t *"),
            cdf.shape[-1],
            ptr(data, "uint8_t *"),
            data.size,
            ptr(ends, "int64_t *"),
            layers,
            tokens,
            channels,
            ptr(symbols, "uint8_t *"),
            kffi.NULL,
        )
        return rc, dsc.last_error(), symbols
    c, b, e, o = on.put(cdf), on.put(data), on.put(ends), on.put(symbols)
    rc = klib.kvx_codec_decode_prefsum(
        ptr(c, "uint16_t *"),
        cdf.shape[-1],
        ptr(b, "uint8_t *"),
        data.size,
        ptr(e, "int64_t *"),
        layers,
        tokens,
        channels,
        ptr(o, "uint8_t *"),
        on.stream,
    )
    return rc, dsc.last_error(), on.get(o)


def same(a, b):
    """Equal results: status, message and every output byte."""
    assert a[0] == b[0], (a[1], b[1])
    assert a[1] == b[1]
    for x, y in zip(a[2:], b[2:], strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def same_error(a, b):
    assert a[0] == b[0] != 0, (a[1], b[1])
    assert a[1] == b[1]


# ---------------------------------------------------------------- layouts and placement


def test_strided_views_touch_only_their_elements(dev):
    """Quantize the K rows of a [T, 2, L, C + pad]-like strided buffer and dequantize into one: the
    gaps between rows and tokens keep their bytes (the staged copies are per run, not the span)."""
    rng = np.random.default_rng(5)
    L, T, C, pad = 3, 11, 24, 5
    buf = rng.standard_normal((T, 2, L, C + pad)).astype(np.float32)
    row_stride, token_stride = C + pad, 2 * L * (C + pad)
    bins = [16, 32, 8]
    q_dev = quantize(buf, klib.KVX_DTYPE_FLOAT32, L, T, C, row_stride, token_stride, bins, on=dev)
    q_cpu = quantize(buf, klib.KVX_DTYPE_FLOAT32, L, T, C, row_stride, token_stride, bins)
    same(q_dev, q_cpu)
    init = np.full_like(buf, 7.5)
    same(
        dequantize(
            q_cpu[2], q_cpu[3], bins, klib.KVX_DTYPE_FLOAT32, init, row_stride, token_stride, on=dev
        ),
        dequantize(
            q_cpu[2], q_cpu[3], bins, klib.KVX_DTYPE_FLOAT32, init, row_stride, token_stride
        ),
    )
    # one copy per (row, token) run for this view, one per array otherwise
    assert dev.st.calls(COPY[dev.backend]) == 2 * (L * T + 2)


@pytest.mark.parametrize("host", [("cdf",), ("symbols", "lengths"), ("streams",)], ids="+".join)
def test_host_arrays_are_used_in_place(dev, host):
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 15, (2, 40, 6), dtype=np.uint8)
    cdf = calculate_cdf(symbols, 16)[2]
    same(encode(cdf, symbols, 64, on=dev, host=host), encode(cdf, symbols, 64))


def test_memory_of_another_device_is_rejected(dev):
    symbols = np.zeros((1, 4, 2), np.uint8)
    cdf = np.zeros((1, 2, 17), np.uint16)
    s, c = dev.put(symbols, device=1), dev.put(cdf)
    rc = klib.kvx_codec_calculate_cdf(
        ptr(s, "uint8_t *"), 1, 4, 2, 16, ptr(c, "uint16_t *"), dev.stream
    )
    assert rc == klib.KVX_ERR_INVALID_ARGUMENT
    name = "NPU" if dev.backend == "ascend" else "MLU"
    assert (
        f"symbols: expected host memory or memory of {name} 0 (the stream's), got {name} 1"
        in dsc.last_error()
    )
    assert dev.st.copies() == 0


def test_slow_stream_is_waited_for(dev):
    """Each staged copy runs late on the stream's thread: the call must wait for the inputs before
    the CPU step and for the outputs before it returns."""
    dev.st.delay(dev.handle, 3000)
    rng = np.random.default_rng(1)
    symbols = rng.integers(0, 31, (3, 50, 8), dtype=np.uint8)
    try:
        same(calculate_cdf(symbols, 32, on=dev), calculate_cdf(symbols, 32))
    finally:
        dev.st.delay(dev.handle, 0)


NO_PINNED = """
    import numpy as np, device_stub_cases as dsc, test_staged_codec as t
    dsc._loaded["{backend}"] = dsc.Stub("{backend}",
                                        dsc.build_stub("{backend}", ("STUB_NO_PINNED",)))
    dev = t.Device("{backend}")
    symbols = np.random.default_rng(8).integers(0, 15, (2, 70, 5), dtype=np.uint8)
    cdf = t.calculate_cdf(symbols, 16, on=dev)
    t.same(cdf, t.calculate_cdf(symbols, 16))
    t.same(t.encode(cdf[2], symbols, 80, on=dev), t.encode(cdf[2], symbols, 80))
    dev.release()
    print("ok", dev.st.calls(t.COPY["{backend}"]))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_runtime_without_pinned_memory_stages_through_malloc(backend):
    r = dsc.run_python(NO_PINNED.format(backend=backend))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[-2:] == ["ok", "7"]  # cdf: 1 in, 1 out; encode: 3 in, 2 out


# ---------------------------------------------------------------- errors


def test_data_errors_come_from_the_cpu_step_before_any_output(dev):
    """Non-finite input, a CDF that is not increasing, a stream slot too small, stream offsets
    past the data: the CPU backend's status and message, and the device outputs untouched (the
    CPU backend itself may have written part of a too-small stream slot)."""
    x = np.ones((2, 5, 4), np.float32)
    x[1, 3, 2] = np.nan
    q = quantize(x, klib.KVX_DTYPE_FLOAT32, 2, 5, 4, 20, 4, [8, 8], on=dev)
    same_error(q, quantize(x, klib.KVX_DTYPE_FLOAT32, 2, 5, 4, 20, 4, [8, 8]))
    assert q[0] == klib.KVX_ERR_INVALID_ARGUMENT
    assert (q[2] == 0xEE).all() and (q[3] == -1).all()

    rng = np.random.default_rng(2)
    symbols = rng.integers(0, 7, (1, 30, 2), dtype=np.uint8)
    cdf = calculate_cdf(symbols, 8)[2]
    bad = cdf.copy()
    bad[0, 1, 3] = bad[0, 1, 2]
    e = encode(bad, symbols, 64, on=dev)
    same_error(e, encode(bad, symbols, 64))
    assert e[0] == klib.KVX_ERR_INVALID_ARGUMENT and (e[2] == 0xAB).all() and (e[3] == -7).all()

    small = encode(cdf, symbols, 1, on=dev)
    same_error(small, encode(cdf, symbols, 1))
    assert (
        small[0] == klib.KVX_ERR_BUFFER_TOO_SMALL
        and (small[2] == 0xAB).all()
        and (small[3] == -7).all()
    )

    good = encode(cdf, symbols, 64)
    ends = np.cumsum(good[3].ravel()).astype(np.int64)
    data = np.concatenate([good[2][0, c, : good[3][0, c]] for c in range(2)])
    ends[-1] += 1000
    d = decode_prefsum(cdf, data, ends, symbols.shape, on=dev)
    same_error(d, decode_prefsum(cdf, data, ends, symbols.shape))
    assert d[0] != 0 and (d[2] == 0xEE).all()


@pytest.mark.parametrize("stage", ["copy", "alloc", "sync"])
@pytest.mark.parametrize("code", [107000, 507899, 100006])
def test_runtime_failures_while_staging_in(dev, stage, code):
    """A failing staging allocation, device -> host copy or wait: a kvx error naming the vendor
    function and its code, nothing written to the device outputs, the stream left drained and the
    staging memory freed, except after a failed wait (then the device may still use it)."""
    function = {"copy": COPY, "alloc": HOST_ALLOC, "sync": SYNC}[stage][dev.backend]
    rng = np.random.default_rng(4)
    symbols = rng.integers(0, 15, (2, 33, 5), dtype=np.uint8)
    dev.st.inject(function, code)
    rc, msg, cdf = calculate_cdf(symbols, 16, on=dev)
    expected = klib.KVX_ERR_OUT_OF_MEMORY if stage == "alloc" else klib.KVX_ERR_DEVICE
    assert rc == expected, msg
    assert function in msg and str(code) in msg
    assert (cdf == 0xBEEF).all()
    assert dev.st.sync(dev.handle) == 0
    allocated, freed = dev.st.calls(HOST_ALLOC[dev.backend]), dev.st.calls(HOST_FREE[dev.backend])
    if stage == "sync":  # copies were queued when the wait failed: the block may still be in use,
        assert freed == 0  # so it is left allocated rather than freed under a running copy
    else:
        assert allocated - (stage == "alloc") == freed
    # and the next call works
    dev.st.lib.stub_clear_injections()
    same(calculate_cdf(symbols, 16, on=dev), calculate_cdf(symbols, 16))


def test_async_failure_of_a_staging_copy(dev):
    """The stream reports the failure when waited for: named by the wait function, outputs
    untouched."""
    dev.st.inject_async(COPY[dev.backend], 507011)
    symbols = np.ones((1, 9, 3), np.uint8)
    rc, msg, cdf = calculate_cdf(symbols, 4, on=dev)
    assert rc == klib.KVX_ERR_DEVICE and SYNC[dev.backend] in msg and "507011" in msg
    assert (cdf == 0xBEEF).all()


def test_failure_while_copying_back_says_outputs_may_be_partial(dev):
    """Encode stages cdf, symbols and streams in (three copies), then copies streams and lengths
    back: failing the fourth copy reports the error, and says the outputs may be partly written
    (here: streams came back, lengths did not)."""
    rng = np.random.default_rng(6)
    symbols = rng.integers(0, 15, (2, 20, 3), dtype=np.uint8)
    cdf = calculate_cdf(symbols, 16)[2]
    dev.st.inject(COPY[dev.backend], 100002, after=4)
    rc, msg, _streams, lengths = encode(cdf, symbols, 32, on=dev)
    assert rc == klib.KVX_ERR_DEVICE and COPY[dev.backend] in msg and "100002" in msg
    assert "partly written" in msg
    assert (lengths == -7).all()
    assert dev.st.calls(COPY[dev.backend]) == 5
    assert dev.st.sync(dev.handle) == 0


# ---------------------------------------------------------------- what stays unsupported


def test_rope_stays_unsupported_with_a_clear_message(dev):
    keys = np.zeros((2, 1, 4), np.float32)
    k = dev.put(keys)
    cache = np.zeros((8, 4), np.float32)
    c = dev.put(cache)
    pos = np.zeros(2, np.int64)
    t = kffi.new(
        "kvx_rope_tensor *",
        {
            "struct_size": kffi.sizeof("kvx_rope_tensor"),
            "dtype": klib.KVX_DTYPE_FLOAT32,
            "num_layers": 1,
            "num_heads": 1,
            "head_size": 4,
            "num_tokens": 2,
            "base": ptr(k),
            "token_stride": 4,
            "head_stride": 4,
        },
    )
    cc = kffi.new(
        "kvx_rope_cache *",
        {
            "struct_size": kffi.sizeof("kvx_rope_cache"),
            "dtype": klib.KVX_DTYPE_FLOAT32,
            "rot_dim": 4,
            "pairing": klib.KVX_ROPE_NEOX,
            "max_position": 8,
            "row_stride": 4,
            "cos_sin": ptr(c),
        },
    )
    rc = klib.kvx_rope_rerotate(t, cc, ptr(pos), ptr(pos), klib.KVX_DTYPE_INT64, dev.stream)
    assert rc == klib.KVX_ERR_UNSUPPORTED
    assert f"rope_rerotate: not supported by the {dev.backend} backend" in dsc.last_error()
    rc = klib.kvx_rope_apply(t, kffi.NULL, cc, ptr(pos), klib.KVX_DTYPE_INT64, dev.stream)
    assert rc == klib.KVX_ERR_UNSUPPORTED and f"the {dev.backend} backend" in dsc.last_error()
    assert dev.st.copies() == 0


def test_container_stays_host_only(dev):
    """kvx_codec_compress/decompress build and read the container in host memory: a device stream
    is refused up front (use the low-level entries, or copy the KV buffer to the host)."""
    kv = np.ones((2, 1, 4, 8), np.float32)
    d = kffi.new("kvx_dense_desc *")
    d.struct_size = kffi.sizeof("kvx_dense_desc")
    d.dtype, d.num_layers, d.num_kv, d.num_heads, d.head_size, d.num_tokens = (
        klib.KVX_DTYPE_FLOAT32,
        1,
        2,
        1,
        8,
        4,
    )
    d.base = ptr(dev.put(kv))
    d.kv_stride, d.layer_stride, d.token_stride, d.head_stride = 32, 32, 8, 8
    params = kffi.new("kvx_codec_params *")
    params.struct_size = kffi.sizeof("kvx_codec_params")
    bins = np.array([16], np.int32)
    params.key_bins = params.value_bins = ptr(bins, "int32_t *")
    params.chunk_tokens = 4
    out = np.zeros(4096, np.uint8)
    size = kffi.new("int64_t *")
    rc = klib.kvx_codec_compress(d, params, ptr(out), out.size, size, dev.stream)
    assert rc == klib.KVX_ERR_UNSUPPORTED and "host memory" in dsc.last_error()


def test_staging_blocks_are_reused_between_calls(dev, monkeypatch):
    """With the pool on, the second call of a similar size allocates no pinned memory, frees
    none, and still gives the CPU backend's bytes; turning the pool off frees on give-back."""
    monkeypatch.setenv("KVX_STAGING_POOL_BYTES", str(64 << 20))
    symbols = np.random.default_rng(8).integers(0, 15, (2, 40, 7), dtype=np.uint8)
    want = calculate_cdf(symbols, 16)
    same(calculate_cdf(symbols, 16, on=dev), want)  # allocates, then keeps the block
    allocated, freed = dev.st.calls(HOST_ALLOC[dev.backend]), dev.st.calls(HOST_FREE[dev.backend])
    same(calculate_cdf(symbols, 16, on=dev), want)
    assert (
        dev.st.calls(HOST_ALLOC[dev.backend]) == allocated
        and dev.st.calls(HOST_FREE[dev.backend]) == freed
    )
    monkeypatch.setenv("KVX_STAGING_POOL_BYTES", "0")
    same(calculate_cdf(symbols, 16, on=dev), want)  # the kept block stays kept; this one is freed
    assert dev.st.calls(HOST_FREE[dev.backend]) == freed + 1
