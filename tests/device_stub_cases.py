"""Helpers for the Ascend and CNRT backend tests: building and loading the stub runtimes
(tests/stubs/), moving test tensors into stub "device" memory, and running ``kvx_transfer``
through ``kvx._native`` on a stub stream.

The stubs are built with the system C compiler into a per-user temporary directory (never
installed). Loading one into this process under its soname (``libascendcl.so`` / ``libcnrt.so``)
makes libkvx pick it up the way it picks up the copy torch_npu / torch_mlu loaded: through
``dlopen(..., RTLD_NOLOAD)``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import cffi
import kvx
import numpy as np
import pytest
import torch
import transfer_cases as tc
from kvx import layouts
from kvx._native import ffi as kffi
from kvx._native import lib as klib
from kvx._tensors import describe
from kvx.transfer import _dense_strides, _descriptors, resolve_paged

HERE = Path(__file__).resolve().parent
STUBS = HERE / "stubs"
SONAME = {"ascend": "libascendcl.so", "cnrt": "libcnrt.so"}
SOURCE = {"ascend": "acl_stub.c", "cnrt": "cnrt_stub.c"}
DEVICE_TYPE = {"ascend": 32, "cnrt": 33}
STORE, LOAD = int(kvx.Direction.PAGED_TO_DENSE), int(kvx.Direction.DENSE_TO_PAGED)

STUB_CDEF = """
void *stub_alloc(size_t size, int device);
int stub_free(void *device_ptr);
void *stub_host_alloc(size_t size);
int stub_host_free(void *ptr);
int stub_where(const void *ptr, int *device);
int stub_memcpy(void *dst, const void *src, size_t n);
void *stub_stream_create(int device);
int stub_stream_destroy(void *stream);
int stub_stream_sync(void *stream);
void stub_stream_pause(void *stream, int paused);
int stub_stream_step(void *stream, int tasks);
void stub_stream_delay_us(void *stream, int delay_us);
long stub_call_count(const char *function);
long stub_copy_count(void);
long stub_copy_bytes(void);
void stub_reset_counts(void);
void stub_inject(const char *function, int code, int times);
void stub_inject_after(const char *function, int code, int times, int after);
void stub_inject_async(const char *function, int code, int times);
void stub_clear_injections(void);
long stub_error_count(void);
const char *stub_error_message(void);
void stub_clear_errors(void);
"""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def needs_compiler(backend: str):
    """The module-level mark of every stub test: the stubs are built with the system compiler."""
    runtime = {"ascend": "AscendCL", "cnrt": "CNRT"}[backend]
    return pytest.mark.skipif(
        compiler() is None, reason=f"no C compiler to build the stub {runtime} runtime"
    )


def build_stub(backend: str, defines: tuple[str, ...] = ()) -> Path:
    """Builds (once per source/flags) the stub for `backend` and returns the .so path."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the stub runtimes")
    sources = [STUBS / SOURCE[backend], STUBS / "stub_common.c"]
    flags = [f"-D{d}" for d in defines]
    key = hashlib.sha256()
    for src in sources + [STUBS / "stub_common.h"]:
        key.update(src.read_bytes())
    key.update(" ".join([cc, *flags]).encode())
    out_dir = (
        Path(tempfile.gettempdir())
        / f"kvx-stubs-{os.getuid()}"
        / f"{backend}-{key.hexdigest()[:16]}"
    )
    out = out_dir / SONAME[backend]
    if not out.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{SONAME[backend]}.{os.getpid()}"
        cmd = [
            cc,
            "-std=gnu11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-shared",
            "-fPIC",
            "-pthread",
            "-fvisibility=hidden",
            "-Wl,-Bsymbolic",
            f"-Wl,-soname,{SONAME[backend]}",
            *flags,
            "-o",
            str(tmp),
            *map(str, sources),
        ]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(tmp, out)  # atomic: parallel test processes may race
    return out


