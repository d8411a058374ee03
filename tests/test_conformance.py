"""Every operation on every backend this machine reaches, against the CPU baseline
(tests/conformance_cases.py holds the cases and says what each backend must give).

Backends:

- ``cpu``: this process's CPU backend (transfer against ``kvx.reference``; for the codec and RoPE
  it is the baseline the others are compared with);
- ``cpu-<variant>``: the CPU kernels of another ``KVX_CPU_ISA`` instruction-set variant, in a
  fresh process (a variant is chosen once per process); skipped where this CPU cannot run it;
- ``gpu``: the CUDA/HIP backend on a device, or in host execution (tests/gpu_target.py):
  transfer with the dense buffer on the device and in pinned host memory, raw copies each way
  between them; skipped without a GPU build and a device torch sees, outside host execution;
- ``ascend`` / ``cnrt``: the runtime-loaded backends on the stub runtimes (tests/stubs/): transfer
  with the dense buffer in host and in device memory, the host-staged codec through the C ABI
  with every array in stub device memory, and RoPE, which those backends lack, through kvx.rope's
  fallback (the tensors' device simulated, the C backend answering "unsupported"), and raw
  copies each way between host and stub device memory through the C ABI.

One test runs one group of cases on one backend and names every case that differs. What stays
elsewhere is backend-specific behaviour: error paths, stream ordering, runtime failures, plans,
the staging pool (test_gpu_*.py, test_ascend_*.py, test_cnrt_*.py, test_staged_codec.py)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import conformance_cases as cc
import device_stub_cases as dsc
import gpu_target
import kvx
import pytest
import torch
import transfer_cases as tc
from kvx import rope
from kvx._native import ffi
from machine import isa_environment, isa_variants
from rope_cases import REL_TOL, expected_apply, expected_rerotate

TESTS = Path(__file__).resolve().parent
ISA_NAMES = ("baseline", "avx2", "avx512", "avx512bf16", "neon")
IN_PROCESS_ISA = kvx.cpu_kernels().split()[0].split("=", 1)[1]  # "rope=avx2 range_coder=avx2"
CPU_VARIANTS = [f"cpu-{name}" for name in ISA_NAMES if name != IN_PROCESS_ISA]
STUBS = ("ascend", "cnrt")

TRANSFER_BACKENDS = [
    "cpu",
    *CPU_VARIANTS,
    "gpu-device-dense",
    "gpu-pinned-dense",
    *(f"{s}-{where}-dense" for s in STUBS for where in ("host", "device")),
]
BACKENDS = [*CPU_VARIANTS, "gpu", *STUBS]
# where the two sides of a raw copy live (CPU variants run the same memcpy: not repeated)
COPY_KINDS = ("device-to-host", "host-to-device", "device-to-device")
COPY_BACKENDS = [f"{b}-{kind}" for b in ("gpu", *STUBS) for kind in COPY_KINDS]


def unavailable(backend: str) -> str | None:
    """Why `backend` cannot run on this machine, or None."""
    if backend.startswith("cpu-") and backend[4:] not in isa_variants():
        return f"this CPU cannot run the {backend[4:]} kernels"
    if backend.startswith("gpu"):
        return gpu_target.unavailable()
    stub = backend.split("-")[0]
    if stub in STUBS and dsc.compiler() is None:
        return f"no C compiler to build the stub {stub} runtime"
    return None


def params(op: str, backends: list[str]) -> list[Any]:
    """(group, backend) pairs: group-major, so that a group's expected results are computed once
    and used while at hand; the CPU variants last, so that their processes, started with the
    module, have finished by then."""
    first = [b for b in backends if b not in CPU_VARIANTS]
    last = [b for b in backends if b in CPU_VARIANTS]
    return [
        pytest.param(group, backend, id=f"{group}-{backend}")
        for part in (first, last)
        for group in cc.groups(op)
        for backend in part
    ]


def check_group(op: str, group: str, backend: str, run: Callable[[Any], str | None]) -> None:
    """Runs every case of the group (`run` returns where it differs, or None); fails naming them."""
    reason = unavailable(backend)
    if reason:
        pytest.skip(reason)
    failures = [
        f"{cc.case_id(case)}: {why}"
        for case in cc.groups(op)[group]
        if (why := run(case)) is not None
    ]
    assert not failures, f"{len(failures)} case(s) differ on {backend}:\n" + "\n".join(failures)


# ---------------------------------------------------------------- the baseline, once per case


_digests: dict[tuple[str, str], str] = {}


@lru_cache(maxsize=256)
def expected(op: str, name: str) -> cc.Outputs:
    """The reference transfer's bytes, or the CPU backend's result in this process."""
    case = next(c for c in cc.OPS[op][0] if cc.case_id(c) == name)
    out = cc.expected_transfer(case) if op == "transfer" else cc.OPS[op][1](case)
    _digests[op, name] = cc.digest(out)
    return out


def baseline(op: str, case: Any) -> cc.Outputs:
    return expected(op, cc.case_id(case))


def baseline_digest(op: str, case: Any) -> str:
    key = (op, cc.case_id(case))
    if key not in _digests:
        expected(op, key[1])
    return _digests[key]


# ---------------------------------------------------------------- CPU variants in fresh processes


class VariantRuns:
    """conformance_cases.py run under each KVX_CPU_ISA variant this test needs, all started at
    once (in the background while the other backends run) and read when first asked for."""

    def __init__(self, variants: set[str], folder: Path) -> None:
        self.procs: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
        self.results: dict[str, dict] = {}
        for name in sorted(variants):
            out, err = folder / f"{name}.json", folder / f"{name}.err"
            with open(out, "w") as o, open(err, "w") as e:
                proc = subprocess.Popen(
                    [sys.executable, str(TESTS / "conformance_cases.py")],
                    cwd=TESTS,
                    env=isa_environment(name),
                    stdout=o,
                    stderr=e,
                )
            self.procs[name] = (proc, out, err)

    def digests(self, name: str) -> dict[str, dict[str, str]]:
        if name not in self.results:
            import json

            proc, out, err = self.procs[name]
            assert proc.wait(timeout=600) == 0, err.read_text()[-4000:]
            self.results[name] = json.loads(out.read_text())
            kernels = self.results[name]["kernels"]
            assert kernels.startswith(f"rope={name} "), (
                f"KVX_CPU_ISA={name} did not take effect: {kernels}"
            )
        return self.results[name]["digests"]

    def close(self) -> None:
        for proc, _, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module", autouse=True)
def variant_runs(request, tmp_path_factory):
    """Starts the variant processes the selected tests will read, before the first test runs."""
    wanted = set()
    for item in request.session.items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        mine = item.module is sys.modules[__name__]
        if mine and backend in CPU_VARIANTS and unavailable(backend) is None:
            wanted.add(backend[4:])
    runs = VariantRuns(wanted, tmp_path_factory.mktemp("variants"))
    yield runs
    runs.close()


def variant_check(op: str, backend: str, runs: VariantRuns) -> Callable[[Any], str | None]:
    def run(case: Any) -> str | None:
        got = runs.digests(backend[4:])[op].get(cc.case_id(case))
        want = baseline_digest(op, case)
        return None if got == want else f"digest {got}, expected {want} (this process's result)"

    return run


# ---------------------------------------------------------------- GPU


def _on_device(t: torch.Tensor, place: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`t` moved by `place` with its strides and padding (the whole allocation comes along)."""
    return place(tc.whole(t)).as_strided(t.size(), t.stride(), t.storage_offset())


