"""pytest plugin for LMCache's test process: kvx's ops stand in for ``lmcache.cuda_ops``.

LMCache's ``test_cuda_ops_parity.py`` checks that every op its compiled CUDA module and its torch
ops both have takes the same parameter names, count and defaults, and that their enums and
descriptor types agree; without CUDA that module does not import and every test skips. While
that file is collected, ``import lmcache.cuda_ops`` gets a module holding kvx's ops instead, so
the same checks hold kvx's ops to LMCache's torch ops.

The module is named ``kvx.lmcache`` because the test keeps only the functions whose
``__module__`` starts with the module's name, and kvx's ops live in ``kvx.lmcache.*`` modules.
An op kvx's class merely inherited from LMCache's ``DeviceOps`` would be LMCache's method and
drop out there unchecked, so the coverage test's JUnit entry lists, as properties, the ops the
module offers as kvx's (``kvx_op``) and any that are not (``not_kvx_op``).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Generator

import lmcache
import pytest
from kvx_lmcache_ops import kvx_ops
from lmcache.v1.platform import torch_ops
from lmcache.v1.platform.base.device_ops import DeviceOps

PARITY_FILE = "test_cuda_ops_parity.py"
COVERAGE_TEST = "test_all_cuda_ops_callables_have_fallback"
MODULE = "lmcache.cuda_ops"  # what the parity file imports
NAME = "kvx.lmcache"  # what the module standing in for it is called
# The types the parity test compares besides the ops: enums and the descriptor class.
TYPES = ("TransferDirection", "EngineKVFormat", "PageBufferShapeDesc")


def op_names() -> list[str]:
    """The public ops of LMCache's ``DeviceOps`` that its torch ops have too."""
    public = {name for name in dir(DeviceOps) if not name.startswith("_")}
    return sorted(public & set(dir(torch_ops)) - set(TYPES))


def kvx_module() -> types.ModuleType:
    """A module named ``kvx.lmcache`` whose attributes are kvx's ops (:func:`op_names`) and
    types, as the ops instance gives them."""
    ops = kvx_ops()
    module = types.ModuleType(NAME, "kvx's ops, under LMCache's CUDA ops' name")
    for name in op_names() + list(TYPES):
        if hasattr(ops, name):
            setattr(module, name, getattr(ops, name))
    return module


def _origins() -> list[tuple[str, str]]:
    """``kvx_op``/``not_kvx_op`` properties: which ops the module offers as kvx's."""
    ops = kvx_ops()
    props = []
    for name in op_names():
        where = getattr(getattr(ops, name, None), "__module__", None) or "missing"
        ours = where == NAME or where.startswith(NAME + ".")
        props.append(("kvx_op", name) if ours else ("not_kvx_op", f"{name} ({where})"))
    return props


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lists on LMCache's coverage test the ops it was offered as kvx's, and any others."""
    for item in items:
        if item.path.name == PARITY_FILE and item.name == COVERAGE_TEST:
            item.user_properties += _origins()


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    """Puts kvx's module under ``lmcache.cuda_ops`` while LMCache's parity file is imported
    (it binds the module then), and only then, so no other test sees it."""
    if not (isinstance(collector, pytest.Module) and collector.path.name == PARITY_FILE):
        return (yield)
    saved = sys.modules.get(MODULE)
    sys.modules[MODULE] = lmcache.cuda_ops = kvx_module()
    try:
        return (yield)
    finally:
        if saved is None:
            del sys.modules[MODULE], lmcache.cuda_ops
        else:
            sys.modules[MODULE] = lmcache.cuda_ops = saved
