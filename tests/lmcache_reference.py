"""LMCache's own Python implementations, fetched from PyPI at test time (never copied here), to
compare kvx's LMCache-named functions with them.

The wheel of the LMCache release kvx is compatible with is downloaded once per user into the
temp dir. Only pure-torch functions are taken, by name, from their module's source: importing
the modules would pull in LMCache's native extension and dependencies.
"""

from __future__ import annotations

import ast
import zipfile
from collections.abc import Callable
from typing import Any

import pypi_wheels

LMCACHE_VERSION = "0.5.6"


def function(module_path: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """Function `name` of LMCache's `module_path`
    (e.g. "lmcache/v1/platform/torch_ops/pos_kernels.py"), compiled alone with `namespace` as its
    globals (e.g. {"torch": torch})."""
    with zipfile.ZipFile(
        pypi_wheels.wheel(f"lmcache=={LMCACHE_VERSION}", f"lmcache-{LMCACHE_VERSION}-*.whl")
    ) as wheel:
        source = wheel.read(module_path).decode()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            module = ast.Module(body=[node], type_ignores=[])
            scope = dict(namespace)
            exec(compile(module, f"lmcache-{LMCACHE_VERSION}/{module_path}", "exec"), scope)
            return scope[name]
    raise AssertionError(f"lmcache {LMCACHE_VERSION}: {module_path} has no function {name}")