class Stub:
    """One loaded stub runtime and its test-control API."""

    def __init__(self, backend: str, path: Path):
        self.backend = backend
        self.path = path
        self.ffi = cffi.FFI()
        self.ffi.cdef(STUB_CDEF)
        self.lib = self.ffi.dlopen(str(path))

    # memory
    def alloc(self, nbytes: int, device: int = 0) -> int:
        p = self.lib.stub_alloc(max(nbytes, 1), device)
        assert p != self.ffi.NULL
        return int(self.ffi.cast("uintptr_t", p))

    def free(self, ptr: int) -> None:
        assert self.lib.stub_free(self.ffi.cast("void *", ptr)) == 0

    def memcpy(self, dst: int, src: int, nbytes: int) -> None:
        assert (
            self.lib.stub_memcpy(self.ffi.cast("void *", dst), self.ffi.cast("void *", src), nbytes)
            == 0
        )

    def upload(self, t: torch.Tensor) -> int:
        """A device copy of the whole allocation behind `t` (padding included)."""
        start, end = describe(t, "t").storage
        dev = self.alloc(end - start)
        self.memcpy(dev, start, end - start)
        return dev

    # streams
    def stream(self, device: int = 0) -> int:
        return int(self.ffi.cast("uintptr_t", self.lib.stub_stream_create(device)))

    def sync(self, stream: int) -> int:
        return self.lib.stub_stream_sync(self.ffi.cast("void *", stream))

    def pause(self, stream: int, paused: bool) -> None:
        self.lib.stub_stream_pause(self.ffi.cast("void *", stream), int(paused))

    def step(self, stream: int, tasks: int = 1) -> int:
        """Runs the next `tasks` tasks of a paused stream and returns once they ran."""
        return self.lib.stub_stream_step(self.ffi.cast("void *", stream), tasks)

    def delay(self, stream: int, us: int) -> None:
        self.lib.stub_stream_delay_us(self.ffi.cast("void *", stream), us)

    # recording and injection
    def calls(self, name: str | None = None) -> int:
        return self.lib.stub_call_count(self.ffi.NULL if name is None else name.encode())

    def copies(self) -> int:
        return self.lib.stub_copy_count()

    def copied_bytes(self) -> int:
        return self.lib.stub_copy_bytes()

    def reset(self) -> None:
        self.lib.stub_reset_counts()
        self.lib.stub_clear_injections()
        self.lib.stub_clear_errors()

    def inject(self, name: str, code: int, times: int = 1, after: int = 0) -> None:
        """The next `times` calls of `name` after `after` successful ones return `code`."""
        self.lib.stub_inject_after(name.encode(), code, times, after)

    def inject_async(self, name: str, code: int, times: int = 1) -> None:
        self.lib.stub_inject_async(name.encode(), code, times)

    def errors(self) -> tuple[int, str]:
        return self.lib.stub_error_count(), self.ffi.string(self.lib.stub_error_message()).decode()


_loaded: dict[str, Stub] = {}


def stub(backend: str) -> Stub:
    """The full-featured stub for `backend`, loaded into this process once."""
    if backend not in _loaded:
        _loaded[backend] = Stub(backend, build_stub(backend))
    return _loaded[backend]


# ---------------------------------------------------------------- running a transfer on the stub


@dataclass
class DeviceCase:
    """A transfer staged in stub memory: descriptors pointing at device copies of the tensors."""

    stub: Stub
    backend: str
    paged_desc: object
    dense_desc: object
    bases: object
    uploads: list  # (device ptr, host start, nbytes) to copy back
    slots: torch.Tensor
    stream: object
    handle: int
    keep: list

    def run(self, direction: int) -> int:
        slots_ptr = kffi.cast("int64_t *", self.slots.data_ptr())
        return klib.kvx_transfer(
            self.paged_desc, self.dense_desc, slots_ptr, direction, self.stream
        )

    def synchronize(self) -> int:
        return klib.kvx_synchronize(self.stream)

    def download(self) -> None:
        for dev, start, nbytes in self.uploads:
            self.stub.memcpy(start, dev, nbytes)

    def release(self) -> None:
        for dev, _, _ in self.uploads:
            self.stub.free(dev)
        self.uploads = []


