"""KV transfer on a CUDA/HIP GPU, where it differs from the other backends: out-of-range slots
reported by kvx.synchronize, and ordering on a side stream. Every layout, direction and dtype
against kvx.reference, with the dense buffer on the device and in pinned host memory, is in
tests/test_conformance.py. Runs on a GPU or in host execution (tests/gpu_target.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import kvx
import pytest
import torch
from concurrency import failures_in_threads


def test_out_of_range_slot_is_skipped_and_reported(gpu):
    caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16, device=gpu.device)]
    dense = torch.ones(2, 1, 3, 16, dtype=torch.float16, device=gpu.device)
    slots = gpu.put(torch.tensor([1, 99, 2], dtype=torch.int64))
    with gpu.running():
        kvx.load(caches, dense, slots)
        with pytest.raises(
            kvx.InvalidArgumentError, match=r"slot_mapping\[1\]: slot 99 is out of range"
        ):
            kvx.synchronize(dense)
        kvx.synchronize(dense)  # the error was consumed
    assert int(caches[0].count_nonzero()) == 2 * 2 * 2 * 8  # tokens 0 and 2 landed, nothing else


def test_runs_on_the_current_stream(gpu):
    caches = [gpu.put(torch.randn(2, 64, 16, 8, 128).to(torch.bfloat16)) for _ in range(4)]
    slots = gpu.put(torch.arange(1000, dtype=torch.int64))
    dense = torch.empty(2, 4, 1000, 1024, dtype=torch.bfloat16, device=gpu.device)
    with gpu.running(), gpu.side_stream():
        kvx.store(caches, dense, slots)
        copy = dense.clone()  # ordered after the transfer on the same stream
    expected = torch.empty(dense.shape, dtype=dense.dtype)
    kvx.reference.transfer(
        [gpu.back(c) for c in caches], expected, gpu.back(slots), direction="store"
    )
    assert torch.equal(gpu.back(copy).view(torch.int16), expected.view(torch.int16))


def test_errors_from_concurrent_streams_are_reported_whole(gpu):
    """Threads on streams of their own each skip a bad slot of their own (index i, slot
    1000 + i) and synchronize, all at once, so kernels record while others read and clear. The
    device keeps the first error since the last check; whichever thread reads it must get that
    error whole, never the index of one with the slot of another, and once all are done nothing
    is left over. (A race that tears a record shows here only when the threads happen to meet
    inside it: the protocol's argument is in libkvx/src/gpu/device.cu.)"""
    threads, rounds = 4, 25
    caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16, device=gpu.device)]
    reported: list[tuple[int, int]] = []

    def work(i: int) -> None:
        dense = torch.ones(2, 1, threads, 16, dtype=torch.float16, device=gpu.device)
        slots = gpu.put(torch.full((threads,), -1, dtype=torch.int64))
        slots[i] = 1000 + i
        for _ in range(rounds):
            with gpu.side_stream():
                kvx.load(caches, dense, slots)
                try:
                    kvx.synchronize(dense)
                except kvx.InvalidArgumentError as error:
                    index, slot = re.search(
                        r"slot_mapping\[(\d+)\]: slot (\d+)", str(error)
                    ).groups()
                    reported.append((int(index), int(slot)))

    with gpu.running():
        assert failures_in_threads(work, range(threads)) == []
        kvx.synchronize(caches[0])  # nothing left: every published error was read once
    assert reported, "no error was reported at all"
    assert all(slot == 1000 + index for index, slot in reported), reported


CAPTURE = """
import kvx, torch
caches = [torch.zeros(2, 16, 16, 8, 128, dtype=torch.bfloat16, device="cuda")]
dense = torch.ones(2, 1, 64, 1024, dtype=torch.bfloat16, device="cuda")
slots = torch.arange(64, device="cuda")
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):  # kvx's first call in this process: the device is set up here
    kvx.load(caches, dense, slots)
graph.replay()
torch.cuda.synchronize()
kvx.synchronize(dense)
assert int(caches[0].count_nonzero()) == 2 * 64 * 1024
print("captured")
"""


def test_first_call_can_be_captured_in_a_cuda_graph(gpu):
    """Setting a device up (the kernel-image check, the error record) happens inside a capture
    without breaking it: no stream-0 work, the thread in relaxed capture mode meanwhile."""
    if gpu.name == "host":
        pytest.skip("host execution has no CUDA graphs: this needs a GPU")
    out = subprocess.run([sys.executable, "-c", CAPTURE], capture_output=True, text=True)
    assert out.returncode == 0 and "captured" in out.stdout, out.stderr[-4000:]


NO_IMAGE = """
import kvx, torch, gpu_target, pytest
state = {b.name: b for b in kvx.backends()}["cuda"]
print(state.available, state.reason)
gpu = gpu_target.HostExecution(pytest.MonkeyPatch())
caches = [torch.zeros(2, 4, 4, 2, 8, dtype=torch.float16)]
with gpu.running():
    try:
        kvx.load(caches, torch.ones(2, 1, 3, 16, dtype=torch.float16), torch.arange(3))
    except kvx.NotAvailableError as error:
        print("refused:", error)
"""


def test_a_device_without_a_kernel_image_is_unavailable(gpu):
    """A GPU this build has no code for: unavailable with the reason, and an op refused with
    it, never a failed launch (host execution plays such a device)."""
    if gpu.name != "host":
        pytest.skip("needs a GPU this build lacks code for; host execution plays one")
    out = subprocess.run(
        [sys.executable, "-c", NO_IMAGE],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        env=dict(os.environ, KVX_GPU_HOST_NO_IMAGE="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    availability, refusal = out.stdout.splitlines()
    assert availability.startswith("False cuda: device 0 (host execution, host00)"), availability
    assert "has no kernel image in this build" in availability
    assert refusal.startswith("refused: cuda: device 0"), refusal
