"""Plan efficiency of the Ascend and CNRT backends, measured against the stub runtimes.

There is no NPU or MLU here, so this reports what libkvx asks of the runtime for the Llama-3-8B
shape (32 layers, 8 KV heads, head 128, bf16, block 16, 4096 tokens in random blocks of a pool
twice that size): copies per transfer, bytes per copy, runtime calls per transfer, and the host
time kvx_transfer takes (planning + handing the copies to the runtime; the stub's stream is held
paused meanwhile, so no copy runs during the timing), and the planning part of it alone. The bar:
planning under 1 ms per transfer.

Needs the repository checkout (the stubs are test code in tests/stubs, never installed) and a C
compiler. These backends are untested on real NPUs/MLUs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.device_plan`
    import common  # type: ignore[no-redef]

COPY_FUNCTIONS = {
    "ascend": (
        "aclrtMemcpyBatchAsyncV2",
        "aclrtMemcpyBatchAsync",
        "aclrtMemcpyAsync",
        "aclrtMemcpy2dAsync",
    ),
    "cnrt": ("cnrtMemcpyAsync_V3", "cnrtMemcpyAsync_V2", "cnrtMemcpyAsync", "cnrtMemcpy2DAsync"),
}


def _default_tests_dir() -> Path:
    """The checkout's tests/: beside bench/ when this file is the checkout's, else under the
    working directory (``python -m kvx bench device_plan`` from a checkout runs the installed
    copy of this file)."""
    beside = Path(__file__).resolve().parent.parent / "tests"
    return beside if (beside / "stubs").is_dir() else Path.cwd() / "tests"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench device_plan", description=__doc__.splitlines()[0]
    )
    common.add_kv_shape_args(parser, repeats=7)
    parser.add_argument(
        "--tests-dir",
        type=Path,
        default=_default_tests_dir(),
        help="the repository's tests/ (holds the stub runtimes); default: next to this file "
        "when run from a checkout, else ./tests",
    )
    return parser.parse_args(argv)


class _Shape:
    """Descriptors of one layout over device memory allocated from the stub."""

    def __init__(self, args, layout: str):
        self.L, self.H, self.D, self.BS, self.T = (
            args.layers,
            args.heads,
            args.head_size,
            args.block_size,
            args.tokens,
        )
        self.NB = -(-self.T * args.pool_factor // self.BS)
        self.layout = layout
        hd = self.H * self.D
        if layout == "vllm_nhd":  # [2, NB, BS, H, D] per layer
            self.strides = dict(block=self.BS * hd, token=hd, head=self.D)
        else:  # vllm_hnd: [2, NB, H, BS, D] per layer
            self.strides = dict(block=self.BS * hd, token=self.D, head=self.BS * self.D)
        self.kv_stride = self.NB * self.BS * hd
        self.layer_bytes = 2 * self.kv_stride * 2  # bf16


def _descriptors(kffi, shape: _Shape, bases: list[int], dense_base: int):
    L, H, D, T = shape.L, shape.H, shape.D, shape.T
    cbases = kffi.new("void *[]", [kffi.cast("void *", b) for b in bases])
    p = kffi.new("kvx_paged_desc *")
    p.struct_size = kffi.sizeof("kvx_paged_desc")
    p.dtype, p.num_layers, p.num_kv, p.num_heads, p.head_size = (
        3,
        L,
        2,
        H,
        D,
    )  # 3 = KVX_DTYPE_BFLOAT16
    p.num_bases, p.bases = L, cbases
    p.block_size, p.num_blocks = shape.BS, shape.NB
    p.kv_stride, p.block_stride = shape.kv_stride, shape.strides["block"]
    p.token_stride, p.head_stride = shape.strides["token"], shape.strides["head"]
    d = kffi.new("kvx_dense_desc *")  # KV_2LTD [2, L, T, H*D]
    d.struct_size = kffi.sizeof("kvx_dense_desc")
    d.dtype, d.num_layers, d.num_kv, d.num_heads, d.head_size, d.num_tokens = 3, L, 2, H, D, T
    d.base = kffi.cast("void *", dense_base)
    d.kv_stride, d.layer_stride, d.token_stride, d.head_stride = L * T * H * D, T * H * D, H * D, D
    return p, d, cbases


def _measure(
    st, kffi, klib, p, d, slots, direction: int, stream, handle: int, repeats: int, backend: str
):
    times, calls, copies, nbytes, used = [], [], [], [], set()
    slots_ptr = kffi.cast("int64_t *", slots.ctypes.data)
    for i in range(repeats + 1):
        st.reset()
        st.pause(handle, True)
        start = time.perf_counter()
        rc = klib.kvx_transfer(p, d, slots_ptr, direction, stream)
        elapsed = time.perf_counter() - start
        n_calls = st.calls()
        used |= {f for f in COPY_FUNCTIONS[backend] if st.calls(f)}
        st.pause(handle, False)
        if rc != 0 or klib.kvx_synchronize(stream) != 0:
            raise RuntimeError(kffi.string(klib.kvx_last_error()).decode())
        if st.errors()[0]:
            raise RuntimeError(f"stub error: {st.errors()[1]}")
        if i:  # the first run warms up (event creation, page faults)
            times.append(elapsed)
            calls.append(n_calls)
            copies.append(st.copies())
            nbytes.append(st.copied_bytes())
    return (
        statistics.median(times),
        statistics.median(calls),
        statistics.median(copies),
        statistics.median(nbytes),
        used,
    )


def _plan_only(
    st, kffi, klib, p, d, slots, direction: int, stream, repeats: int, backend: str
) -> float:
    """kvx_transfer's time when the runtime refuses the first copy: the host-side checks and
    planning, without the submission (one failing call, nothing enqueued)."""
    slots_ptr = kffi.cast("int64_t *", slots.ctypes.data)
    times = []
    for i in range(repeats + 1):
        st.reset()
        for f in COPY_FUNCTIONS[backend]:
            st.inject(f, 507000)
        start = time.perf_counter()
        rc = klib.kvx_transfer(p, d, slots_ptr, direction, stream)
        elapsed = time.perf_counter() - start
        if rc != klib.KVX_ERR_DEVICE:
            raise RuntimeError(f"expected the injected failure, got {rc}")
        if i:
            times.append(elapsed)
    st.reset()
    return statistics.median(times)


def run(argv: list[str]) -> int:
    args = _parse(argv)
    if not (args.tests_dir / "stubs" / "stub_common.c").exists():
        print(
            f"device_plan: the stub runtimes are test code and need the repository checkout "
            f"({args.tests_dir}/stubs not found: run it from the checkout's top folder, "
            "or pass --tests-dir)"
        )
        return 2
    sys.path.insert(0, str(args.tests_dir))
    import device_stub_cases as dsc  # builds and loads the stubs
    import numpy as np
    from kvx._native import ffi as kffi
    from kvx._native import lib as klib

    if dsc.compiler() is None:
        print("device_plan: no C compiler to build the stub runtimes")
        return 2
    rng = np.random.default_rng(0)
    rows, cases = (
        [],
        [
            (b, lay, dev)
            for b in ("ascend", "cnrt")
            for lay in ("vllm_nhd", "vllm_hnd")
            for dev in (False, True)
        ],
    )
    progress = common.Progress(len(cases) * 2, "device_plan")
    for backend, layout in sorted({(b, lay) for b, lay, _ in cases}):
        st = dsc.stub(backend)
        shape = _Shape(args, layout)
        bases = [st.alloc(shape.layer_bytes) for _ in range(shape.L)]
        dense_bytes = 2 * shape.L * shape.T * shape.H * shape.D * 2
        host_dense = st.lib.stub_host_alloc(
            dense_bytes
        )  # pinned host memory, as an engine's offload buffer
        dev_dense = st.alloc(dense_bytes)
        needed = -(-shape.T // shape.BS)
        blocks = rng.permutation(shape.NB)[:needed]
        slots = (
            (blocks[:, None] * shape.BS + np.arange(shape.BS)[None, :])
            .reshape(-1)[: shape.T]
            .astype(np.int64)
        )
        slots = np.ascontiguousarray(slots)
        handle = st.stream()
        stream = kffi.new("kvx_stream *")
        stream.device_type, stream.device_index = dsc.DEVICE_TYPE[backend], 0
        stream.handle = kffi.cast("void *", handle)
        for dense_on_device in (False, True):
            base = dev_dense if dense_on_device else int(st.ffi.cast("uintptr_t", host_dense))
            p, d, keep = _descriptors(kffi, shape, bases, base)
            for direction, name in ((0, "store"), (1, "load")):
                t, calls, copies, nbytes, used = _measure(
                    st, kffi, klib, p, d, slots, direction, stream, handle, args.repeats, backend
                )
                plan = _plan_only(
                    st, kffi, klib, p, d, slots, direction, stream, args.repeats, backend
                )
                rows.append(
                    [
                        backend,
                        layout,
                        "device" if dense_on_device else "host",
                        name,
                        "+".join(sorted(used)),
                        f"{copies:.0f}",
                        f"{nbytes / max(copies, 1):.0f}",
                        f"{calls:.0f}",
                        f"{plan * 1e6:.0f}",
                        f"{t * 1e6:.0f}",
                    ]
                )
                progress.step(f"{backend} {layout} {name}")
            del keep
        for b in bases:
            st.free(b)
        st.free(dev_dense)
        st.lib.stub_host_free(host_dense)
    common.print_machine()
    print(
        f"\nKV transfer plans on the stub runtimes: {args.layers} layers x 2 x "
        f"{args.tokens} tokens x "
        f"{args.heads} heads x {args.head_size} (bf16), block {args.block_size}, random blocks; "
        f"median of {args.repeats}"
    )
    print(
        common.format_table(
            [
                "backend",
                "layout",
                "dense",
                "dir",
                "runtime API",
                "copies/transfer",
                "bytes/copy",
                "runtime calls/transfer",
                "plan us",
                "plan+submit us",
            ],
            rows,
        )
    )
    print(
        "plan us: host time of kvx_transfer up to the first copy call (checks + planning), "
        "the runtime refusing it;"
    )
    print(
        "plan+submit us: host time of kvx_transfer with the stream paused "
        "(planning plus every call into the stub)."
    )
    print(
        "These backends are untested on real NPUs/MLUs: these numbers describe the plan, "
        "not the hardware."
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
