"""Where the GPU tests run their kernels: on a CUDA/HIP device torch sees, or in host execution.

Host execution is a libkvx built with ``-Dgpu_host=enabled``: its cuda backend is the GPU
backend's own kernel sources compiled for the CPU (libkvx/src/gpu/host/), with device memory
being host memory. torch has no CUDA device then, so the tests' "device" tensors are CPU tensors
that kvx is told to treat as CUDA memory while a test runs them (:meth:`GpuTarget.running`):
inside that block every CPU tensor kvx is handed counts as ``cuda:0`` memory, except the ones
:meth:`GpuTarget.pinned` made, which count as pinned host memory. Outside it (where the tests
compute their CPU baselines) kvx sees CPU tensors as usual.

tests/test_gpu_host.py runs the GPU tests this way, under AddressSanitizer, with
``KVX_GPU_TARGET=host`` set; a GPU test takes the ``gpu`` fixture and skips when neither target
is there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import kvx
import pytest
import torch
from kvx import _devices, _tensors
from kvx._native import lib


def gpu_compiled() -> bool:
    return any(b.name in ("cuda", "hip") and b.compiled for b in kvx.backends())


def host_execution() -> bool:
    """Whether this run drives a host-execution libkvx (set by tests/test_gpu_host.py)."""
    return os.environ.get("KVX_GPU_TARGET") == "host"


def unavailable() -> str | None:
    """Why no GPU target is here, or None."""
    if not gpu_compiled():
        return "this libkvx was built without the GPU backend (-Dcuda/-Dhip/-Dgpu_host)"
    if host_execution():
        return None
    if not torch.cuda.is_available():
        return "torch sees no CUDA/HIP device (tests/test_gpu_host.py runs these in host execution)"
    return None


class GpuTarget:
    """A real CUDA/HIP device, through torch."""

    name = "device"
    device = "cuda"  # for torch factory functions: torch.zeros(..., device=gpu.device)

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of `t` in device memory."""
        return t.cuda()

    def pinned(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of `t` in pinned host memory."""
        return t.pin_memory()

    def back(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of `t` in ordinary host memory."""
        return t.cpu()

    def device_of(self, t: torch.Tensor) -> Any:
        """The device of `t`, a tensor put() made, for kvx's `device=` arguments."""
        return t.device

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The block in which kvx runs on this target."""
        yield

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """A stream other than the current one, ordered after it on entry and before it on
        exit, made current inside the block."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)


class HostExecution(GpuTarget):
    """The host-execution build's cuda backend, fed CPU tensors (see the module's docstring)."""

    name = "host"
    device = "cpu"
    STREAM = 0x5EED  # the handle kvx passes as "the current stream": any value does

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        # the storages pinned() made, by address; held, so that no other tensor gets an address
        # of theirs while the test runs
        self._pinned: dict[int, Any] = {}

    def put(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    def pinned(self, t: torch.Tensor) -> torch.Tensor:
        copy = t.clone()
        storage = copy.untyped_storage()
        self._pinned[storage.data_ptr()] = storage
        return copy

    def back(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    def device_of(self, t: torch.Tensor) -> Any:
        return "cuda:0"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        describe = _tensors._describe_torch
        stream_handle = _devices.DeviceKind.current_stream_handle
        pinned = self._pinned

        def on_device(x: Any, name: str) -> _tensors.ArrayInfo:
            info = describe(x, name)
            if info.device_type == lib.KVX_DEVICE_CPU:
                if x.untyped_storage().data_ptr() in pinned:
                    info.pinned = True
                else:
                    info.device_type = lib.KVX_DEVICE_CUDA
            return info

        def handle(kind: _devices.DeviceKind, torch_module: Any, index: int) -> int:
            if kind.kvx_type == lib.KVX_DEVICE_CUDA:
                return self.STREAM
            return stream_handle(kind, torch_module, index)

        with self._monkeypatch.context() as m:
            m.setattr(_tensors, "_describe_torch", on_device)
            m.setattr(_devices.DeviceKind, "current_stream_handle", handle)
            yield

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        yield  # every call completes before it returns: there is nothing to order


def target(monkeypatch: pytest.MonkeyPatch) -> GpuTarget:
    """The GPU target of this run; skips the test when there is none."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    return HostExecution(monkeypatch) if host_execution() else GpuTarget()


def run_on(gpu: GpuTarget, call: Callable[[], Any]) -> Any:
    """`call()` with kvx running on `gpu`."""
    with gpu.running():
        return call()
