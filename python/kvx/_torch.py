"""torch is optional, and slow to import (seconds): kvx imports it only when a call needs it.

A torch tensor can only reach kvx from a process that has imported torch, so checking whether
an argument is a tensor never needs the import; only functions that create tensors from nothing
(``kvx.codec.decode``, ``kvx.rope.build_cos_sin_cache``) import torch, on their first call.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


def imported() -> ModuleType | None:
    """torch if this process has imported it, else None (no import is attempted)."""
    return sys.modules.get("torch")


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def load() -> ModuleType | None:
    """torch, imported now if it is installed; None where it is not."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None
