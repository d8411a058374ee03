"""LMCache's own torch versions of the ops (or cases of an op) kvx does not run, called visibly:
the first call of each (op, reason) logs a warning saying which and why. Other detours (an op
that waits where the device cannot be asked) are announced the same way."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kvx.lmcache")
_announced: set[tuple[str, str]] = set()
_lock = threading.Lock()


def announce(name: str, reason: str, route: str = "runs LMCache's torch version") -> None:
    """Says once per process and (op, reason), as a warning, that op ``name`` takes ``route``
    instead of kvx's usual one, and ``reason`` why."""
    with _lock:
        first = (name, reason) not in _announced
        _announced.add((name, reason))
    if first:
        log.warning("kvx: %s %s: %s", name, route, reason)


def torch_op(name: str, reason: str) -> Callable[..., Any]:
    """LMCache's torch version of op ``name`` (from ``lmcache.v1.platform.torch_ops``), announced
    once per process with ``reason`` (why kvx does not run this call)."""
    from lmcache.v1.platform import torch_ops

    announce(name, reason)
    return getattr(torch_ops, name)


def delegating(name: str, reason: str) -> Callable[..., Any]:
    """An op of kvx's DeviceOps that always forwards to LMCache's torch version of ``name``
    (``reason`` says why), with that version's signature, so callers and LMCache's parity test
    see the same parameters."""
    from lmcache.v1.platform import torch_ops

    target = getattr(torch_ops, name)

    def op(*args: Any, **kwargs: Any) -> Any:
        return torch_op(name, reason)(*args, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
    op.__doc__ = f"LMCache's torch version, announced once: {reason}."
    return op


def announced() -> list[tuple[str, str]]:
    """The (op, reason) pairs that fell back in this process so far."""
    with _lock:
        return sorted(_announced)
