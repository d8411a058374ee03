"""Builds libkvx with AddressSanitizer + UndefinedBehaviorSanitizer and runs the tests that
exercise the C library against that build, in a child pytest (KVX_LIBRARY selects the build;
libasan is preloaded because the Python interpreter itself is not instrumented)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Modules whose tests drive the C library; the child run covers whichever exist.
C_TEST_GLOBS = ("test_transfer_*.py", "test_codec*.py", "test_rope*.py", "test_staged_codec.py",
                "test_ascend_transfer.py", "test_cnrt_transfer.py", "fuzz/test_fuzz_*.py")

pytestmark = [
    pytest.mark.skipif(os.environ.get("KVX_SANITIZER_RUN") == "1", reason="already inside the sanitizer run"),
    pytest.mark.skipif(shutil.which("meson") is None or shutil.which("cc") is None, reason="needs meson and cc"),
]


def _runtime(name: str) -> str:
    path = subprocess.run(["cc", f"-print-file-name={name}"], check=True, capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"the compiler has no {name}")
    return path


def test_c_library_under_asan_and_ubsan(tmp_path):
    build = tmp_path / "asan"
    subprocess.run(["meson", "setup", str(build), str(REPO), "-Db_sanitize=address,undefined", "-Db_lundef=false",
                    "-Dbuildtype=debugoptimized"], check=True, capture_output=True)
    subprocess.run(["ninja", "-C", str(build)], check=True, capture_output=True)
    logs = tmp_path / "sanitizer"
    tests = sorted(str(p) for pattern in C_TEST_GLOBS for p in (REPO / "tests").glob(pattern))
    env = dict(
        os.environ,
        KVX_LIBRARY=str(build / "libkvx" / "libkvx.so"),
        KVX_SANITIZER_RUN="1",
        LD_PRELOAD=" ".join([_runtime("libasan.so"), _runtime("libubsan.so")]),
        # The interpreter and torch are not instrumented: leaks and their allocator quirks are not ours.
        # pytest captures stderr, so reports go to files (read back in _report).
        ASAN_OPTIONS=f"detect_leaks=0:alloc_dealloc_mismatch=0:detect_odr_violation=0:abort_on_error=1:log_path={logs}",
        UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={logs}",
    )
    # No -x: one run reports every failing test, not only the first.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            cwd=REPO, env=env, capture_output=True, text=True)
    reports = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("sanitizer.*")))
    assert not reports, reports[:6000]
    assert result.returncode == 0 and " passed" in result.stdout, (result.stdout + result.stderr)[-6000:]
    print(result.stdout.strip().splitlines()[-1])  # the child's summary, for `pytest -s`
