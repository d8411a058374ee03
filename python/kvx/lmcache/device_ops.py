"""kvx's implementation of LMCache's ``DeviceOps`` surface.

Every op LMCache's torch baseline has is an attribute of :class:`KvxDeviceOps`: a function of
:mod:`.transfer_ops`, :mod:`.codec_ops`, :mod:`.rope_ops`, :mod:`.memory_ops` or
:mod:`.copy_ops` (same name, parameters and defaults as LMCache's), or, for the ops kvx does not
run, a forwarder to LMCache's torch version that says so once (:mod:`._fallback`).
:data:`FALLBACK_OPS` lists those with the reason.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import lmcache.lmcache_native as lmcache_native
from lmcache.v1.platform.base.device_ops import DeviceOps
from lmcache.v1.platform.devices.cpu.device_ops import CpuDeviceOps

from .. import _devices
from . import _fallback, codec_ops, copy_ops, memory_ops, rope_ops, transfer_ops

# Ops kvx leaves to LMCache, and why.
FALLBACK_OPS: dict[str, str] = {
    "alloc_shm_pinned_ptr": "shared-memory buffers stay LMCache's",
    "free_shm_pinned_ptr": "shared-memory buffers stay LMCache's",
    "record_completion_on_stream": "kvx records no stream callbacks yet",
    "drain_recorded_completions": "kvx records no stream callbacks yet",
    "record_event_on_stream": "kvx records no stream callbacks yet",
    "drain_recorded_events": "kvx records no stream callbacks yet",
    "get_gpu_pci_bus_id": "a device query, not a kernel",
}
_KVX_MODULES = (transfer_ops, codec_ops, rope_ops, memory_ops, copy_ops)


def _kvx_ops() -> dict[str, Any]:
    """Every op kvx runs: the public functions of its op modules, by name."""
    ops = {}
    for module in _KVX_MODULES:
        for name, value in vars(module).items():
            ours = getattr(value, "__module__", None) == module.__name__
            if callable(value) and ours and not name.startswith("_"):
                ops[name] = staticmethod(value)
    return ops


class KvxDeviceOps(DeviceOps):
    """LMCache's ops on libkvx, for any device kvx drives (torch tensors on that device)."""

    device_type: ClassVar[str] = ""

    def ensure_native(self) -> None:
        """Binds LMCache's native enums (``TransferDirection``, ``EngineKVFormat``), which
        LMCache's callers read from the ops; kvx's ops are bound at class creation."""
        if self._native_bound:
            return
        self.TransferDirection = lmcache_native.TransferDirection
        self.EngineKVFormat = self.GPUKVFormat = lmcache_native.EngineKVFormat
        self._native_bound = True


for _name, _op in _kvx_ops().items():
    setattr(KvxDeviceOps, _name, _op)
for _name, _reason in FALLBACK_OPS.items():
    setattr(KvxDeviceOps, _name, staticmethod(_fallback.delegating(_name, _reason)))


class KvxCpuDeviceOps(KvxDeviceOps, CpuDeviceOps):
    """:class:`KvxDeviceOps` on the CPU; host pointers become tensors as in LMCache's CPU ops."""

    device_type: ClassVar[str] = "cpu"


@functools.cache
def ops_class(kind: _devices.DeviceKind) -> type[KvxDeviceOps]:
    """The ops class for a kind of device (one per torch device type)."""
    if kind is _devices.CPU:
        return KvxCpuDeviceOps
    return type(
        f"Kvx{kind.name.capitalize()}DeviceOps",
        (KvxDeviceOps,),
        {"device_type": kind.torch_type, "__module__": __name__},
    )
