"""LMCache's own tests of its device ops, run with kvx as the ops under test.

LMCache 0.5.6's ``tests/v1/test_torch_ops.py`` (every op scenario, results compared across
backends) and ``tests/v1/test_cuda_ops_parity.py`` (op names, parameters and defaults against
its torch ops) run unmodified in a subprocess, from a copy of LMCache's source distribution,
with ``LMCACHE_DEVICE_BACKEND=kvx_cpu``: LMCache finds kvx through its entry points, as a user's
setup would. The plugins in ``tests/lmcache_plugin/`` put kvx's ops under both files (their
docstrings say how) and record, in the JUnit report read here, what each test ran on and which
ops fell back to LMCache's torch versions through kvx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import lmcache_env
import pytest

PLUGINS_DIR = Path(__file__).parent / "lmcache_plugin"
PLUGINS = ["kvx_lmcache_no_cudart", "kvx_lmcache_backend", "kvx_lmcache_cuda_ops"]
TORCH_OPS = "tests/v1/test_torch_ops.py"
PARITY = "tests/v1/test_cuda_ops_parity.py"
KVX_OPS = "kvx.lmcache.device_ops.KvxCpuDeviceOps"
KVX_BACKEND = "kvx_ops"
LMCACHE_BACKEND = "cpu_py_ops"
# Below this file's per-test timeout (pyproject.toml), so a hang reports LMCache's output.
RUN_TIMEOUT_S = 840


@dataclass
class Case:
    """One test of LMCache's as its JUnit report has it."""

    file: str
    name: str
    outcome: str  # passed, failed, error or skipped
    message: str
    properties: list[tuple[str, str]] = field(default_factory=list)

    def prop(self, key: str) -> list[str]:
        """The values recorded under ``key`` (the plugins' properties)."""
        return [value for name, value in self.properties if name == key]

    def __str__(self) -> str:
        return f"{self.file}::{self.name} {self.outcome.upper()}" + (
            f": {self.message}" if self.message else ""
        )


@dataclass
class Run:
    """LMCache's test run: its exit status, output and tests."""

    returncode: int
    output: str = field(repr=False)
    cases: list[Case] = field(repr=False)

    def of(self, file: str, prefix: str = "") -> list[Case]:
        """The tests of ``file`` whose name starts with ``prefix``."""
        stem = Path(file).stem
        return [c for c in self.cases if c.file == stem and c.name.startswith(prefix)]

    def scenarios(self, backend: str) -> dict[str, Case]:
        """LMCache's scenario runs on ``backend``, by scenario name."""
        runs = [c for c in self.of(TORCH_OPS, "test_1_scenario") if c.prop("backend") == [backend]]
        return {c.prop("scenario")[0]: c for c in runs}


def _case(testcase: ET.Element) -> Case:
    outcome, message = "passed", ""
    for tag in ("failure", "error", "skipped"):
        found = testcase.find(tag)
        if found is not None:
            outcome = "failed" if tag == "failure" else tag
            message = found.get("message", "")
    props = [(p.get("name", ""), p.get("value", "")) for p in testcase.iter("property")]
    module = testcase.get("classname", "").split(".")
    stem = next((part for part in module if part.startswith("test_")), "")
    return Case(stem, testcase.get("name", ""), outcome, message, props)


def _lmcache_tests(tmp: Path) -> Path:
    """A copy of LMCache's tests and pytest settings: run from the unpacked source distribution
    itself, its ``lmcache/`` folder would shadow the installed wheel (which has the compiled
    modules)."""
    source = lmcache_env.source_tree()
    shutil.copytree(source / "tests", tmp / "tests")
    shutil.copy(source / "pytest.ini", tmp)
    return tmp


