"""What several test files ask of this machine and its toolchain: the CPU's feature flags, the
functions a shared library exports and the dynamic entries it records, C programs compiled and
run, and the programs of tests/c/ (digests.c, crc32_check.c) built against a given library."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CC = shutil.which("cc") or shutil.which("gcc")  # None: the tests that compile C skip


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo names, e.g. "avx2", "avx512_bf16"; on ARM its
    "Features", e.g. "crc32"); empty if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_variants() -> list[str]:
    """The KVX_CPU_ISA variants this CPU can run, baseline first."""
    flags = cpu_flags()
    runs = ["baseline"]
    if "avx2" in flags:
        runs.append("avx2")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        runs.append("avx512")
        if "avx512_bf16" in flags:
            runs.append("avx512bf16")
    if platform.machine() in ("aarch64", "arm64"):  # NEON is part of 64-bit ARM
        runs.append("neon")
    return runs


# How the tests compile their C programs and helper libraries: C11, every warning an error, so a
# header or test source that a strict consumer's compiler would reject fails the test.
STRICT_C11 = ("-std=c11", "-Wall", "-Wextra", "-Werror")


def compile_and_run(source: str, tmp_path: Path, flags: list[str]) -> str:
    """Compiles the C program `source` with CC (STRICT_C11 and `flags`) in tmp_path, runs it and
    returns what it printed."""
    src = tmp_path / "prog.c"
    src.write_text(source)
    exe = tmp_path / "prog"
    subprocess.run([CC, *STRICT_C11, str(src), "-o", str(exe), *flags], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


def isa_environment(isa: str | None) -> dict[str, str]:
    """This process's environment with KVX_CPU_ISA=`isa`, or without KVX_CPU_ISA for None (every
    kernel's default choice), for a child process."""
    env = {k: v for k, v in os.environ.items() if k != "KVX_CPU_ISA"}
    if isa is not None:
        env["KVX_CPU_ISA"] = isa
    return env


def c_program(source: str, cc: str, library: Path, out: Path) -> Path:
    """tests/c/`source` built with `cc` against `library` by path (the wheel's libkvx.so.0 has no
    libkvx.so link for -lkvx), its folder as the rpath."""
    from kvx import get_include

    subprocess.run(
        [
            cc,
            *STRICT_C11,
            "-O1",
            f"-I{get_include()}",
            str(TESTS / "c" / source),
            "-o",
            str(out),
            str(library),
            f"-Wl,-rpath,{library.parent}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def run_crc32_check(command: list[str], isa: str | None = None, timeout: float = 300) -> str:
    """Runs a build of tests/c/crc32_check.c (``command``: the program, or qemu and it) under
    :func:`isa_environment`; returns the CRC-32 variant it ran, after checking that it passed."""
    run = subprocess.run(
        command, env=isa_environment(isa), capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
    return run.stderr.split("crc32=", 1)[1].split()[0]


def dynamic_entries(path: Path | str, tag: str) -> list[str]:
    """The values of one dynamic-section tag (SONAME, NEEDED) of an ELF file, as readelf shows
    them; skips the test where readelf is missing."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run(
        [readelf, "-d", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if f"({tag})" in line]


def exported_symbols(library: Path | str, nm: str = "nm", kinds: str = "T") -> set[str]:
    """Names `library` defines in its dynamic symbol table with an nm type letter in `kinds`
    ("T": functions; "TW": weak ones too), symbol versions stripped."""
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()[1] in kinds}
