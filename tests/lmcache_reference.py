"""LMCache's own Python implementations, fetched from PyPI at test time (never copied here), to
compare kvx's LMCache-named functions with them.

The wheel of the LMCache release kvx is compatible with is downloaded once per user into the
temp dir. Only pure-torch functions are taken, by name, from their module's source: importing
the modules would pull in LMCache's native extension and dependencies.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

LMCACHE_VERSION = "0.5.6"


def _wheel() -> Path:
    cache = Path(tempfile.gettempdir()) / f"kvx-lmcache-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    found = sorted(cache.glob(f"lmcache-{LMCACHE_VERSION}-*.whl"))
    if found:
        return found[-1]
    cmd = [sys.executable, "-m", "pip", "download", f"lmcache=={LMCACHE_VERSION}", "--no-deps",
           "--only-binary=:all:", "-d", str(cache)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download lmcache=={LMCACHE_VERSION} timed out (network too slow or blocked)")
    found = sorted(cache.glob(f"lmcache-{LMCACHE_VERSION}-*.whl"))
    if result.returncode != 0 or not found:
        pytest.skip(f"cannot download lmcache=={LMCACHE_VERSION} from PyPI: {result.stderr.strip()[-300:]}")
    return found[-1]


def function(module_path: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """Function `name` of LMCache's `module_path` (e.g. "lmcache/v1/platform/torch_ops/pos_kernels.py"),
    compiled alone with `namespace` as its globals (e.g. {"torch": torch})."""
    with zipfile.ZipFile(_wheel()) as wheel:
        source = wheel.read(module_path).decode()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            module = ast.Module(body=[node], type_ignores=[])
            scope = dict(namespace)
            exec(compile(module, f"lmcache-{LMCACHE_VERSION}/{module_path}", "exec"), scope)  # noqa: S102
            return scope[name]
    raise AssertionError(f"lmcache {LMCACHE_VERSION}: {module_path} has no function {name}")