def stage(
    st: Stub,
    backend: str,
    layout_name: str,
    paged,
    dense: torch.Tensor,
    slots: torch.Tensor,
    fmt: str,
    dense_on_device: bool,
    handle: int | None = None,
) -> DeviceCase:
    """Uploads `paged` (and `dense` when dense_on_device) and builds kvx descriptors for them.
    The host tensors are the staging area: DeviceCase.download() copies device memory back."""
    cache = resolve_paged(paged, layout_name)
    uploads, dev_of = [], {}
    for info in cache.infos:
        start, end = info.storage
        if start not in dev_of:
            dev_of[start] = st.upload(info.obj)
            uploads.append((dev_of[start], start, end - start))

    def to_device(addr: int) -> int:
        for info in cache.infos:
            start, end = info.storage
            if start <= addr < end:
                return dev_of[start] + (addr - start)
        raise AssertionError(f"base {addr:#x} is in no paged tensor")

    info = describe(dense, "dense")
    strides = _dense_strides(info, layouts.dense_format(fmt), cache, slots.shape[0])
    base = info.ptr
    if dense_on_device:
        start, end = info.storage
        dev = st.upload(dense)
        uploads.append((dev, start, end - start))
        base = dev + (info.ptr - start)
    p, d, bases = _descriptors(
        cache, [to_device(b) for b in cache.bases()], base, strides, slots.shape[0]
    )

    handle = st.stream() if handle is None else handle
    stream = kffi.new("kvx_stream *")
    stream.device_type, stream.device_index = DEVICE_TYPE[backend], 0
    stream.handle = kffi.cast("void *", handle)
    slots = slots.contiguous()
    return DeviceCase(st, backend, p, d, bases, uploads, slots, stream, handle, [paged, dense])


def last_error() -> str:
    return kffi.string(klib.kvx_last_error()).decode()


def staged_transfer(
    backend: str,
    dense_on_device: bool = False,
    layout: str = "vllm_nhd",
    size: str = "blocks",
    seed: int = 7,
) -> tuple[Stub, DeviceCase]:
    """A transfer staged on the loaded stub, counters and injections reset."""
    st = stub(backend)
    paged, dense, slots, fmt = make_inputs(layout, size, seed)
    case = stage(st, backend, layout, paged, dense, slots, fmt, dense_on_device)
    st.reset()
    return st, case


def check_injected_error(
    st: Stub, case: DeviceCase, function: str, code: int, direction: int
) -> None:
    """A failure injected into `function` comes back as KVX_ERR_DEVICE naming it and the vendor
    code, leaves nothing queued that fails later, and the stub saw no misuse."""
    st.inject(function, code)
    rc = case.run(direction)
    msg = last_error()
    assert rc == klib.KVX_ERR_DEVICE, msg
    assert function in msg and str(code) in msg
    assert case.synchronize() == 0
    assert st.errors() == (0, "")
    case.release()


def check_out_of_range_slot_rejected(
    backend: str, index: int, copy_functions: tuple[str, ...]
) -> None:
    """A slot at or past the pool's capacity at slot_mapping[index] is rejected naming the entry,
    before any of `copy_functions` was called or anything ran on the stream."""
    st, case = staged_transfer(backend, dense_on_device=True, layout="vllm_nhd")
    cap = case.paged_desc.num_blocks * case.paged_desc.block_size
    case.slots[index] = cap + index % 3
    assert case.run(LOAD) == klib.KVX_ERR_INVALID_ARGUMENT
    msg = last_error()
    assert f"slot_mapping[{index % case.slots.numel()}]" in msg and str(cap + index % 3) in msg
    for name in copy_functions:
        assert st.calls(name) == 0, name
    assert case.synchronize() == 0 and st.copies() == 0
    case.release()


def check_slot_mapping_in_device_memory_rejected(backend: str) -> Stub:
    """The backends plan on the host: a slot mapping in device memory is an invalid argument."""
    st, case = staged_transfer(backend)
    dev = st.alloc(case.slots.numel() * 8)
    st.memcpy(dev, case.slots.data_ptr(), case.slots.numel() * 8)
    rc = klib.kvx_transfer(
        case.paged_desc, case.dense_desc, kffi.cast("int64_t *", dev), STORE, case.stream
    )
    assert rc == klib.KVX_ERR_INVALID_ARGUMENT
    assert "slot_mapping" in last_error() and "host" in last_error()
    st.free(dev)
    case.release()
    return st


# ---------------------------------------------------------------- finding the runtime

NO_RUNTIME = """
    from kvx._native import ffi, lib
    print(lib.kvx_backend_compiled({device_type}), lib.kvx_backend_available({device_type}))
    print(ffi.string(lib.kvx_last_error()).decode())
"""


def check_unavailable_without_runtime(backend: str) -> None:
    """Compiled in, not available, and the reason names the library and the backend."""
    r = run_python(NO_RUNTIME.format(device_type=DEVICE_TYPE[backend]), {"LD_LIBRARY_PATH": ""})
    assert r.returncode == 0, r.stderr
    flags, reason = r.stdout.splitlines()[:2]
    assert flags == "1 0"
    assert SONAME[backend] in reason and backend in reason


