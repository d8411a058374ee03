"""The library builds for 64-bit ARM (the other CPU family LLM servers run on: Graviton, Kunpeng,
Grace), warning-free, and exports the same API as the host build. A compile check with a cross
compiler: nothing runs on ARM here (the x86 SIMD code compiles away there; the generic loops take
over)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from kvx import _native

REPO = Path(__file__).resolve().parent.parent
CROSS = "aarch64-linux-gnu-"

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


def _exported(nm: str, library: Path) -> set[str]:
    out = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.split()[1] == "T"}


@pytest.mark.skipif(shutil.which(f"{CROSS}gcc") is None,
                    reason="no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu)")
def test_aarch64_build_is_warning_free_and_exports_the_api(tmp_path):
    cross_file = tmp_path / "aarch64.ini"
    cross_file.write_text(CROSS_FILE)
    build = tmp_path / "aarch64"
    setup = subprocess.run(["meson", "setup", str(build), str(REPO), "--cross-file", str(cross_file),
                            "-Dpython_package=false", "--werror"], capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-4000:]
    compile_ = subprocess.run(["ninja", "-C", str(build)], capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout[-6000:]
    assert "warning:" not in compile_.stdout.lower(), compile_.stdout[-6000:]
    library = build / "libkvx" / "libkvx.so"
    machine = subprocess.run(["file", "-L", str(library)], capture_output=True, text=True).stdout
    assert "aarch64" in machine, machine
    assert _exported(f"{CROSS}nm", library) == _exported("nm", _native.library_path())
