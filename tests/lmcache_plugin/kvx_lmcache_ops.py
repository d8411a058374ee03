"""The ops under test in LMCache's test process: what LMCache itself resolves for the CPU.

``LMCACHE_DEVICE_BACKEND=kvx_cpu`` in the environment makes LMCache pick kvx's device spec from
the ``lmcache.device_plugins`` entry points, so what ``resolve_device_ops("cpu")`` returns is
kvx's ops only when kvx is installed and registered. Anything else stops the run: LMCache's
tests would otherwise pass on LMCache's own ops and prove nothing about kvx.
"""

from __future__ import annotations

import functools

import pytest
from lmcache.v1.platform import resolve_device_ops
from lmcache.v1.platform.base.device_ops import DeviceOps

EXPECTED = "kvx.lmcache.device_ops.KvxCpuDeviceOps"


def qualified_name(cls: type) -> str:
    """``module.QualName`` of ``cls``, as reports print it."""
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def kvx_ops() -> DeviceOps:
    """LMCache's resolved CPU ops, checked to be kvx's (raises ``pytest.UsageError`` if not)."""
    ops = resolve_device_ops("cpu")
    names = {qualified_name(cls) for cls in type(ops).__mro__}
    if EXPECTED not in names:
        raise pytest.UsageError(
            f"LMCache resolved {qualified_name(type(ops))} for the CPU, not {EXPECTED}: "
            "is kvx installed (its lmcache.device_plugins entry points) and "
            "LMCACHE_DEVICE_BACKEND=kvx_cpu set?"
        )
    return ops
