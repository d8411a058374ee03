"""pytest plugin for LMCache's test process: kvx's ops as a second backend of ``test_torch_ops.py``.

LMCache's file runs each scenario once per entry of its module-level ``_BACKEND_PARAMS`` (through
its module-scoped ``backend`` fixture), then ``test_2_compare`` checks every backend's results
against the first one's, LMCache's own torch ops (``cpu_py_ops``). Without CUDA that list has one
entry and nothing is compared. This plugin appends kvx's ops to that list and parametrizes the
fixture with it, so each scenario also runs on kvx and is compared with LMCache's results.

The per-test properties it adds land in ``--junitxml``, where ``tests/test_lmcache_suite.py``
reads them: ``backend`` and ``scenario`` (each scenario run), ``ops_under_test`` (kvx's runs),
``compared`` (the backends whose results a compare saw) and ``kvx_fallback`` (each op that went
to LMCache's torch version through kvx during the test).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

import pytest
from kvx.lmcache import _fallback
from kvx_lmcache_ops import kvx_ops, qualified_name

KVX_ID = "kvx_ops"
TORCH_OPS_FILE = "test_torch_ops.py"

# (op, reason) of each fallback call since the current test began; filled by the wrapper that
# pytest_configure puts over kvx's fallback hook. announced() alone tells only the first test
# that reaches a fallback, since kvx announces each one once per process.
_reached: set[tuple[str, str]] = set()


def _recording(torch_op: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    @functools.wraps(torch_op)
    def record(name: str, reason: str) -> Any:
        _reached.add((name, reason))
        return torch_op(name, reason)

    return record


def pytest_configure(config: pytest.Config) -> None:
    """Fails the run at once unless LMCache resolves kvx's ops; records fallback calls."""
    kvx_ops()
    _fallback.torch_op = _recording(_fallback.torch_op)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Adds kvx to the backends of LMCache's scenarios before pytest parametrizes them.

    A ``parametrize`` mark naming the fixture takes precedence over the fixture's own params
    (fixed when LMCache's module was imported), and the module's list is the one its compare
    test reads, so both see kvx."""
    if metafunc.definition.path.name != TORCH_OPS_FILE or "backend" not in metafunc.fixturenames:
        return
    params = metafunc.module._BACKEND_PARAMS
    if all(param.id != KVX_ID for param in params):
        params.append(pytest.param((KVX_ID, kvx_ops(), "cpu"), id=KVX_ID))
    metafunc.definition.add_marker(
        pytest.mark.parametrize("backend", list(params), indirect=True, scope="module")
    )


def _describe(item: pytest.Item) -> list[tuple[str, str]]:
    """The properties saying what a test of LMCache's scenario file ran on."""
    if item.path.name != TORCH_OPS_FILE or not isinstance(item, pytest.Function):
        return []
    params = item.callspec.params if hasattr(item, "callspec") else {}
    if "backend" in params:
        backend_id, ops, _ = params["backend"]
        props = [("backend", backend_id), ("scenario", params["name"])]
        return props + (
            [("ops_under_test", qualified_name(type(ops)))] if backend_id == KVX_ID else []
        )
    if "name" in params:  # a compare: which backends left results for it
        results = item.module._results
        return [("compared", bid) for name, bid in results if name == params["name"]]
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Records, on the test, what it ran on and which kvx ops fell back during it."""
    _reached.clear()
    before = set(_fallback.announced())
    try:
        return (yield)
    finally:
        reached = _reached | (set(_fallback.announced()) - before)
        item.user_properties += _describe(item)
        item.user_properties += [("kvx_fallback", f"{op}: {why}") for op, why in sorted(reached)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Says which ops were under test and every fallback kvx announced in this process."""
    write = terminalreporter.write_line
    terminalreporter.section("kvx as LMCache's ops")
    write(f"ops under test: {qualified_name(type(kvx_ops()))}")
    announced = _fallback.announced()
    write(f"LMCache torch versions reached through kvx: {len(announced)}")
    for op, reason in announced:
        write(f"  {op}: {reason}")
