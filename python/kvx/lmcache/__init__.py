"""kvx as LMCache's device backend (``pip install 'kvx[lmcache]'``).

LMCache 0.5.x finds device backends through the ``lmcache.device_plugins`` entry points; kvx
registers one per kind of device it drives (:mod:`kvx.lmcache.specs`) and
``LMCACHE_DEVICE_BACKEND=kvx_cpu`` (or ``kvx_cuda``, ``kvx_rocm``, ``kvx_npu``, ``kvx_mlu``)
selects it. Its ops (:mod:`kvx.lmcache.device_ops`) take LMCache's arguments unchanged and run
on libkvx; the few kvx does not run fall back to LMCache's torch versions, logged once.

Importing this package does not import LMCache; its submodules do.
"""

from __future__ import annotations

# The LMCache release whose op surface and tests kvx is checked against.
LMCACHE_VERSION_TESTED = "0.5.6"


def plugin_status() -> str:
    """One line for ``kvx info``: the LMCache found (by its metadata, without importing it),
    kvx's registered backends, and the one ``LMCACHE_DEVICE_BACKEND`` selects."""
    import importlib.metadata as metadata
    import os

    names = sorted(
        ep.name
        for ep in metadata.entry_points(group="lmcache.device_plugins")
        if ep.value.startswith("kvx.")
    )
    plugin = f"kvx backends {', '.join(names)}" if names else "kvx's entry points not registered"
    try:
        found = f"LMCache {metadata.version('lmcache')}"
    except metadata.PackageNotFoundError:
        found = "LMCache not installed (pip install 'kvx[lmcache]')"
    selected = os.environ.get("LMCACHE_DEVICE_BACKEND", "").strip() or "unset"
    return (
        f"{found}; {plugin}; LMCACHE_DEVICE_BACKEND={selected} "
        f"(kvx is tested with LMCache {LMCACHE_VERSION_TESTED})"
    )
