"""Host execution's grid runner (libkvx/src/gpu/host/), on kernels whose right and wrong results
are known (tests/c/grid_runner_check.cpp): it runs every thread of every block once, keeps a
barrier's promise, shows a missing barrier by varying the threads' order, fails a barrier that
only some threads reach, refuses configurations CUDA refuses, and provides dynamic shared
memory. The GPU tests trust these properties when they run the kernels this way."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "libkvx" / "src" / "gpu" / "host"
CHECKS = (
    "every_thread_runs_once",
    "barrier_orders_threads",
    "missing_barrier_shows",
    "divergent_barrier_fails",
    "configuration_is_checked",
    "dynamic_shared_memory_works",
)
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def checker(tmp_path_factory) -> Path:
    if CXX is None:
        pytest.skip("no C++ compiler")
    program = tmp_path_factory.mktemp("runner") / "grid_runner_check"
    build = subprocess.run(
        [CXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-DKVX_GPU_HOST",
         f"-I{REPO / 'libkvx' / 'src' / 'gpu'}", f"-I{REPO / 'libkvx' / 'include'}",
         str(REPO / "tests" / "c" / "grid_runner_check.cpp"), str(HOST / "grid_runner.cpp"),
         str(HOST / "runtime.cpp"), "-o", str(program)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    return program


def _run(program: Path, check: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "KVX_GPU_HOST_SCHEDULE"}
    return subprocess.run(
        [str(program), check], capture_output=True, text=True, env=dict(environment, **env)
    )


@pytest.mark.parametrize("check", CHECKS)
def test_runner(checker, check):
    result = _run(checker, check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_fixed_order_can_hide_a_missing_barrier(checker):
    """Why the order varies: run last thread first, the racy kernel happens to be right."""
    result = _run(checker, "missing_barrier_shows", KVX_GPU_HOST_SCHEDULE="reverse")
    assert "0 of 6 launches wrong" in result.stdout, result.stdout