def _map_paged(paged: Any, place: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(paged, torch.Tensor):
        return _on_device(paged, place)
    return type(paged)(_map_paged(p, place) for p in paged)


def gpu_transfer(case: cc.TransferCase, gpu: gpu_target.GpuTarget, pinned: bool) -> cc.Outputs:
    paged, dense, slots, fmt = case.inputs()
    gpu_paged = _map_paged(paged, gpu.put)
    gpu_dense = _on_device(dense, gpu.pinned if pinned else gpu.put)
    gpu_slots = gpu.put(slots)
    with gpu.running():
        kvx.transfer(
            gpu_paged,
            gpu_dense,
            gpu_slots,
            direction=case.direction,
            layout=case.layout,
            dense_format=fmt,
        )
        kvx.synchronize(gpu_slots)
    return cc.transfer_outputs(_map_paged(gpu_paged, gpu.back), _on_device(gpu_dense, gpu.back))


def gpu_rope_difference(case: cc.RopeCase, want: cc.Outputs, got: cc.Outputs) -> str | None:
    """Bit for bit, except that a NaN need only be a NaN (GPUs do not carry payloads through
    arithmetic)."""
    for name in want:
        a = torch.from_numpy(want[name].copy()).view(case.dtype)
        b = torch.from_numpy(got[name].copy()).view(case.dtype)
        if not torch.equal(a.isnan(), b.isnan()):
            return f"{name}: NaNs at other places"
        finite = ~a.isnan()
        ints = {2: torch.int16, 4: torch.int32}[a.element_size()]
        differ = int((a[finite].view(ints) != b[finite].view(ints)).sum())
        if differ:
            return f"{name}: {differ} values differ"
    return None


# ---------------------------------------------------------------- stub runtimes


def stub_transfer(case: cc.TransferCase, backend: str, dense_on_device: bool) -> cc.Outputs:
    """The transfer with the paged tensors (and the dense buffer) copied into stub device memory,
    run on a stub stream through the C ABI, copied back; the stub must record no misuse."""
    st = dsc.stub(backend)
    paged, dense, slots, fmt = case.inputs()
    staged = dsc.stage(st, backend, case.layout, paged, dense, slots, fmt, dense_on_device)
    st.reset()
    store = case.direction == "store"
    direction = kvx.Direction.PAGED_TO_DENSE if store else kvx.Direction.DENSE_TO_PAGED
    assert staged.run(int(direction)) == 0, dsc.last_error()
    assert staged.synchronize() == 0, dsc.last_error()
    staged.download()
    staged.release()
    assert st.errors() == (0, ""), st.errors()
    return cc.transfer_outputs(paged, dense)


def stub_codec(case: cc.CodecCase, backend: str) -> cc.Outputs:
    from test_staged_codec import Device

    dev = Device(backend)
    try:
        return cc.run_codec_abi(case, on=dev)
    finally:
        dev.release()  # also asserts that the stub recorded no misuse


@pytest.fixture
def simulated_device(monkeypatch):
    """kvx.rope sees its (CPU) tensors as living on the stub backend's device: the device check
    answers that device and the stream is one of its type, so the C backend (its stub runtime
    loaded) answers "unsupported" and kvx.rope runs its fallback, as on the hardware."""

    def use(backend: str) -> None:
        dsc.stub(backend)
        device_type = dsc.DEVICE_TYPE[backend]

        def stream(device: tuple[int, int]) -> Any:
            s = ffi.new("kvx_stream *")
            s.device_type, s.device_index, s.handle = device[0], device[1], ffi.NULL
            return s

        monkeypatch.setattr(rope, "require_same_device", lambda infos: (device_type, 0))
        monkeypatch.setattr(rope, "current_stream", stream)

    return use


def _close(got: torch.Tensor, want64: torch.Tensor, dtype: torch.dtype) -> str | None:
    """Within the fallback's bound: float32 arithmetic and one rounding to `dtype`, relative to
    |expected| + the rms of the expected values (rope_cases.REL_TOL); NaNs where the oracle has
    them."""
    nan = want64.isnan()
    if not torch.equal(got.isnan(), nan):
        return "NaNs at other places than the float64 oracle's"
    got64, want64 = got.to(torch.float64).nan_to_num(0.0), want64.nan_to_num(0.0)
    count = max(int(want64.numel() - nan.sum()), 1)
    scale = want64.abs() + (want64.pow(2).sum() / count).sqrt()
    worst = ((got64 - want64).abs() / scale).max().item() if want64.numel() else 0.0
    return None if worst <= REL_TOL[dtype] else f"relative error {worst:.3g} > {REL_TOL[dtype]:.3g}"


def fallback_rope_difference(case: cc.RopeCase, got: cc.Outputs) -> str | None:
    """The rotated dims against the float64 oracle within the fallback's bound; every other byte
    (dims past rot_dim, the V plane) untouched."""
    a = case.inputs()
    kv = torch.from_numpy(got["keys"].copy()).view(case.dtype).reshape(a["kv"].shape)
    keys = kv[0].unflatten(-1, (case.heads, case.head)) if case.layers else kv
    outs = [("keys", keys, a["keys"])]
    if case.op == "apply":
        query = torch.from_numpy(got["query"].copy()).view(case.dtype).reshape(a["query"].shape)
        outs.append(("query", query, a["query"]))
    r = case.rot_dim
    for name, out, before in outs:
        if case.op == "rerotate":
            want = expected_rerotate(before, a["old"], a["new"], a["cache"], case.is_neox)
        else:
            want = expected_apply(before, a["new"], a["cache"], case.is_neox)
        if (why := _close(out[..., :r], want[..., :r], case.dtype)) is not None:
            return f"{name}: {why}"
        untouched = before[..., r:].contiguous().view(torch.uint8)
        if not torch.equal(out[..., r:].contiguous().view(torch.uint8), untouched):
            return f"{name}: dims past rot_dim changed"
    if case.layers and not torch.equal(kv[1].view(torch.uint8), a["kv"][1].view(torch.uint8)):
        return "the V plane changed"
    return None


# ---------------------------------------------------------------- the tests


def copy_ranges(case: cc.CopyCase, src: int, dst: int) -> tuple[list[int], list[int], list[int]]:
    _, _, src_off, dst_off, sizes = case.inputs()
    return [src + o for o in src_off], [dst + o for o in dst_off], sizes


def gpu_copy(case: cc.CopyCase, gpu: gpu_target.GpuTarget, kind: str) -> cc.Outputs:
    """kvx.copy_batch on torch's current CUDA/HIP stream; host memory is pinned."""
    src, dst, *_ = case.inputs()
    place = {"device": gpu.put, "host": gpu.pinned}
    on_src, on_dst = kind.split("-to-")
    s, d = place[on_src](torch.from_numpy(src)), place[on_dst](torch.from_numpy(dst))
    on_device = s if on_src == "device" else d
    with gpu.running():
        kvx.copy_batch(
            *copy_ranges(case, s.data_ptr(), d.data_ptr()), device=gpu.device_of(on_device)
        )
        kvx.synchronize(on_device)
    return {"dst": gpu.back(d).numpy()}


def stub_copy(case: cc.CopyCase, backend: str, kind: str) -> cc.Outputs:
    """kvx_copy_batch on a stub stream, device sides in stub device memory; the stub must record
    no misuse."""
    from test_copy import StubDevice

    dev = StubDevice(backend)
    src, dst, *_ = case.inputs()
    on_src, on_dst = kind.split("-to-")
    s = dev.put(src) if on_src == "device" else src.ctypes.data
    d = dev.put(dst) if on_dst == "device" else dst.ctypes.data
    try:
        rc, msg = dev.call(*copy_ranges(case, s, d))
        assert rc == 0, msg
        assert dev.sync() == 0, dsc.last_error()
        return {"dst": dev.get(d, dst.nbytes) if on_dst == "device" else dst}
    finally:
        dev.release()


@pytest.mark.parametrize("group,backend", params("transfer", TRANSFER_BACKENDS))
def test_transfer(group, backend, variant_runs, monkeypatch):
    """Store and load over one paged layout: every element size, odd rows, padded tokens, heads,
    blocks and dims, dense rows spaced apart, one-layer dense formats, -1 padding, block runs;
    byte-exact with kvx.reference, padding included."""
    if backend in CPU_VARIANTS:
        check_group("transfer", group, backend, variant_check("transfer", backend, variant_runs))
        return
    if backend == "cpu":
        run = cc.cpu_transfer
    elif backend.startswith("gpu"):
        gpu = gpu_target.target(monkeypatch)
        run = lambda case: gpu_transfer(case, gpu, pinned=backend == "gpu-pinned-dense")  # noqa: E731
    else:
        stub, where, _ = backend.split("-")
        run = lambda case: stub_transfer(case, stub, where == "device")  # noqa: E731
    check_group(
        "transfer",
        group,
        backend,
        lambda case: cc.first_difference(baseline("transfer", case), run(case)),
    )


@pytest.mark.parametrize("group,backend", params("codec", BACKENDS))
def test_codec(group, backend, variant_runs, monkeypatch):
    """CacheGen quantize, dequantize, calculate_cdf, encode, decode, prefix-sum decode and the
    container: LMCache's golden vectors, random data over many magnitudes, tiny scales, strided
    views, zero tokens, damaged streams; bit-exact with this process's CPU backend."""
    if backend in CPU_VARIANTS:
        check_group("codec", group, backend, variant_check("codec", backend, variant_runs))
        return
    cases = cc.groups("codec")[group]
    if backend in STUBS and any(c.op == "container" for c in cases):
        pytest.skip(
            f"the container is built and read in host memory: the {backend} backend "
            "refuses a device stream for it (test_staged_codec.py checks the refusal)"
        )
    if backend == "gpu" and any(c.abi_only for c in cases):
        pytest.skip(
            "kvx.codec.dequantize returns a new contiguous array: an output with gaps "
            "between rows is written through the C ABI alone, which this test drives in "
            "the stubs' memory only"
        )
    if backend == "gpu":
        gpu = gpu_target.target(monkeypatch)
        run = lambda case: gpu_target.run_on(  # noqa: E731
            gpu, lambda: cc.run_codec_api(case, gpu.device, on_gpu=True)
        )
    else:
        run = lambda case: stub_codec(case, backend)  # noqa: E731
    check_group(
        "codec",
        group,
        backend,
        lambda case: cc.first_difference(baseline("codec", case), run(case)),
    )


@pytest.mark.parametrize("group,backend", params("rope", BACKENDS))
def test_rope(group, backend, variant_runs, simulated_device, monkeypatch):
    """Re-rotation and application, NeoX and GPT-J, float32/float16/bfloat16 keys and caches,
    whole blocks, tails and partial rotary, denormal results, zero heads, NaN payloads, runs of
    positions, all layers of a KV_2LTD K plane, a million values per 16-bit dtype: the CPU's bits
    on every CPU variant and the GPU; within the documented bound on the fallback."""
    if backend in CPU_VARIANTS:
        check_group("rope", group, backend, variant_check("rope", backend, variant_runs))
        return
    if backend == "gpu":
        gpu = gpu_target.target(monkeypatch)

        def run(case: cc.RopeCase) -> str | None:
            want = baseline("rope", case)
            with gpu.running():
                got = case.run(rope.rerotate_keys, rope.apply_rotary, gpu.device, on_gpu=True)
            return gpu_rope_difference(case, want, got)
    else:

        def run(case: cc.RopeCase) -> str | None:
            with warnings.catch_warnings():
                # the fallback's notice: test_rope_fallback.py checks it
                warnings.simplefilter("ignore", RuntimeWarning)
                got = case.run(rope.rerotate_keys, rope.apply_rotary)
            return fallback_rope_difference(case, got)

        if unavailable(backend) is None:
            simulated_device(backend)
    check_group("rope", group, backend, run)


def test_the_tables_reach_every_op_and_layout():
    """The tables cover what the library promises to do alike everywhere."""
    from kvx import layouts

    assert {c.layout for c in cc.TRANSFER_CASES} == set(layouts.PAGED_LAYOUTS)
    assert {c.op for c in cc.CODEC_CASES} == {
        "quantize",
        "dequantize",
        "calculate_cdf",
        "encode",
        "decode",
        "decode_prefsum",
        "container",
    }
    assert {(c.op, c.is_neox, c.dtype) for c in cc.ROPE_CASES} == {
        (op, neox, dtype)
        for op in ("rerotate", "apply")
        for neox in (True, False)
        for dtype in cc.TORCH_DTYPES.values()
    }
    for cases, _ in cc.OPS.values():
        assert len({cc.case_id(c) for c in cases}) == len(cases)  # a case is found by its id


@pytest.mark.parametrize("group,backend", params("copy", COPY_BACKENDS))
def test_copy(group, backend, monkeypatch):
    """kvx_copy_batch: thousands of small ranges, single bytes, empty ranges, large odd-sized
    ones, from device to host memory, host to device and within a device: the CPU's bytes, the
    gaps between the destinations untouched."""
    where, kind = backend.split("-", 1)
    if where == "gpu":
        gpu = gpu_target.target(monkeypatch)
        run = lambda case: gpu_copy(case, gpu, kind)  # noqa: E731
    else:
        run = lambda case: stub_copy(case, where, kind)  # noqa: E731
    check_group(
        "copy", group, backend, lambda case: cc.first_difference(baseline("copy", case), run(case))
    )
