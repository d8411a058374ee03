"""64-bit ARM (the other CPU family LLM servers run on: Kunpeng hosts of Ascend NPUs, Graviton,
Grace): the library cross-compiles warning-free, exports the same API as the host build, and,
run under qemu's user-mode emulation, computes the same bits as the host build on every kernel
(tests/c/digests.c prints digests of RoPE, codec and transfer outputs on fixed inputs). The host
build is the one the rest of the suite checks against golden vectors and float64 references, so
equal digests carry those checks over. The x86 SIMD code compiles away on ARM; the NEON token
loops of RoPE (rope_neon.c), the NEON lanes of the range coder (codec_range_coder_lanes_neon.c)
and, for everything else, the generic loops, vectorised by gcc for NEON, run instead. Both
variants there, neon and baseline, are run. The CRC-32 (the CRC32 instructions, or the tables
under KVX_CPU_ISA=baseline) is checked against its definition by tests/c/crc32_check.c."""

import shutil
import subprocess
from pathlib import Path

import pytest
from kvx import _native
from machine import c_program, exported_symbols, isa_environment, run_crc32_check

REPO = Path(__file__).resolve().parent.parent
CROSS = "aarch64-linux-gnu-"
SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's cross libc, for qemu's loader

CROSS_FILE = f"""
[binaries]
c = '{CROSS}gcc'
ar = '{CROSS}ar'
strip = '{CROSS}strip'
pkg-config = 'false'

[host_machine]
system = 'linux'
cpu_family = 'aarch64'
cpu = 'aarch64'
endian = 'little'
"""

pytestmark = pytest.mark.skipif(
    shutil.which(f"{CROSS}gcc") is None,
    reason="no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu)",
)


@pytest.fixture(scope="module")
def aarch64_build(tmp_path_factory) -> Path:
    """A --werror aarch64 build of the library; the ninja output is checked for warnings too."""
    tmp = tmp_path_factory.mktemp("aarch64")
    cross_file = tmp / "aarch64.ini"
    cross_file.write_text(CROSS_FILE)
    build = tmp / "build"
    setup = subprocess.run(
        [
            "meson",
            "setup",
            str(build),
            str(REPO),
            "--cross-file",
            str(cross_file),
            "-Dpython_package=false",
            "--werror",
        ],
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-4000:]
    compile_ = subprocess.run(["ninja", "-C", str(build)], capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout[-6000:]
    assert "warning:" not in compile_.stdout.lower(), compile_.stdout[-6000:]
    return build / "libkvx"


def test_aarch64_build_is_warning_free_and_exports_the_api(aarch64_build):
    library = aarch64_build / "libkvx.so"
    machine = subprocess.run(["file", "-L", str(library)], capture_output=True, text=True).stdout
    assert "aarch64" in machine, machine
    assert exported_symbols(library, f"{CROSS}nm") == exported_symbols(_native.library_path())


needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-aarch64") is None or not SYSROOT.is_dir(),
    reason="no qemu-aarch64 or aarch64 libc (apt-get install qemu-user gcc-aarch64-linux-gnu)",
)


@needs_qemu
def test_aarch64_computes_the_same_bits_as_the_host(aarch64_build, tmp_path):
    cc = shutil.which("cc") or "gcc"
    host = c_program("digests.c", cc, _native.library_path(), tmp_path / "digests_host")
    arm = c_program(
        "digests.c", f"{CROSS}gcc", aarch64_build / "libkvx.so", tmp_path / "digests_arm"
    )
    expected = subprocess.run([str(host)], capture_output=True, text=True, check=True).stdout
    assert len(expected.splitlines()) >= 30, expected
    # one thread and the default split the work differently: the bits must not depend on it
    assert (
        subprocess.run([str(host), "1"], capture_output=True, text=True, check=True).stdout
        == expected
    )
    # the NEON variant (the default there), then the baseline one: both give the host's bits
    for isa in ("neon", "baseline"):
        run = subprocess.run(
            ["qemu-aarch64", "-L", str(SYSROOT), str(arm), "2"],
            capture_output=True,
            text=True,
            timeout=600,
            env=isa_environment(None if isa == "neon" else isa),  # neon: the default there
        )
        assert run.returncode == 0, run.stderr
        assert f"rope={isa} " in run.stderr, run.stderr  # the variants meant ran
        assert f"range_coder={isa} " in run.stderr, run.stderr
        different = [
            f"{a}  !=  {b}"
            for a, b in zip(expected.splitlines(), run.stdout.splitlines(), strict=False)
            if a != b
        ]
        assert run.stdout == expected, f"{isa}: " + ("\n".join(different) or run.stdout)


@needs_qemu
@pytest.mark.parametrize(
    "isa,variant", [(None, "armv8-crc"), ("baseline", "baseline")], ids=["default", "baseline"]
)
def test_aarch64_crc32_matches_its_definition(aarch64_build, tmp_path, isa, variant):
    """qemu's CPU has the CRC32 instructions (HWCAP_CRC32), so the default is their variant."""
    check = c_program("crc32_check.c", f"{CROSS}gcc", aarch64_build / "libkvx.so", tmp_path / "c")
    assert run_crc32_check(["qemu-aarch64", "-L", str(SYSROOT), str(check)], isa, 600) == variant
