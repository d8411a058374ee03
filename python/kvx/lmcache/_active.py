"""The device LMCache runs on, as kvx names it."""

from __future__ import annotations

from typing import Any

from .. import _devices, _torch


def kind() -> _devices.DeviceKind:
    """The kvx kind of LMCache's active device spec: the spec's own for a kvx spec, the CPU for
    LMCache's CPU and fallback specs, else by its torch device type."""
    from lmcache.v1.platform._device_detect import current_device_spec

    spec = current_device_spec()
    found = getattr(spec, "kind", None)
    if isinstance(found, _devices.DeviceKind):
        return found
    if spec.device_type in ("", "cpu"):
        return _devices.CPU
    return _devices.by_torch_type(spec.device_type, _torch.imported())


def device() -> Any:
    """``None`` for the CPU, else torch's current device of the active kind."""
    active = kind()
    if active is _devices.CPU:
        return None
    import torch

    module = active.torch_module(torch)
    return torch.device(active.torch_type, module.current_device())