def _summary(run: Run) -> str:
    """Every skip with its reason and every fallback per test, for messages and the log."""
    lines = [f"LMCache's tests: exit {run.returncode}, {len(run.cases)} tests"]
    skips = [c for c in run.cases if c.outcome == "skipped"]
    lines += [f"skipped: {len(skips)}", *(f"  {c}" for c in skips)]
    native = [name for name, c in run.scenarios(KVX_BACKEND).items() if not c.prop("kvx_fallback")]
    lines.append(f"scenarios run on kvx without reaching LMCache's torch ops: {', '.join(native)}")
    fallbacks = [c for c in run.cases if c.prop("kvx_fallback")]
    lines.append(f"tests reaching LMCache's torch ops through kvx: {len(fallbacks)}")
    lines += [f"  {c.file}::{c.name}: {'; '.join(c.prop('kvx_fallback'))}" for c in fallbacks]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Runs LMCache's two test files on kvx and reads their JUnit report."""
    work = _lmcache_tests(tmp_path_factory.mktemp("lmcache-tests"))
    junit = work / "junit.xml"
    plugins = [arg for name in PLUGINS for arg in ("-p", name)]
    cmd = lmcache_env.python_command(
        "pytest",
        TORCH_OPS,
        PARITY,
        *plugins,
        f"--junitxml={junit}",
        "-rs",
        "-p",
        "no:cacheprovider",
    )
    path = os.pathsep.join(filter(None, [str(PLUGINS_DIR), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, LMCACHE_DEVICE_BACKEND="kvx_cpu", PYTHONPATH=path)
    try:
        done = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"LMCache's tests ran over {RUN_TIMEOUT_S} s:\n{_tail(timeout.stdout)}")
    output = done.stdout + done.stderr
    cases = [_case(tc) for tc in ET.parse(junit).iter("testcase")] if junit.exists() else []
    result = Run(done.returncode, output, cases)
    print(_summary(result))
    return result


def _tail(output: str | bytes | None) -> str:
    """The end of a process's output (a timed-out run's may come as bytes)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text[-20000:]


def _failed(cases: Iterable[Case]) -> list[str]:
    """The tests of ``cases`` that did not pass (skips included), one line each."""
    return [str(c) for c in cases if c.outcome != "passed"]


def test_lmcache_tests_pass(run: Run) -> None:
    """LMCache's run ends well, and none of its tests fails (skips are listed, not failures)."""
    failed = _failed(c for c in run.cases if c.outcome != "skipped")
    assert run.returncode == 0 and run.cases and not failed, (
        f"{_summary(run)}\nfailed: {failed}\n--- output ---\n{_tail(run.output)}"
    )


def test_every_scenario_ran_on_kvx(run: Run) -> None:
    """Each scenario LMCache ran on its torch ops also ran, and passed, on kvx's ops."""
    lmcache, kvx = run.scenarios(LMCACHE_BACKEND), run.scenarios(KVX_BACKEND)
    assert lmcache, f"no scenario ran on LMCache's torch ops\n{_summary(run)}"
    assert sorted(kvx) == sorted(lmcache), f"scenarios not run on kvx\n{_summary(run)}"
    assert not _failed(kvx.values()), f"{_failed(kvx.values())}\n{_summary(run)}"
    ops = {name: case.prop("ops_under_test") for name, case in kvx.items()}
    assert all(found == [KVX_OPS] for found in ops.values()), f"ops under test: {ops}"


def test_every_scenario_compared_with_lmcache(run: Run) -> None:
    """Each scenario's compare saw both kvx's and LMCache's results, and they agreed."""
    compares = {c.name: c for c in run.of(TORCH_OPS, "test_2_compare")}
    assert len(compares) == len(run.scenarios(LMCACHE_BACKEND)) > 0, _summary(run)
    assert not _failed(compares.values()), f"{_failed(compares.values())}\n{_summary(run)}"
    partial = {
        name: c.prop("compared")
        for name, c in compares.items()
        if not {KVX_BACKEND, LMCACHE_BACKEND} <= set(c.prop("compared"))
    }
    assert not partial, f"compares missing kvx's or LMCache's results: {partial}"


def test_parity_checks_ran_on_kvx(run: Run) -> None:
    """LMCache's parity checks ran (none skipped) with kvx's ops in place of its CUDA ops."""
    parity = run.of(PARITY)
    signatures = run.of(PARITY, "test_function_signature_parity[")
    enums = run.of(PARITY, "test_enum_parity[")
    assert parity and signatures and enums, f"parity tests missing\n{_summary(run)}"
    assert not _failed(parity), f"{_failed(parity)}\n{_summary(run)}"
    (coverage,) = run.of(PARITY, "test_all_cuda_ops_callables_have_fallback")
    not_kvx = coverage.prop("not_kvx_op")
    assert not not_kvx, f"ops kvx's class does not define, left unchecked: {not_kvx}"
    checked = sorted(c.name.partition("[")[2].rstrip("]") for c in signatures)
    assert checked == sorted(coverage.prop("kvx_op")), "kvx's ops and those checked differ"
