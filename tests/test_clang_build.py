"""clang, the other compiler distributions and sanitizer users build with: the library builds
warning-free with it (-Wall -Wextra, --werror; the AVX-512 code uses target attributes whose
spelling differs between gcc and clang), exports the same API as the gcc build the rest of the
suite checks, and computes the same bits: tests/c/digests.c prints digests of RoPE, codec and
transfer outputs on fixed inputs for both builds, tests/c/crc32_check.c checks its CRC-32
against the definition, and the RoPE tests (test_rope.py and the conformance test's RoPE cases)
run against the clang build in a child pytest."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kvx import _native
from machine import c_program, exported_symbols, isa_environment, run_crc32_check

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        shutil.which("clang") is None, reason="clang is not installed (apt-get install clang)"
    ),
    pytest.mark.skipif(
        shutil.which("meson") is None or shutil.which("ninja") is None,
        reason="needs meson and ninja",
    ),
]


@pytest.fixture(scope="module")
def clang_build(tmp_path_factory) -> Path:
    """A --werror clang build of the library; the ninja output is checked for warnings too."""
    build = tmp_path_factory.mktemp("clang") / "build"
    env = dict(os.environ, CC="clang")
    setup = subprocess.run(
        ["meson", "setup", str(build), str(REPO), "-Dpython_package=false", "--werror"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-4000:]
    assert "clang" in (build / "meson-logs" / "meson-log.txt").read_text(), (
        "meson did not pick clang"
    )
    compile_ = subprocess.run(["ninja", "-C", str(build)], env=env, capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout[-6000:]
    assert "warning:" not in compile_.stdout.lower(), compile_.stdout[-6000:]
    return build / "libkvx"


def test_clang_build_is_warning_free_and_exports_the_api(clang_build):
    assert exported_symbols(clang_build / "libkvx.so") == exported_symbols(_native.library_path())


@pytest.mark.parametrize("isa", ["default", "baseline", "avx2"])
def test_clang_build_computes_the_same_bits_as_gcc(clang_build, tmp_path, isa):
    """Every kernel's digest, for the variant this CPU picks and for the lower ones it can be asked
    for (KVX_CPU_ISA; a variant the CPU lacks falls back to the best it has, on both sides)."""
    cc = shutil.which("cc") or "gcc"
    gcc_program = c_program("digests.c", cc, _native.library_path(), tmp_path / "digests_gcc")
    clang_program = c_program(
        "digests.c", cc, clang_build / "libkvx.so", tmp_path / "digests_clang"
    )
    env = isa_environment(None if isa == "default" else isa)
    expected = subprocess.run(
        [str(gcc_program)], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert len(expected.splitlines()) >= 30, expected
    got = subprocess.run([str(clang_program)], env=env, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    different = [
        f"{a}  !=  {b}"
        for a, b in zip(expected.splitlines(), got.stdout.splitlines(), strict=False)
        if a != b
    ]
    assert got.stdout == expected, "\n".join(different) or got.stdout


@pytest.mark.parametrize("isa", [None, "baseline"], ids=["default", "baseline"])
def test_clang_build_crc32_matches_its_definition(clang_build, tmp_path, isa):
    cc = shutil.which("cc") or "gcc"
    check = c_program("crc32_check.c", cc, clang_build / "libkvx.so", tmp_path / "crc32_check")
    variant = run_crc32_check([str(check)], isa)
    assert isa is None or variant == "baseline", variant


def test_rope_tests_pass_against_the_clang_build(clang_build):
    """The RoPE tests (against torch's float32 arithmetic, bit for bit; every CPU variant alike,
    through the conformance test) in a child pytest that loads the clang build."""
    env = dict(os.environ, KVX_LIBRARY=str(clang_build / "libkvx.so"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests" / "test_rope.py"),
            str(REPO / "tests" / "test_conformance.py") + "::test_rope",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and " passed" in result.stdout, (result.stdout + result.stderr)[
        -6000:
    ]
