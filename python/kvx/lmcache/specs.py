"""LMCache device specs for the devices kvx drives, registered as ``lmcache.device_plugins``.

One spec per kvx backend, named ``kvx_<device>``. Each subclasses LMCache's own spec for its torch
device type where LMCache has one (CPU, CUDA, ROCm, Ascend NPU), so pinning, IPC wrappers, cache
contexts and streams stay LMCache's, and replaces only the ops (:mod:`kvx.lmcache.device_ops`).

Selection: ``LMCACHE_DEVICE_BACKEND=kvx_cpu`` (etc.) picks a spec explicitly. Without it a kvx
spec offers itself only for a device type LMCache has no spec of its own for (Cambricon ``mlu``),
so installing kvx never changes what an existing LMCache setup runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lmcache.v1.platform.base.device_spec import DeviceSpec
from lmcache.v1.platform.devices.cpu import CpuDeviceSpec
from lmcache.v1.platform.devices.cuda import CudaDeviceSpec
from lmcache.v1.platform.devices.npu import NpuDeviceSpec
from lmcache.v1.platform.devices.rocm import RocmDeviceSpec

from .. import _devices, _torch

if TYPE_CHECKING:
    from lmcache.v1.platform.base.device_ops import DeviceOps

BACKEND_ENV_VAR = "LMCACHE_DEVICE_BACKEND"


class _KvxSpec:
    """What every kvx spec adds to the LMCache spec it extends (mixed in first)."""

    kind: _devices.DeviceKind

    @property
    def backend_name(self) -> str:
        return backend_name(self.kind)

    @property
    def ops_cls(self) -> type[DeviceOps]:
        from .device_ops import ops_class

        return ops_class(self.kind)

    def is_available(self) -> bool:
        """Usable here (kvx's backend and torch's device module), and chosen: named by
        ``LMCACHE_DEVICE_BACKEND``, or the only spec for its device type."""
        chosen = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() == self.backend_name
        return (chosen or not _lmcache_has_spec(self.kind.torch_type)) and usable(self.kind)


def backend_name(kind: _devices.DeviceKind) -> str:
    """LMCache's backend name of kvx's spec for ``kind``: ``kvx_cpu``, ``kvx_cuda``, ..."""
    return "kvx_" + {"hip": "rocm", "ascend": "npu", "cnrt": "mlu"}.get(kind.name, kind.name)


def usable(kind: _devices.DeviceKind) -> bool:
    """Whether kvx's backend for ``kind`` runs here and torch has the device."""
    if kind is _devices.CPU:
        return True
    torch = _torch.imported()
    module = kind.torch_module(torch)
    if module is None or not module.is_available() or not kind.available():
        return False
    return _devices.by_torch_type(kind.torch_type, torch) is kind


def _lmcache_has_spec(device_type: str) -> bool:
    from lmcache.v1.platform._device_detect import _build_device_registry

    specs: Any = _build_device_registry().get(device_type, ())
    return any(type(spec).__module__.startswith("lmcache.") for spec in specs)


class KvxCpuDeviceSpec(_KvxSpec, CpuDeviceSpec):
    """LMCache's CPU device, with kvx's ops."""

    kind = _devices.CPU

    @property
    def torch_module_name(self) -> str:
        """``kvx_cpu``: LMCache's own CPU stand-in for a device module, attached to torch under
        that name. LMCache takes the selected backend's module as ``getattr(torch, name)``;
        ``torch.cpu`` would say a CPU "device" is available whose current device is the
        string ``"cpu"``, which LMCache's storage setup turns into the device ``"cpu:cpu"``."""
        import torch
        from lmcache.v1.platform.devices.cpu.stub_cpu_device import StubCPUDevice

        if not hasattr(torch, self.backend_name):
            setattr(torch, self.backend_name, StubCPUDevice("cpu"))
        return self.backend_name


class KvxCudaDeviceSpec(_KvxSpec, CudaDeviceSpec):
    """NVIDIA GPUs through kvx's CUDA backend."""

    kind = _devices.CUDA


class KvxRocmDeviceSpec(_KvxSpec, RocmDeviceSpec):
    """AMD and Hygon GPUs (torch's ROCm build, device type ``cuda``) through kvx's HIP backend."""

    kind = _devices.HIP


class KvxNpuDeviceSpec(_KvxSpec, NpuDeviceSpec):
    """Huawei Ascend NPUs through kvx's AscendCL backend."""

    kind = _devices.ASCEND


class KvxMluDeviceSpec(_KvxSpec, DeviceSpec):
    """Cambricon MLUs through kvx's CNRT backend (LMCache has no spec of its own for them)."""

    kind = _devices.CNRT

    @property
    def device_type(self) -> str:
        return self.kind.torch_type

    @property
    def torch_module_name(self) -> str:
        return self.kind.torch_type

    def get_stream_handle(self, stream: object) -> int:
        return int(getattr(stream, self.kind.stream_attribute or ""))


SPECS: tuple[type[DeviceSpec], ...] = (
    KvxCpuDeviceSpec,
    KvxCudaDeviceSpec,
    KvxRocmDeviceSpec,
    KvxNpuDeviceSpec,
    KvxMluDeviceSpec,
)