def check_loads_from_library_path(backend: str) -> None:
    """Not preloaded: found by a plain dlopen on LD_LIBRARY_PATH."""
    path = build_stub(backend)
    r = run_python(
        NO_RUNTIME.format(device_type=DEVICE_TYPE[backend]), {"LD_LIBRARY_PATH": str(path.parent)}
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1 1"


# ---------------------------------------------------------------- the plan-quality oracle


def expected_copies(case: DeviceCase, allow_2d: bool) -> int:
    return expected_plan(case, allow_2d)[0]


def _piece_starts(case: DeviceCase, runs: list, unit: str) -> list[tuple[int, int]]:
    """(paged address, dense address) of every 1D piece of the plan, plane-major."""
    p, d = case.paged_desc, case.dense_desc
    es = klib.kvx_dtype_size(p.dtype)
    base = int(kffi.cast("uintptr_t", d.base))
    starts = []
    for kv in range(p.num_kv):
        for layer in range(p.num_layers):
            index = layer if p.num_bases == p.num_layers else kv * p.num_layers + layer
            plane = int(kffi.cast("uintptr_t", p.bases[index])) + kv * p.kv_stride * es
            dense_plane = base + (kv * d.kv_stride + layer * d.layer_stride) * es
            for tok, slot, n in runs:
                for i in range(1 if unit == "run" else n):
                    block, offset = divmod(slot + i, p.block_size)
                    token = plane + (block * p.block_stride + offset * p.token_stride) * es
                    dense = dense_plane + (tok + i) * d.token_stride * es
                    for h in range(p.num_heads if unit == "head" else 1):
                        starts.append(
                            (token + h * p.head_stride * es, dense + h * d.head_stride * es)
                        )
    return starts


def expected_plan(case: DeviceCase, allow_2d: bool, d2d_alignment: int = 0) -> tuple[int, bool]:
    """(copies, whether 2D copies are used) libkvx should submit, from the documented planning
    rule (docs/design.md, src/core/transfer_plan.h): one per (plane, run) for whole-row runs, else
    one per token (and head when rows are split), or one 2D copy per (plane, run[, head]) where 2D
    copies exist.
    With d2d_alignment (AscendCL's on-chip copies between device buffers), a piece whose two ends
    are not both aligned goes through host memory: two copies instead of one."""
    p, d = case.paged_desc, case.dense_desc
    es = klib.kvx_dtype_size(p.dtype)
    row = p.num_heads * p.head_size

    def rows_contiguous(head_stride):
        return p.num_heads == 1 or head_stride == p.head_size

    if not rows_contiguous(p.head_stride) or not rows_contiguous(d.head_stride):
        unit, width = "head", p.head_size * es
    elif p.token_stride == row and d.token_stride == row:
        unit, width = "run", row * es
    else:
        unit, width = "row", row * es
    use_2d = (
        allow_2d and unit != "run" and p.token_stride * es >= width and d.token_stride * es >= width
    )
    merge = unit == "run" or use_2d
    runs = []  # [first token, first slot, count]
    for t, slot in enumerate(case.slots.tolist()):
        if slot < 0:
            continue
        if merge and runs:
            tok, first, n = runs[-1]
            last = first + n - 1
            adjacent = (
                last + 1
            ) % p.block_size != 0 or p.block_stride == p.block_size * p.token_stride
            if tok + n == t and slot == last + 1 and adjacent:
                runs[-1][2] += 1
                continue
        runs.append([t, slot, 1])
    pieces = p.num_heads if unit == "head" else 1
    per_plane = sum(1 if unit == "run" else (1 if use_2d else n) * pieces for _, _, n in runs)
    copies = p.num_kv * p.num_layers * per_plane
    if d2d_alignment and not use_2d:
        copies += sum(
            1 for a, b in _piece_starts(case, runs, unit) if a % d2d_alignment or b % d2d_alignment
        )
    return copies, use_2d


# ---------------------------------------------------------------- the matrix


LAYOUTS = sorted(layouts.PAGED_LAYOUTS)
SIZES = {
    # name: (geometry, dtype, tokens, pad_axis)
    "small": (
        tc.Geometry(layers=3, blocks=9, block_size=4, heads=3, head_size=8),
        torch.bfloat16,
        21,
        None,
    ),
    "odd": (
        tc.Geometry(layers=2, blocks=7, block_size=5, heads=3, head_size=7),
        torch.uint8,
        17,
        None,
    ),
    "padded": (
        tc.Geometry(layers=2, blocks=6, block_size=4, heads=2, head_size=6),
        torch.float16,
        13,
        "head",
    ),
    "blocks": (
        tc.Geometry(layers=2, blocks=12, block_size=16, heads=2, head_size=16),
        torch.float32,
        70,
        "block",
    ),
}


def over_the_matrix(test):
    """Parametrizes test(layout_name, size, direction, dense_on_device) over every paged layout x
    size x direction x dense buffer on host / on device."""
    marks = [
        pytest.mark.parametrize(
            "dense_on_device", [False, True], ids=["host-dense", "device-dense"]
        ),
        pytest.mark.parametrize("direction", ["store", "load"]),
        pytest.mark.parametrize("size", sorted(SIZES)),
        pytest.mark.parametrize("layout_name", LAYOUTS),
    ]
    for mark in marks:
        test = mark(test)
    return test


def dense_format(layout_name: str) -> str:
    return "MLA_1LTD" if tc.num_kv(layout_name) == 1 else "KV_2LTD"


def make_inputs(layout_name: str, size: str, seed: int):
    g, dtype, tokens, pad = SIZES[size]
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    fmt = dense_format(layout_name)
    paged = tc.make_paged(layout_name, g, dtype, gen, pad)
    dense = tc.make_dense(layout_name, g, tokens, dtype, gen, fmt)
    slots = tc.make_slots(tc.capacity(layout_name, g), g.block_size, tokens, rng)
    return paged, dense, slots, fmt


def check_against_reference(
    backend: str,
    layout_name: str,
    size: str,
    direction: str,
    dense_on_device: bool,
    seed: int = 11,
    before_run=None,
) -> DeviceCase:
    """Runs one transfer through the stub and compares every byte (padding included) with
    kvx.reference.transfer on the host. Returns the case for plan assertions. `before_run(stub)`
    runs after the stub's counters and injections were reset, right before kvx_transfer."""
    st = stub(backend)
    paged, dense, slots, fmt = make_inputs(layout_name, size, seed)
    kp, kd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
    rp, rd = tc.clone_paged(paged), tc.clone_keep_layout(dense)
    kvx.reference.transfer(rp, rd, slots, direction=direction, layout=layout_name, dense_format=fmt)
    case = stage(st, backend, layout_name, kp, kd, slots, fmt, dense_on_device)
    st.reset()
    if before_run:
        before_run(st)
    d = kvx.Direction.PAGED_TO_DENSE if direction == "store" else kvx.Direction.DENSE_TO_PAGED
    rc = case.run(int(d))
    assert rc == 0, last_error()
    assert case.synchronize() == 0, last_error()
    case.download()
    case.release()
    assert st.errors() == (0, ""), st.errors()
    assert tc.bits_equal(tc.whole(kd), tc.whole(rd)), "dense side differs from the reference"
    assert tc.paged_equal(kp, rp), "paged side differs from the reference"
    return case


def run_for_plan(
    backend: str, layout_name: str, size: str, direction: str, dense_on_device: bool, seed: int = 11
) -> DeviceCase:
    """Runs one transfer of the matrix through the stub, its counters reset first, for the plan
    assertions: which runtime calls and how many copies. The bytes it moves are checked by
    tests/test_conformance.py (every backend against kvx.reference); the stub must still record
    no misuse."""
    st = stub(backend)
    paged, dense, slots, fmt = make_inputs(layout_name, size, seed)
    case = stage(st, backend, layout_name, paged, dense, slots, fmt, dense_on_device)
    st.reset()
    d = kvx.Direction.PAGED_TO_DENSE if direction == "store" else kvx.Direction.DENSE_TO_PAGED
    assert case.run(int(d)) == 0, last_error()
    assert case.synchronize() == 0, last_error()
    case.release()
    assert st.errors() == (0, ""), st.errors()
    return case


# ---------------------------------------------------------------- subprocesses


def run_python(
    code: str, env_extra: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with this test environment (PYTHONPATH, KVX_LIBRARY);
    used where a test needs a different stub build or a process-wide state of its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [env.get("PYTHONPATH")]), *sys.path]
    )
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
