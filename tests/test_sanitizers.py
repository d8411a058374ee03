"""Builds libkvx with AddressSanitizer + UndefinedBehaviorSanitizer and runs the tests that
exercise the C library against that build, in a child pytest (KVX_LIBRARY selects the build;
the sanitizer runtime is preloaded because the Python interpreter itself is not instrumented).

Twice: with gcc, and with clang, whose UBSan checks more (pointer arithmetic on NULL, for one:
"applying zero offset to null pointer", which gcc's does not report).

Both builds include the GPU backend in host execution (-Dgpu_host=enabled), and the child runs
the GPU tests on it (KVX_GPU_TARGET=host, tests/gpu_target.py): every GPU kernel runs on the
same cases as on a GPU, compared with the CPU backend, with its memory accesses checked."""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Modules whose tests drive the C library; the child run covers whichever exist.
C_TEST_GLOBS = (
    "test_transfer_*.py",
    "test_codec*.py",
    "test_rope*.py",
    "test_staged_codec.py",
    "test_ascend_transfer.py",
    "test_cnrt_transfer.py",
    "test_copy.py",
    "test_host_memory.py",
    "test_marks.py",
    "test_conformance.py",
    "test_gpu_transfer.py",
    "test_gpu_rope.py",
    "test_gpu_codec.py",
    "fuzz/test_fuzz_*.py",
)
# ASan says this once per process when the grid runner first switches fibers; the runner tells it
# about every switch (__sanitizer_start_switch_fiber), which is what the warning asks for.
FIBER_WARNING = "WARNING: ASan doesn't fully support makecontext/swapcontext"
CXX = {"cc": "c++", "clang": "clang++"}

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("KVX_SANITIZER_RUN") == "1", reason="already inside the sanitizer run"
    ),
    pytest.mark.skipif(
        shutil.which("meson") is None or shutil.which("ninja") is None,
        reason="needs meson and ninja",
    ),
]


def _runtime(cc: str, name: str) -> str:
    path = subprocess.run(
        [cc, f"-print-file-name={name}"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"{cc} has no {name}")
    return path


def _build(build: Path, cc: str, *options: str) -> Path:
    env = dict(os.environ, CC=cc, CXX=CXX[cc])
    setup = subprocess.run(
        [
            "meson",
            "setup",
            str(build),
            str(REPO),
            "-Db_sanitize=address,undefined",
            "-Db_lundef=false",
            "-Dbuildtype=debugoptimized",
            "-Dgpu_host=enabled",
            *options,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-4000:]
    compile_ = subprocess.run(["ninja", "-C", str(build)], env=env, capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout[-6000:]
    return build / "libkvx" / "libkvx.so"


def _run_c_tests(library: Path, preload: list[str], logs: Path, **extra_env: str) -> None:
    """The C-library tests against `library` in a child pytest; every sanitizer report fails."""
    tests = sorted(str(p) for pattern in C_TEST_GLOBS for p in (REPO / "tests").glob(pattern))
    env = dict(
        os.environ,
        KVX_LIBRARY=str(library),
        KVX_SANITIZER_RUN="1",
        LD_PRELOAD=" ".join(preload),
        KVX_GPU_TARGET="host",
        # The interpreter and torch are not instrumented: leaks and their allocator quirks are not
        # ours. pytest captures stderr, so reports go to files (read back below).
        ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0:detect_odr_violation=0:"
        f"abort_on_error=1:log_path={logs}",
        UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={logs}",
        **extra_env,
    )
    # No -x: one run reports every failing test, not only the first.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    reports = "".join(
        line
        for p in sorted(logs.parent.glob(logs.name + ".*"))
        for line in p.read_text(errors="replace").splitlines(keepends=True)
        if FIBER_WARNING not in line
    )
    assert not reports, reports[:6000]
    assert result.returncode == 0 and " passed" in result.stdout, (result.stdout + result.stderr)[
        -6000:
    ]
    print(result.stdout.strip().splitlines()[-1])  # the child's summary, for `pytest -s`


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs cc")
def test_c_library_under_asan_and_ubsan(tmp_path):
    library = _build(tmp_path / "asan", "cc")
    _run_c_tests(
        library,
        [_runtime("cc", "libasan.so"), _runtime("cc", "libubsan.so")],
        tmp_path / "sanitizer",
    )


@pytest.mark.skipif(
    shutil.which("clang") is None, reason="clang is not installed (apt-get install clang)"
)
def test_c_library_under_clang_asan_and_ubsan(tmp_path):
    """clang links sanitizer runtimes into executables only; -shared-libsan makes the library
    depend on the shared one (ASan with UBSan inside), which C programs the tests build against
    the library then link with too. LD_LIBRARY_PATH lets the linker and the loader find it."""
    runtime = _runtime("clang", f"libclang_rt.asan-{platform.machine()}.so")
    library = _build(
        tmp_path / "clang-asan",
        "clang",
        "-Dc_link_args=-shared-libsan",
        "-Dcpp_link_args=-shared-libsan",
    )
    search_path = os.pathsep.join(
        filter(None, [os.path.dirname(runtime), os.environ.get("LD_LIBRARY_PATH")])
    )
    _run_c_tests(library, [runtime], tmp_path / "sanitizer", LD_LIBRARY_PATH=search_path)
